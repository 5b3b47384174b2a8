"""Egress: upstream connections through an HTTP proxy (CONNECT tunnels for https, absolute-form for
http), HTTPS_PROXY / HTTP_PROXY / NO_PROXY, a CA file of the operator's own, a client certificate
for an upstream that requires one, and extra headers per provider (anthropic_extra_headers,
openai_extra_headers, openai_org / openai_project), through `engine serve` as users run it.

Everything is on loopback: the proxy is written here, the TLS upstreams answer with certificates
of a CA this module makes with the openssl command."""
from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading

import pytest

from engine import config
from engine.server.httpclient import ConnectFailed, HttpClient, proxy_for
from engine.server.upstream import Upstream


# ------------------------------------------------------------------ TLS material


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA; a server certificate for localhost/127.0.0.1 and a client certificate, both signed
    by it; and a second CA that signed neither."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    d = tmp_path_factory.mktemp("pki")

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=test {ca}",
            "-keyout", f"{ca}-key.pem", "-out", f"{ca}.pem")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name if name == 'client' else 'localhost'}",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return d


def server_context(pki, require_client_cert=False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki / "server.pem", pki / "server-key.pem")
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki / "ca.pem")
    return ctx


# ------------------------------------------------------------------ a loopback upstream and proxy


class Upstream200:
    """Answers every request with 200 and a small JSON body; keeps the request heads."""

    def __init__(self, ssl_context=None):
        self.ssl = ssl_context
        self.heads: list[bytes] = []
        self.peer_certs: list = []

    async def __aenter__(self):
        async def serve(reader, writer):
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    self.heads.append(head)
                    ssl_obj = writer.get_extra_info("ssl_object")
                    self.peer_certs.append(ssl_obj.getpeercert() if ssl_obj else None)
                    n = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            n = int(line.split(b":")[1])
                    await reader.readexactly(n)
                    body = b'{"ok":true}'
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()


