"""Operations: gateway keys, limits, request ids, logs, metrics, retries, timeouts, faults.

Each fault test asserts what the client sees, that the server keeps serving, and that nothing
leaks (open streams, upstream connections and tasks back to their resting values)."""
from __future__ import annotations

import hashlib
import json
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import date

import anthropic
import openai
import pytest

from support.fake_upstream import (anthropic_message, anthropic_text_stream, error_reply, fixture, json_reply,
                                   sse_reply, stall_reply)

MODEL = "claude-sonnet-4-5"
MSG = [{"role": "user", "content": "hi"}]


def oai(gw, key="k", **kw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=15, **kw)


def post(gw, path, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(gw.url + path, data=data, method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def metrics(gw) -> dict:
    text = urllib.request.urlopen(gw.url + "/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def settled(gw, timeout=5.0):
    """Waits until no stream is open and no upstream connection is in use; returns the task count."""
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(gw)
        if m["engine_open_streams"] == 0 and m["engine_upstream_connections"] == 0:
            return m["engine_asyncio_tasks"]
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled: {m['engine_open_streams']} streams, "
                                 f"{m['engine_upstream_connections']} connections")
        time.sleep(0.05)


# ---------------------------------------------------------------- access

def test_keys_are_required_when_auth_is_on(make_gateway, fake_anthropic, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("sha256:" + hashlib.sha256(b"file-key").hexdigest() + "\n")
    gw = make_gateway({"TOKLIGENCE_AUTH_DISABLED": "false", "TOKLIGENCE_API_KEYS": "team-key",
                       "TOKLIGENCE_API_KEYS_FILE": str(keys)})
    with pytest.raises(openai.AuthenticationError) as e:
        oai(gw, "wrong").chat.completions.create(model=MODEL, messages=MSG)
    assert e.value.body["code"] == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError) as e2:
        anthropic.Anthropic(base_url=gw.url, api_key="wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=10, messages=MSG)
    assert e2.value.body["type"] == "error" and e2.value.body["error"]["type"] == "authentication_error"
    assert fake_anthropic.requests == []
    fake_anthropic.set_default(json_reply(anthropic_message("ok")))
    assert oai(gw, "team-key").chat.completions.create(model=MODEL, messages=MSG).choices[0].message.content == "ok"
    assert oai(gw, "file-key").chat.completions.create(model=MODEL, messages=MSG).choices[0].message.content == "ok"
    # x-api-key, as Anthropic clients send it; and the client's key never goes upstream
    assert anthropic.Anthropic(base_url=gw.url, api_key="team-key", max_retries=0).messages.create(
        model=MODEL, max_tokens=10, messages=MSG).content[0].text
    assert {r.headers["x-api-key"] for r in fake_anthropic.requests} == {"sk-ant-upstream-secret"}
    assert urllib.request.urlopen(gw.url + "/health").status == 200
    assert "auth" in gw.output().lower()


def test_dev_default_lets_everything_through_and_says_so(gateway):
    assert re.search(r"auth.*disabled", gateway.output(), re.I)


def test_upstream_keys_never_leak(make_gateway, fake_anthropic):
    gw = make_gateway({"TOKLIGENCE_LOG_LEVEL": "debug"})
    fake_anthropic.enqueue(error_reply(401), error_reply(403), error_reply(500))
    for exc in (openai.AuthenticationError, openai.PermissionDeniedError, openai.InternalServerError):
        with pytest.raises(exc) as e:
            oai(gw).chat.completions.create(model=MODEL, messages=MSG)
        assert "sk-ant-upstream-secret" not in json.dumps(e.value.body)
    text = urllib.request.urlopen(gw.url + "/metrics").read().decode()
    assert "sk-ant" not in text and "sk-ant-upstream-secret" not in gw.output()


def test_a_client_key_may_be_forwarded_instead(make_gateway, fake_anthropic):
    gw = make_gateway({"TOKLIGENCE_FORWARD_CLIENT_KEYS": "true"})
    fake_anthropic.set_default(json_reply(anthropic_message("ok")))
    oai(gw, "sk-ant-client-own").chat.completions.create(model=MODEL, messages=MSG)
    oai(gw, "x", default_headers={"x-upstream-api-key": "sk-ant-other"}).chat.completions.create(
        model=MODEL, messages=MSG)
    assert [r.headers["x-api-key"] for r in fake_anthropic.requests] == ["sk-ant-client-own", "sk-ant-other"]


# ---------------------------------------------------------------- limits

def test_body_size_depth_and_message_limits(make_gateway, fake_anthropic):
    gw = make_gateway({"TOKLIGENCE_MAX_BODY_BYTES": "20000", "TOKLIGENCE_MAX_JSON_DEPTH": "20",
                       "TOKLIGENCE_MAX_MESSAGES": "3"})
    status, _, body = post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG, "pad": "x" * 30000})
    assert status == 413 and "error" in json.loads(body)
    status, _, body = post(gw, "/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": MSG, "pad": "x" * 30000})
    assert status == 413 and json.loads(body)["type"] == "error"
    deep = {"model": MODEL, "messages": MSG, "metadata": json.loads("[" * 30 + "]" * 30)}
    status, _, body = post(gw, "/v1/chat/completions", deep)
    assert status == 400 and "nested deeper than 20" in json.loads(body)["error"]["message"]
    status, _, body = post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG * 4})
    assert status == 400 and json.loads(body)["error"]["param"] == "messages"
    status, _, body = post(gw, "/v1/chat/completions", b"[" * 15000)
    assert status == 400 and "nested deeper" in json.loads(body)["error"]["message"]
    assert fake_anthropic.requests == []


# ---------------------------------------------------------------- request ids, logs, metrics

def test_request_id_is_returned_sent_upstream_and_logged(make_gateway, fake_anthropic):
    gw = make_gateway()
    fake_anthropic.set_default(json_reply(anthropic_message("ok")))
    status, headers, _ = post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG},
                              {"x-request-id": "req-from-client-1"})
    assert status == 200 and headers["x-request-id"] == "req-from-client-1"
    assert fake_anthropic.last.headers["x-request-id"] == "req-from-client-1"
    status, headers, _ = post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG})
    minted = headers["x-request-id"]
    assert minted.startswith("req_") and fake_anthropic.last.headers["x-request-id"] == minted
    line = gw.wait_for_output(r"request_id=req-from-client-1")
    for field in ("method=POST", "path=/v1/chat/completions", "model=claude-sonnet-4-5", "status=200",
                  "upstream_status=200", "latency_ms=", "tokens_in=", "tokens_out=", "provider=anthropic"):
        assert field in gw.output(), field
    assert line


def test_the_upstreams_own_request_id_comes_back_and_is_logged(make_gateway, fake_anthropic):
    # Anthropic answers with its id in `request-id`: the client gets it as x-upstream-request-id
    # beside the gateway's x-request-id, on answers, streams and upstream errors alike
    gw = make_gateway()
    fake_anthropic.set_default(json_reply(anthropic_message("ok")))
    status, headers, _ = post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG},
                              {"x-request-id": "rq-ids-1"})
    assert status == 200 and headers["x-request-id"] == "rq-ids-1"
    assert headers["x-upstream-request-id"] == "req_fake000001"
    gw.wait_for_output(r"request_id=rq-ids-1 upstream_request_id=req_fake000001")
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["a", "b"])))
    status, headers, body = post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG, "stream": True})
    assert status == 200 and headers["x-upstream-request-id"] == "req_fake000002" and b"[DONE]" in body
    fake_anthropic.enqueue(error_reply(400))
    status, headers, body = post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG})
    assert status == 400 and headers["x-upstream-request-id"] == "req_fake000003"
    assert headers["x-request-id"].startswith("req_") and headers["x-request-id"] != "req_fake000003"
    gw.wait_for_output(r"upstream_request_id=req_fake000003")