class ConnectProxy:
    """An HTTP proxy: CONNECT host:port tunnels bytes both ways; an absolute-form request is
    forwarded to its origin as is. Records what it was asked (first line and Proxy-Authorization)."""

    def __init__(self, refuse: bytes | None = None):
        self.asked: list[tuple[str, str | None]] = []
        self.refuse = refuse

    async def __aenter__(self):
        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except ConnectionError:
                pass
            finally:
                w.close()

        async def serve(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            auth = next((l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("proxy-authorization:")), None)
            self.asked.append((lines[0], auth))
            if self.refuse:
                writer.write(self.refuse)
                writer.close()
                return
            method, target, _ = lines[0].split(" ")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                ur, uw = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = b""
            else:  # absolute-form: http://host:port/path
                rest = target.split("://", 1)[1]
                hostport, _, path = rest.partition("/")
                host, port = hostport.rsplit(":", 1)
                ur, uw = await asyncio.open_connection(host, int(port))
                first = f"{method} /{path} HTTP/1.1\r\n".encode() + head.split(b"\r\n", 1)[1]
            uw.write(first)
            await asyncio.gather(pipe(reader, uw), pipe(ur, writer))

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()


async def call(client: HttpClient, headers=None):
    async with client.request("POST", "/v1/messages", b"{}", headers or {"content-type": "application/json"}) as r:
        return r.status, await r.read()


# ------------------------------------------------------------------ the HTTP client


async def test_https_upstream_through_a_connect_tunnel_with_an_own_ca(pki):
    async with Upstream200(server_context(pki)) as up, ConnectProxy() as proxy:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        client = HttpClient(f"https://localhost:{up.port}", ssl_context=ctx,
                            proxy=f"http://gw:p%40ss@127.0.0.1:{proxy.port}")
        try:
            assert await call(client) == (200, b'{"ok":true}')
            assert await call(client) == (200, b'{"ok":true}')  # the tunnel is kept alive and reused
        finally:
            await client.close()
        assert proxy.asked == [(f"CONNECT localhost:{up.port} HTTP/1.1", "Basic Z3c6cEBzcw==")]  # gw:p@ss
        assert len(up.heads) == 2 and up.heads[0].startswith(b"POST /v1/messages HTTP/1.1\r\n")
        assert b"Proxy-Authorization" not in up.heads[0]  # the credentials stay with the proxy


async def test_the_tunnel_still_verifies_the_upstream_certificate(pki):
    async with Upstream200(server_context(pki)) as up, ConnectProxy() as proxy:
        ctx = ssl.create_default_context(cafile=str(pki / "other-ca.pem"))
        client = HttpClient(f"https://localhost:{up.port}", ssl_context=ctx, proxy=proxy.url)
        try:
            with pytest.raises(ConnectFailed, match="through the proxy .*CERTIFICATE_VERIFY_FAILED"):
                await call(client)
        finally:
            await client.close()


async def test_a_proxy_refusing_connect_is_a_connect_failure():
    async with ConnectProxy(refuse=b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n") as proxy:
        client = HttpClient("https://upstream.invalid", proxy=proxy.url)
        try:
            with pytest.raises(ConnectFailed, match="refused CONNECT upstream.invalid:443: HTTP/1.1 407"):
                await call(client)
        finally:
            await client.close()


async def test_http_upstream_through_a_proxy_in_absolute_form():
    async with Upstream200() as up, ConnectProxy() as proxy:
        client = HttpClient(f"http://127.0.0.1:{up.port}/base", proxy=f"http://u:pw@127.0.0.1:{proxy.port}")
        try:
            assert await call(client) == (200, b'{"ok":true}')
        finally:
            await client.close()
        assert proxy.asked[0][0] == f"POST http://127.0.0.1:{up.port}/base/v1/messages HTTP/1.1"
        assert proxy.asked[0][1] == "Basic dTpwdw=="


async def test_client_certificate_for_an_upstream_that_requires_one(pki):
    async with Upstream200(server_context(pki, require_client_cert=True)) as up:
        without = HttpClient(f"https://localhost:{up.port}",
                             ssl_context=ssl.create_default_context(cafile=str(pki / "ca.pem")))
        try:
            with pytest.raises(Exception):
                await call(without)
        finally:
            await without.close()
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        ctx.load_cert_chain(pki / "client.pem", pki / "client-key.pem")
        client = HttpClient(f"https://localhost:{up.port}", ssl_context=ctx)
        try:
            assert await call(client) == (200, b'{"ok":true}')
        finally:
            await client.close()
        assert up.peer_certs[-1]["subject"] == ((("commonName", "client"),),)


# ------------------------------------------------------------------ which proxy, from where


def test_proxy_for_reads_the_environment(monkeypatch):
    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
    assert proxy_for("https://api.anthropic.com") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain:8080")
    assert proxy_for("https://api.anthropic.com") == "http://corp:3128"
    assert proxy_for("http://llm.internal:8000/v1") == "http://plain:8080"
    monkeypatch.setenv("NO_PROXY", "localhost,.internal, 10.0.0.5")
    assert proxy_for("http://llm.internal:8000/v1") is None
    assert proxy_for("https://10.0.0.5/v1") is None
    assert proxy_for("https://api.openai.com/v1") == "http://corp:3128"
    # the configured proxy replaces the environment's; NO_PROXY still applies; "none" goes direct
    assert proxy_for("https://api.openai.com/v1", "http://other:1") == "http://other:1"
    assert proxy_for("https://x.internal/v1", "http://other:1") is None
    assert proxy_for("https://api.openai.com/v1", "none") is None


def test_egress_config_keys(tmp_path, pki):
    ini = tmp_path / "gw.ini"
    ini.write_text(
        "openai_org=org-123\n"
        "openai_project=proj_9\n"
        "openai_extra_headers=OpenAI-Organization: org-override; X-Team: infra\n"
        "anthropic_extra_headers=anthropic-beta: context-1m-2025-08-07,files-api-2025-04-14\n"
        f"upstream_proxy=http://proxy.corp:3128\n"
        f"upstream_ca_file={pki / 'ca.pem'}\n"
        f"upstream_client_cert={pki / 'client.pem'}\n"
        f"upstream_client_key={pki / 'client-key.pem'}\n")
    cfg = config.load({"config": str(ini)}, env={})
    assert cfg.anthropic_extra_headers == (("anthropic-beta", "context-1m-2025-08-07,files-api-2025-04-14"),)
    assert cfg.upstream_proxy == "http://proxy.corp:3128"
    openai = Upstream("openai", "https://api.openai.com/v1", {"content-type": "application/json"})
    openai.configure_egress(cfg)
    assert openai.headers == {"content-type": "application/json", "OpenAI-Project": "proj_9",
                              "OpenAI-Organization": "org-override", "X-Team": "infra"}
    assert openai.proxy() == "http://proxy.corp:3128"
    assert openai.ssl_context is not None and openai.ssl_context.verify_mode == ssl.CERT_REQUIRED
    anth = Upstream("anthropic", "https://api.anthropic.com", {})
    anth.configure_egress(cfg)
    assert anth.headers == {"anthropic-beta": "context-1m-2025-08-07,files-api-2025-04-14"}

    for key, bad, why in [("openai_extra_headers", "no colon here", "Name: value"),
                          ("anthropic_extra_headers", "Content-Length: 5", "set by the gateway"),
                          ("upstream_proxy", "socks5://h:1", "http://")]:
        with pytest.raises(config.ConfigError, match=key) as info:
            config.load({}, env={f"TOKLIGENCE_{key.upper()}": bad})
        assert why in str(info.value)
    broken = config.load({}, env={"TOKLIGENCE_UPSTREAM_CA_FILE": str(tmp_path / "absent.pem")})
    with pytest.raises(ValueError, match="upstream_ca_file"):
        Upstream("openai", "https://x", {}).configure_egress(broken)


# ------------------------------------------------------------------ engine serve, as users run it


def test_gateway_reaches_a_tls_upstream_through_the_proxy_with_its_headers(make_gateway, pki, tmp_path):
    """The gateway process: HTTPS_PROXY from its environment, the operator's CA file and client
    certificate, an upstream that requires it, and the extra headers on the translated request."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state = {}

    async def main():
        state["stop"] = stop = asyncio.Event()
        async with Upstream200(server_context(pki, require_client_cert=True)) as up, ConnectProxy() as proxy:
            state.update(up=up, proxy=proxy)
            started.set()
            await stop.wait()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def run():
        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    up, proxy = state["up"], state["proxy"]
    try:
        gw = make_gateway({
            "HTTPS_PROXY": proxy.url, "NO_PROXY": "",
            "TOKLIGENCE_OPENAI_BASE_URL": f"https://localhost:{up.port}/v1",
            "TOKLIGENCE_OPENAI_API_KEY": "sk-test-upstream-key",
            "TOKLIGENCE_OPENAI_ORG": "org-abc",
            "TOKLIGENCE_OPENAI_EXTRA_HEADERS": "OpenAI-Project: proj_x; X-Team: infra",
            "TOKLIGENCE_UPSTREAM_CA_FILE": str(pki / "ca.pem"),
            "TOKLIGENCE_UPSTREAM_CLIENT_CERT": str(pki / "client.pem"),
            "TOKLIGENCE_UPSTREAM_CLIENT_KEY": str(pki / "client-key.pem"),
            "TOKLIGENCE_ROUTES": "gpt*=>openai:passthrough",
        })
        import http.client
        import json
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        c.request("POST", "/v1/chat/completions", json.dumps({"model": "gpt-4o", "messages": [
            {"role": "user", "content": "hi"}]}), {"content-type": "application/json"})
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b'{"ok":true}')
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(10)
    assert proxy.asked and proxy.asked[0][0] == f"CONNECT localhost:{up.port} HTTP/1.1"
    head = up.heads[-1].decode().lower()
    assert "openai-organization: org-abc\r\n" in head
    assert "openai-project: proj_x\r\n" in head and "x-team: infra\r\n" in head
    assert "authorization: bearer sk-test-upstream-key\r\n" in head
    assert up.peer_certs[-1]["subject"] == ((("commonName", "client"),),)


def test_proxy_credentials_and_extra_headers_are_not_shown():
    cfg = config.load({}, env={"TOKLIGENCE_UPSTREAM_PROXY": "http://u:proxy-s3cret@p:3128",
                               "TOKLIGENCE_OPENAI_EXTRA_HEADERS": "X-Internal-Token: tok-s3cret"})
    assert "proxy-s3cret" not in repr(cfg) and "tok-s3cret" not in repr(cfg)
    with pytest.raises(config.ConfigError) as info:
        config.load({}, env={"TOKLIGENCE_UPSTREAM_PROXY": "socks5://u:proxy-s3cret@p:1"})
    assert "proxy-s3cret" not in str(info.value)


def test_https_upstreams_of_one_app_share_one_tls_context_and_http_ones_load_none(pki):
    cfg = config.load({}, env={})
    contexts: dict = {}
    a = Upstream("anthropic", "https://api.anthropic.com", {})
    o = Upstream("openai", "https://api.openai.com/v1", {})
    plain = Upstream("openai", "http://127.0.0.1:9/v1", {})
    for up in (a, o, plain):
        up.configure_egress(cfg, contexts)
    assert isinstance(a.ssl_context, ssl.SSLContext) and o.ssl_context is a.ssl_context
    assert plain.ssl_context is None and len(contexts) == 1
    pinned = config.load({"set": [f"upstream_ca_file={pki / 'ca.pem'}"]}, env={})
    b = Upstream("anthropic", "https://api.anthropic.com", {})
    b.configure_egress(pinned, contexts)
    assert b.ssl_context is not a.ssl_context and len(contexts) == 2