def test_an_upstream_without_request_ids_gives_none(make_gateway, fake_anthropic):
    fake_anthropic.auto_request_id = False
    gw = make_gateway()
    fake_anthropic.set_default(json_reply(anthropic_message("ok")))
    status, headers, _ = post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG},
                              {"x-request-id": "rq-none"})
    assert status == 200 and "x-upstream-request-id" not in {k.lower() for k in headers}
    line = gw.wait_for_output(r"request_id=rq-none")
    assert "upstream_request_id" not in gw.output()
    assert line


def test_stream_log_has_time_to_first_byte_and_tokens(make_gateway, fake_anthropic):
    gw = make_gateway()
    fake_anthropic.enqueue(sse_reply(fixture("anthropic-text-cache-usage-ping.sse")))
    list(oai(gw).chat.completions.create(model=MODEL, messages=MSG, stream=True))
    gw.wait_for_output(r"ttfb_ms=\d")
    assert re.search(r"tokens_out=\d+", gw.output())


def test_log_file_rotates_daily_and_json_format(make_gateway, fake_anthropic, tmp_path):
    log = tmp_path / "logs" / "gatewayd.log"
    gw = make_gateway({"TOKLIGENCE_LOG_FILE_DAEMON": str(log), "TOKLIGENCE_LOG_FORMAT": "json"})
    fake_anthropic.set_default(json_reply(anthropic_message("ok")))
    post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG})
    path = tmp_path / "logs" / f"gatewayd-{date.today():%Y-%m-%d}.log"
    deadline = time.monotonic() + 5
    while not (path.exists() and "status" in path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    access = [x for x in lines if x.get("path") == "/v1/chat/completions"]
    assert access and access[0]["status"] == 200 and access[0]["level"] == "info"


def test_metrics_count_requests_tokens_and_latency(make_gateway, fake_anthropic):
    gw = make_gateway()
    fake_anthropic.set_default(json_reply(anthropic_message("ok")))
    for _ in range(3):
        post(gw, "/v1/chat/completions", {"model": MODEL, "messages": MSG})
    post(gw, "/v1/chat/completions", {"model": "nope", "messages": MSG})
    m = metrics(gw)
    assert m['engine_requests_total{model="claude*",route="/v1/chat/completions",status="200"}'] == 3
    assert m['engine_requests_total{model="unrouted",route="/v1/chat/completions",status="404"}'] == 1
    assert m['engine_tokens_total{direction="in",model="claude*"}'] > 0
    assert m['engine_request_seconds_count{route="/v1/chat/completions"}'] == 4


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": MODEL, "messages": MSG}),
    ("/v1/responses", {"model": MODEL, "input": "hi"}),
])
def test_input_tokens_count_cache_reads_and_writes(make_gateway, fake_anthropic, path, body):
    """What a non-stream answer reports as its input (usage.prompt_tokens / input_tokens) is what
    the metrics count: Anthropic's uncached, cache-read and cache-write tokens together."""
    gw = make_gateway()
    usage = {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
             "output_tokens": 3}
    fake_anthropic.set_default(json_reply(anthropic_message("ok", usage=usage)))
    status, _, raw = post(gw, path, body)
    assert status == 200, raw
    answer = json.loads(raw)
    reported = answer["usage"].get("prompt_tokens", answer["usage"].get("input_tokens"))
    assert reported == 125
    m = metrics(gw)
    assert m['engine_tokens_total{direction="in",model="claude*"}'] == 125
    assert m['engine_tokens_total{direction="out",model="claude*"}'] == 3
    # without the cache counts: the uncached tokens alone
    fake_anthropic.set_default(json_reply(anthropic_message("ok", usage={"input_tokens": 7, "output_tokens": 1})))
    status, _, raw = post(gw, path, body)
    assert status == 200, raw
    assert metrics(gw)['engine_tokens_total{direction="in",model="claude*"}'] == 125 + 7


def test_unknown_paths_and_methods_get_the_full_treatment(make_gateway):
    # no route (404) or no method (405): the request id, the API's error shape, the Allow header,
    # the access line and the metrics, as every routed request gets them
    gw = make_gateway()
    req = urllib.request.Request(gw.url + "/v1/chat/completions", method="GET", headers={"x-request-id": "rq-405"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405 and e.value.headers["Allow"] == "POST"
    assert e.value.headers["x-request-id"] == "rq-405"
    assert json.loads(e.value.read())["error"]["message"] == "Method Not Allowed"
    status, headers, body = post(gw, "/v1/messages/nope", {})
    assert status == 404 and headers["x-request-id"].startswith("req_")
    assert json.loads(body)["type"] == "error" and json.loads(body)["error"]["type"] == "not_found_error"
    gw.wait_for_output("request_id=rq-405")
    assert "path=/v1/chat/completions route=unmatched" in gw.output()
    m = metrics(gw)
    assert m['engine_requests_total{model="-",route="unmatched",status="405"}'] == 1
    assert m['engine_requests_total{model="-",route="unmatched",status="404"}'] == 1


# ---------------------------------------------------------------- faults

@pytest.fixture
def faulty(make_gateway):
    return make_gateway({"TOKLIGENCE_UPSTREAM_MAX_RETRIES": "2", "TOKLIGENCE_UPSTREAM_IDLE_TIMEOUT": "0.6",
                         "TOKLIGENCE_UPSTREAM_FIRST_BYTE_TIMEOUT": "1", "TOKLIGENCE_KEEPALIVE_SECONDS": "0.2"})


def test_429_with_retry_after_then_success(faulty, fake_anthropic):
    fake_anthropic.enqueue(error_reply(429, headers={"retry-after": "0.3"}), json_reply(anthropic_message("ok")))
    t = time.monotonic()
    r = oai(faulty).chat.completions.create(model=MODEL, messages=MSG)
    assert r.choices[0].message.content == "ok" and time.monotonic() - t >= 0.3
    assert len(fake_anthropic.requests) == 2
    assert metrics(faulty)['engine_upstream_retries_total{provider="anthropic"}'] == 1


@pytest.mark.parametrize("status,exc,seen", [(529, openai.InternalServerError, 503),
                                             (500, openai.InternalServerError, 502)])
def test_persistent_5xx_after_retries(faulty, fake_anthropic, status, exc, seen):
    fake_anthropic.set_default(error_reply(status))
    with pytest.raises(exc) as e:
        oai(faulty).chat.completions.create(model=MODEL, messages=MSG)
    assert e.value.status_code == seen and len(fake_anthropic.requests) == 3
    fake_anthropic.set_default(json_reply(anthropic_message("back")))
    assert oai(faulty).chat.completions.create(model=MODEL, messages=MSG).choices[0].message.content == "back"
    settled(faulty)


def test_connection_refused(make_gateway):
    gw = make_gateway({"TOKLIGENCE_ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "TOKLIGENCE_UPSTREAM_MAX_RETRIES": "1"})
    with pytest.raises(openai.APIStatusError) as e:
        oai(gw).chat.completions.create(model=MODEL, messages=MSG)
    assert e.value.status_code == 502 and e.value.body["code"] == "upstream_unreachable"
    settled(gw)


@pytest.mark.parametrize("answer", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"cut\": "])
def test_a_malformed_upstream_answer_is_a_502(make_gateway, answer):
    """Whatever the upstream writes, the caller gets an error its SDK understands."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(answer)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        gw = make_gateway({"TOKLIGENCE_ANTHROPIC_BASE_URL": f"http://127.0.0.1:{srv.getsockname()[1]}",
                           "TOKLIGENCE_UPSTREAM_MAX_RETRIES": "0"})
        with pytest.raises(openai.APIStatusError) as e:
            oai(gw).chat.completions.create(model=MODEL, messages=MSG)
        assert e.value.status_code == 502 and e.value.body["type"] == "server_error"
        assert urllib.request.urlopen(gw.url + "/health").status == 200
        assert "Traceback" not in gw.output()
    finally:
        stop.set()
        t.join(2)
        srv.close()


def test_first_byte_timeout_is_a_504(faulty, fake_anthropic):
    fake_anthropic.set_default(stall_reply(3, before_headers=True))
    with pytest.raises(openai.APIStatusError) as e:
        oai(faulty).chat.completions.create(model=MODEL, messages=MSG)
    assert e.value.status_code == 504


@pytest.mark.parametrize("reply,match", [
    (lambda: sse_reply(anthropic_text_stream(["a", "b"]).split("event: message_stop")[0]),
     "before message_stop"),
    (lambda: sse_reply(fixture("anthropic-error-mid-stream.sse")), "Overloaded"),
    (lambda: sse_reply(anthropic_text_stream(["one ", "two ", "three"]), drop_after=700), "mid-stream"),
    (lambda: stall_reply(5), "idle timeout"),
])
def test_stream_faults_end_with_an_error_the_sdk_raises(faulty, fake_anthropic, reply, match):
    resting = settled(faulty)
    fake_anthropic.enqueue(reply())
    with pytest.raises(openai.APIError, match=match):
        for _ in oai(faulty).chat.completions.create(model=MODEL, messages=MSG, stream=True):
            pass
    assert settled(faulty) <= resting
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["fine"])))
    chunks = list(oai(faulty).chat.completions.create(model=MODEL, messages=MSG, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "fine"


def test_keepalive_while_the_upstream_is_silent(faulty, fake_anthropic):
    events = anthropic_text_stream(["slow"])
    fake_anthropic.enqueue(sse_reply(events, chunk_size="event", delay=0.45))
    req = urllib.request.Request(faulty.url + "/v1/chat/completions", method="POST",
                                 data=json.dumps({"model": MODEL, "messages": MSG, "stream": True}).encode(),
                                 headers={"content-type": "application/json"})
    body = urllib.request.urlopen(req, timeout=15).read().decode()
    assert ": keep-alive" in body and body.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("mode", ["translated", "passthrough"])
def test_client_disconnect_cancels_the_upstream_at_once(faulty, fake_anthropic, mode):
    resting = settled(faulty)
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream([f"w{i} " for i in range(200)]),
                                     chunk_size="event", delay=0.05))
    if mode == "translated":
        stream = oai(faulty).chat.completions.create(model=MODEL, messages=MSG, stream=True)
    else:
        stream = anthropic.Anthropic(base_url=faulty.url, api_key="k", max_retries=0).messages.create(
            model=MODEL, max_tokens=100, messages=MSG, stream=True)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    rec = fake_anthropic.requests[0]
    assert rec.wait_done(3) and rec.client_disconnected
    assert settled(faulty) <= resting
    assert urllib.request.urlopen(faulty.url + "/health").status == 200
    # the client left: logged as 499, not as a gateway error with a traceback
    deadline = time.monotonic() + 3
    while "status=499" not in faulty.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    out = faulty.output()
    assert "status=499" in out and f"mode={mode if mode == 'passthrough' else 'translate'}" in out
    assert "unhandled error" not in out and "Traceback" not in out


def test_sigterm_lets_open_streams_finish(make_gateway, fake_anthropic):
    gw = make_gateway({"TOKLIGENCE_SHUTDOWN_GRACE_SECONDS": "10"})
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream([f"w{i} " for i in range(10)]),
                                     chunk_size="event", delay=0.1))
    got = {}

    def consume():
        chunks = list(oai(gw).chat.completions.create(model=MODEL, messages=MSG, stream=True))
        got["text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    t = threading.Thread(target=consume)
    t.start()
    fake_anthropic.wait_for_requests(1)
    time.sleep(0.2)
    gw.send_signal(signal.SIGTERM)
    t.join(15)
    assert got.get("text") == "".join(f"w{i} " for i in range(10))
    deadline = time.monotonic() + 10
    while gw.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not gw.is_running()


async def test_a_client_gone_mid_write_is_a_499_not_a_gateway_error(fake_anthropic, fake_openai, tmp_path, caplog):
    """aiohttp raises ClientConnectionResetError when the answer is written to a client that
    has just closed its connection (seen at the end of every wrk run): app.guarded lets
    aiohttp drop the connection, and logs a 499 instead of an ERROR with a traceback."""
    import logging

    import aiohttp
    from aiohttp.test_utils import TestServer

    from engine import config as config_mod
    from engine.catalog import Catalog
    from engine.server.app import create_app
    from engine.server.context import add_route
    from conftest import gateway_env

    app = create_app(config_mod.load({}, env=gateway_env(fake_anthropic, fake_openai, tmp_path)), Catalog.load())

    async def gone(request):
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")

    add_route(app, "POST", "/v1/test/gone", gone)  # a plain path: found before the catch-all
    server = TestServer(app)
    await server.start_server()
    try:
        caplog.set_level(logging.INFO)
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.post(server.make_url("/v1/test/gone"), data=b"{}") as r:
                    await r.read()
    finally:
        await server.close()
    lines = [r.getMessage() for r in caplog.records]
    assert any("path=/v1/test/gone" in m and "status=499" in m for m in lines), lines
    assert not any(r.levelno >= logging.ERROR for r in caplog.records), lines


def test_route_decisions_are_remembered_per_model_within_a_bound(fake_anthropic, fake_openai, tmp_path,
                                                                  monkeypatch):
    """resolve() decides once per model name; a refusal is raised, and its facts noted, on every
    request; past the bound the memo starts over instead of growing."""
    from aiohttp.test_utils import make_mocked_request

    from engine import config as config_mod
    from engine.catalog import Catalog
    from engine.server import app as app_mod
    from engine.server import context
    from engine.server.api_errors import ApiError
    from conftest import gateway_env

    app = app_mod.create_app(config_mod.load({}, env=gateway_env(fake_anthropic, fake_openai, tmp_path)),
                             Catalog.load())
    req = make_mocked_request("POST", "/v1/chat/completions", app=app)
    first = context.resolve(app, "claude-x", "openai", req)
    assert first == ("anthropic", "claude-x", "translate") == context.resolve(app, "claude-x", "openai")
    assert req["log"]["mode"] == "translate" and req["log"]["provider"] == "anthropic"
    for _ in range(2):
        other = make_mocked_request("POST", "/v1/chat/completions", app=app)
        with pytest.raises(ApiError) as e:
            context.resolve(app, "nothing-routes-this", "openai", other)
        assert e.value.status == 404 and e.value.code == "model_not_found"
        assert other["log"]["model_label"] == "unrouted" and "mode" not in other["log"]
    monkeypatch.setattr(context, "_RESOLVED_MAX", 3)
    for i in range(10):
        context.resolve(app, f"claude-{i}", "openai")
        assert len(app[context.RESOLVED]) <= 3
    assert context.pair_for(app, "chat-to-messages", "claude-x") is app[context.PAIRS]["chat-to-messages"]


async def test_the_access_line_and_metrics_come_after_the_answer_is_written(fake_anthropic, fake_openai,
                                                                             tmp_path, monkeypatch):
    """ops.record runs once the answer is on its way: the client does not wait for the log line
    and the metrics. Its figures are the handler's own (status, time up to the answer)."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from engine import config as config_mod
    from engine.catalog import Catalog
    from engine.server import ops
    from engine.server.app import create_app
    from conftest import gateway_env

    seen = []
    real = ops.record

    def record(request, status, elapsed):
        seen.append((request.path, status, request._payload_writer.output_size, elapsed))
        real(request, status, elapsed)

    monkeypatch.setattr(ops, "record", record)
    app = create_app(config_mod.load({}, env=gateway_env(fake_anthropic, fake_openai, tmp_path)), Catalog.load())
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(server.make_url("/health")) as r:
                assert r.status == 200
            async with s.post(server.make_url("/v1/chat/completions"), json={"model": "claude-x"}) as r:
                assert r.status == 400
            async with s.get(server.make_url("/metrics")) as r:
                text = await r.text()
    finally:
        await server.close()
    assert [(p, st) for p, st, _, _ in seen] == [("/health", 200), ("/v1/chat/completions", 400), ("/metrics", 200)]
    assert all(written > 0 and 0 <= elapsed < 5 for _, _, written, elapsed in seen), seen
    # the scrape sees the requests before it
    assert 'status="400"' in text and "/v1/chat/completions" in text
