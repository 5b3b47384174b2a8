"""The upstream HTTP/1.1 client (engine/server/httpclient.py) against scripted servers on loopback.

Each server answers with exact bytes, so framing (Content-Length, chunked, close), interim heads,
compression, keep-alive reuse and failures are tested as they reach the client on the wire. The
parser is also fed every split of a response, so no read boundary can confuse it."""
from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from pathlib import Path

import aiohttp
import pytest

from engine.server import httpclient
from engine.server.httpclient import HttpClient, InvalidResponse, KEEPALIVE_SECONDS, _Conn


class Script:
    """A loopback server: for each request it receives (head + Content-Length body), the next
    reply in `replies` (bytes, or a callable(transport) for odd behaviour)."""

    def __init__(self, replies, ssl_context=None):
        self.ssl = ssl_context
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self):
        script = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport):
                script.connections += 1
                self.t = transport
                self.buf = b""

            def data_received(self, data):
                self.buf += data
                while b"\r\n\r\n" in self.buf:
                    head, _, rest = self.buf.partition(b"\r\n\r\n")
                    n = 0
                    for line in head.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            n = int(v)
                    if len(rest) < n:
                        return
                    script.requests.append(head + b"\r\n\r\n" + rest[:n])
                    self.buf = rest[n:]
                    reply = script.replies.pop(0)
                    if callable(reply):
                        reply(self.t)
                    else:
                        self.t.write(reply)

        self.server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", 0, ssl=self.ssl)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()


def ok(body: bytes, *headers: str) -> bytes:
    extra = "".join(h + "\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
    for p in parts:
        out += f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


async def fetch(client, path="/v1/messages", data=b"{}", headers=None, decompress=True):
    async with client.request("POST", path, data, headers, decompress) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_request_bytes_and_keep_alive_reuse():
    async with Script([ok(b'{"a":1}', "X-Up: one"), ok(b'{"b":2}')]) as s:
        client = HttpClient(s.url + "/base/")
        st, headers, body = await fetch(client, "/v1/messages?beta=true", b'{"x":1}', {"x-api-key": "k"})
        assert (st, body, headers.get("x-up"), headers["X-UP"]) == (200, b'{"a":1}', "one", "one")
        st, headers, body = await fetch(client)
        assert (st, body, list(headers.items())) == (200, b'{"b":2}', [("Content-Length", "7")])
        assert s.connections == 1 and client.in_use == 0
        first = s.requests[0].decode()
        assert first.startswith("POST /base/v1/messages?beta=true HTTP/1.1\r\n")
        lines = first.split("\r\n")
        assert f"Host: {s.url[7:]}" in lines and "x-api-key: k" in lines and "Content-Length: 7" in lines
        assert "Accept-Encoding: gzip, deflate" in lines and first.endswith('\r\n\r\n{"x":1}')
        await client.close()


async def test_no_accept_encoding_of_its_own_when_passing_through():
    async with Script([ok(b"x"), ok(b"y")]) as s:
        client = HttpClient(s.url)
        await fetch(client, decompress=False)
        await fetch(client, headers={"Accept-Encoding": "br"}, decompress=True)
        assert b"accept-encoding" not in s.requests[0].lower()
        assert s.requests[1].lower().count(b"accept-encoding") == 1 and b"Accept-Encoding: br" in s.requests[1]
        await client.close()


async def test_chunked_stream_arrives_piece_by_piece():
    events = [b"event: a\ndata: {}\n\n", b"event: b\ndata: {\"x\":1}\n\n"]

    def slow(t):
        raw = chunked(*events, trailer=b"X-Trailer: 1\r\n")
        cut = raw.index(b"\r\n", raw.index(b"data: {}")) + 2  # after the first chunk
        t.write(raw[:cut])
        asyncio.get_running_loop().call_later(0.05, t.write, raw[cut:])

    async with Script([slow, ok(b"next")]) as s:
        client = HttpClient(s.url)
        async with client.post("/s", b"{}") as resp:
            assert resp.content_length is None and not resp.content.is_eof()
            got = [c async for c in resp.content.iter_any()]
        assert b"".join(got) == b"".join(events) and len(got) >= 2
        assert (await fetch(client))[2] == b"next" and s.connections == 1
        await client.close()


async def test_body_until_close_and_connection_close_are_not_reused():
    async with Script([b"HTTP/1.1 200 OK\r\n\r\nall of it" , ok(b"b", "Connection: close"), ok(b"c")]) as s:
        client = HttpClient(s.url)

        async def until_close():
            async with client.post("/", b"") as resp:
                return await resp.read()

        task = asyncio.create_task(until_close())
        await asyncio.sleep(0.05)
        assert not task.done()  # no length: the body ends only when the server closes
        for t in [c.transport for c in client.live]:
            t.close()  # stands in for the server closing after its body
        assert await task == b"all of it" and not client.live
        await client.close()

    async with Script([lambda t: (t.write(b"HTTP/1.1 200 OK\r\n\r\nall of it"), t.close()),
                       ok(b"b", "Connection: close"), ok(b"c")]) as s:
        client = HttpClient(s.url)
        assert (await fetch(client))[2] == b"all of it"
        assert (await fetch(client))[2] == b"b"
        assert (await fetch(client))[2] == b"c"
        assert s.connections == 3
        await client.close()


async def test_gzip_and_deflate_are_decoded_when_asked():
    text = b'{"content":"' + b"hello " * 500 + b'"}'
    zipped = gzip.compress(text)
    async with Script([ok(zipped, "Content-Encoding: gzip"),
                       ok(zlib.compress(text), "Content-Encoding: deflate"),
                       ok(zipped, "Content-Encoding: gzip"),
                       ok(gzip.compress(text)[:-9], "Content-Encoding: gzip"),
                       ok(b"plain, not gzip", "Content-Encoding: gzip")]) as s:
        client = HttpClient(s.url)
        assert (await fetch(client))[2] == text
        assert (await fetch(client))[2] == text
        st, headers, body = await fetch(client, decompress=False)
        assert body == zipped and headers["content-encoding"] == "gzip"
        for _ in range(2):
            with pytest.raises(aiohttp.ClientPayloadError):
                await fetch(client)
        await client.close()


async def test_interim_head_and_bodiless_answers():
    async with Script([b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after"),
                       b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", ok(b"")]) as s:
        client = HttpClient(s.url)
        assert (await fetch(client))[::2] == (200, b"after")
        st, h, body = await fetch(client)
        assert (st, h.get("x-a"), body) == (204, "1", b"")
        assert (await fetch(client))[::2] == (200, b"")
        assert s.connections == 1
        await client.close()


@pytest.mark.parametrize("reply", [b"HTTP/2 200 OK\r\n\r\n", b"garbage\r\n\r\n",
                                   b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                                   b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"])
async def test_malformed_heads_are_client_errors(reply):
    async with Script([reply, ok(b"fine")]) as s:
        client = HttpClient(s.url)
        with pytest.raises(InvalidResponse):
            await fetch(client)
        assert (await fetch(client))[2] == b"fine"  # the bad connection was dropped, not reused
        assert s.connections == 2
        await client.close()


@pytest.mark.parametrize("cut", ["length", "chunked", "chunk-size"])
async def test_connection_lost_mid_body_is_a_payload_error(cut):
    raw = {"length": ok(b"0123456789")[:-4], "chunked": chunked(b"abcdef")[:-12],
           "chunk-size": chunked(b"abc").replace(b"3;ext=1", b"zz")}[cut]
    async with Script([lambda t: (t.write(raw), t.close())]) as s:
        client = HttpClient(s.url)
        with pytest.raises(aiohttp.ClientPayloadError):
            await fetch(client)
        await client.close()


async def test_iterating_a_body_hands_out_what_arrived_before_the_failure_or_the_end():
    cut = chunked(b"first", b"second")[:-5]  # the last chunk arrives, the end never does

    def reply(t):
        t.write(cut)
        asyncio.get_running_loop().call_later(0.05, t.close)

    async with Script([reply, chunked(b"a", b"b")]) as s:
        client = HttpClient(s.url)
        got = []
        async with client.post("/", b"") as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in resp.content:
                    got.append(chunk)
        assert b"".join(got) == b"firstsecond"
        async with client.post("/", b"") as resp:
            assert b"".join([c async for c in resp.content]) == b"ab"
            with pytest.raises(StopAsyncIteration):
                await resp.content.__anext__()
        await client.close()


async def test_stale_idle_connection_is_replaced_once():
    # the server drops the pooled connection as the second request arrives, answering nothing
    async with Script([ok(b"one"), lambda t: t.close(), ok(b"two"), lambda t: t.close()]) as s:
        client = HttpClient(s.url)
        assert (await fetch(client))[2] == b"one"
        assert (await fetch(client))[2] == b"two" and s.connections == 2 and len(s.requests) == 3
        client.idle.clear()  # a new connection that closes unanswered is not retried
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await fetch(client)
        assert len(s.requests) == 4
        await client.close()


async def test_connections_idle_past_the_keepalive_are_not_reused(monkeypatch):
    async with Script([ok(b"1"), ok(b"2")]) as s:
        client = HttpClient(s.url)
        await fetch(client)
        for c in client.idle:
            c.idle_since -= KEEPALIVE_SECONDS + 1
        await fetch(client)
        assert s.connections == 2
        await client.close()


async def test_a_shorter_keep_alive_timeout_from_the_server_is_honoured():
    async with Script([ok(b"1", "Keep-Alive: timeout=2"), ok(b"2", "Keep-Alive: timeout=2"),
                       ok(b"3", "Keep-Alive: timeout=2")]) as s:
        client = HttpClient(s.url)
        await fetch(client)
        await fetch(client)  # at once: reused
        assert s.connections == 1 and client.idle[0].idle_limit == 1.0
        client.idle[0].idle_since -= 1.5  # idle past the server's 2 s, less a margin
        await fetch(client)
        assert s.connections == 2
        await client.close()


async def test_refused_connection_and_header_injection():
    client = HttpClient("http://127.0.0.1:9", connect_timeout=5)
    with pytest.raises(aiohttp.ClientConnectionError, match="Cannot connect to host 127.0.0.1:9"):
        await fetch(client)
    with pytest.raises(ValueError, match="line break"):
        await fetch(client, headers={"x-api-key": "k\r\nX-Evil: 1"})
    with pytest.raises(ValueError):
        HttpClient("ftp://example.invalid")


def test_header_lines_are_checked_once_kept_in_bounds_and_never_kept_when_refused(monkeypatch):
    monkeypatch.setattr(httpclient, "_LINES", {})
    client = HttpClient("http://127.0.0.1:9")
    want = (b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\nx-api-key: k\r\nAccept-Encoding: identity\r\n"
            b"Content-Length: 2\r\n\r\n")
    headers = {"x-api-key": "k", "Accept-Encoding": "identity"}
    assert client._head("POST", "/v1/x", 2, headers, True) == want
    assert ("Accept-Encoding", "identity") in httpclient._LINES
    assert not any(k.lower() in ("x-api-key", "authorization") for k, _ in httpclient._LINES)  # keys: not kept
    # from the memo: the same head, the caller's Accept-Encoding still taking the place of ours
    assert client._head("POST", "/v1/x", 2, headers, True) == want
    assert client._head("GET", "/", 0, {"x-api-key": "k", "Authorization": "Bearer t"}, True) == (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9\r\nx-api-key: k\r\nAuthorization: Bearer t\r\n"
        b"Accept-Encoding: gzip, deflate\r\n\r\n")
    assert not any(k.lower() in ("x-api-key", "authorization") for k, _ in httpclient._LINES)
    for _ in range(2):  # refused each time: a refused line is not kept
        with pytest.raises(ValueError, match="line break"):
            client._head("POST", "/", 1, {"x-api-key": "k\r\nX-Evil: 1"}, True)
    with pytest.raises(ValueError, match="colon"):
        client._head("POST", "/", 1, {"x-a:b": "v"}, True)
    for i in range(3 * httpclient._LINES_MAX):  # a request id per request: the memo starts over when full
        head = client._head("GET", "/", 0, {"x-request-id": f"req_{i}"}, False)
        assert head.endswith(f"x-request-id: req_{i}\r\n\r\n".encode())
        assert len(httpclient._LINES) <= httpclient._LINES_MAX


async def test_release_before_the_end_and_cancel_before_the_head_drop_the_connection():
    never = Script([chunked(b"x" * 10)[:-5], lambda t: None, ok(b"ok")])
    async with never as s:
        client = HttpClient(s.url)
        async with client.post("/", b"") as resp:
            assert await resp.content.readany() == b"x" * 10
        assert client.in_use == 0 and not client.idle  # left midway: closed
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await fetch(client)
        assert not client.idle and not client.live
        assert (await fetch(client))[2] == b"ok" and s.connections == 3
        await client.close()


def _last_event_then(end):
    """A stream whose last event comes at once and whose end (the chunked terminator) comes as
    `end(transport, rest)` sends it."""
    def reply(t):
        raw = chunked(b"event: a\ndata: {}\n\n", b"event: stop\ndata: {}\n\n")
        cut = raw.index(b"0\r\n\r\n")
        t.write(raw[:cut])
        end(t, raw[cut:])
    return reply


async def _read_to_stop(resp) -> bytes:
    got = b""
    async for chunk in resp.content.iter_any():
        got += chunk
        if b"event: stop" in got:
            return got
    raise AssertionError("the stream ended before its last event")


async def test_a_drained_stream_whose_end_comes_late_keeps_its_connection():
    late = _last_event_then(lambda t, rest: asyncio.get_running_loop().call_later(0.3, t.write, rest))
    async with Script([late, ok(b"next")]) as s:
        client = HttpClient(s.url)
        async with client.post("/", b"") as resp:
            await _read_to_stop(resp)
            resp.drain()
        assert client.in_use == 1 and not client.idle  # the end is still on its way
        await asyncio.sleep(0.6)
        assert client.in_use == 0 and len(client.idle) == 1
        assert (await fetch(client))[2] == b"next" and s.connections == 1
        await client.close()


@pytest.mark.parametrize("end", ["never", "too much"])
async def test_a_drained_stream_whose_end_does_not_come_is_closed(end):
    if end == "never":
        reply = _last_event_then(lambda t, rest: None)
    else:  # more body after the last event, past the limit, in a later read
        reply = _last_event_then(lambda t, rest: asyncio.get_running_loop().call_later(
            0.05, t.write, b"4000\r\n" + b"z" * 0x4000 + b"\r\n"))
    async with Script([reply, ok(b"next")]) as s:
        client = HttpClient(s.url)
        async with client.post("/", b"") as resp:
            await _read_to_stop(resp)
            resp.drain(seconds=0.1 if end == "never" else 5, limit=1024)
        await asyncio.sleep(0.3)
        assert not client.live and not client.idle
        assert (await fetch(client))[2] == b"next" and s.connections == 2
        await client.close()


async def test_draining_an_answer_that_has_ended_changes_nothing_even_twice():
    async with Script([ok(b"whole"), ok(b"next")]) as s:
        client = HttpClient(s.url)
        async with client.post("/", b"") as resp:
            assert await resp.read() == b"whole"
            resp.drain()
            resp.drain()
        assert len(client.idle) == 1 and (await fetch(client))[2] == b"next" and s.connections == 1
        await client.close()


async def test_head_timeout_covers_the_wait_and_drops_the_connection():
    async with Script([lambda t: None, ok(b"later")]) as s:
        client = HttpClient(s.url)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await client.post("/", b"{}").open(timeout=0.2)
        assert 0.15 < loop.time() - t0 < 2 and not client.live
        resp = await client.post("/", b"{}").open(timeout=5)  # answered in time: the timer is cancelled
        assert await resp.read() == b"later"
        await asyncio.sleep(0.3)
        assert client.idle and s.connections == 2
        await client.close()


async def test_head_deadlines_of_concurrent_calls_share_one_timer_and_each_is_kept():
    """Calls in flight at once, with different deadlines: each times out at its own deadline,
    whichever came first, and the one answered in time is not timed out after its answer."""
    held = []
    async with Script([held.append, held.append, ok(b"fast"), held.append]) as s:
        client = HttpClient(s.url)
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def call(timeout):
            try:
                resp = await client.post("/", b"{}").open(timeout=timeout)
            except TimeoutError:
                return "timeout", loop.time() - t0
            return await resp.read(), loop.time() - t0

        slow = asyncio.ensure_future(call(0.9))       # the timer is set for 0.9 s
        await asyncio.sleep(0.05)
        quick = asyncio.ensure_future(call(0.25))     # an earlier deadline moves the timer
        await asyncio.sleep(0.05)
        answered = asyncio.ensure_future(call(0.5))   # answered at once
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(call(1.2))       # the timer is set again after each firing
        (q, tq), (a, _), (w, tw), (l, tl) = await asyncio.gather(quick, answered, slow, late)
        # upper bounds: each before the next deadline (a busy CI machine may run late, not early)
        assert q == "timeout" and 0.25 <= tq < 0.85
        assert a == b"fast"
        assert w == "timeout" and 0.85 <= tw < 1.3
        assert l == "timeout" and 1.3 <= tl < 2.5
        assert not client.deadlines.due and client.deadlines.timer is None
        assert len(held) == 3 and not client.live  # every timed-out connection dropped
        await client.close()


async def test_slow_reader_pauses_the_connection():
    big = b"y" * (3 * 1024 * 1024)
    async with Script([ok(big)]) as s:
        client = HttpClient(s.url)
        async with client.post("/", b"") as resp:
            await asyncio.sleep(0.2)  # the server keeps writing; the client stops reading
            conn = resp._conn
            assert conn.paused and resp.content._size < len(big)
            assert await resp.read() == big
        await client.close()


class _Transport:
    def __init__(self):
        self.written = []
        self.closed = False

    def write(self, data):
        self.written.append(data)

    def writelines(self, parts):
        self.written.extend(parts)

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def plain_chunks(*parts: bytes, sizes=None) -> bytes:
    """Chunks as servers write them (lowercase hex, no extension), or with the size lines given."""
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i, p in enumerate(parts):
        size = sizes[i] if sizes and sizes[i] else f"{len(p):x}".encode()
        out += size + b"\r\n" + p + b"\r\n"
    return out + b"0\r\n\r\n"


EVENTS = [b"event: ping\ndata: {}\n\n", b"data: " + b"x" * 40 + b"\n\n", b"data: a\r\nb\r\n\r\n",
          b"data: " + b"y" * 36 + b"\n\n", b"data: z\n\n", b"\r\n"]

SPLIT_CASES = {
    # data holding CRLF, an uppercase or zero-padded size and an extension, split anywhere
    "sse chunks": (plain_chunks(*EVENTS), b"".join(EVENTS)),
    "sse chunks, odd sizes": (plain_chunks(*EVENTS, sizes=[None, None, None, b"2C", b"0009", b"2;x=1"]),
                              b"".join(EVENTS)),
    "chunked+trailer": (chunked(b"first", b"second chunk", trailer=b"A: b\r\n"),
                        b"firstsecond chunk"),
    "length": (ok(b"0123456789abcdef"), b"0123456789abcdef"),
    "interim": (b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + ok(b"body"), b"body"),
    "gzip": (ok(gzip.compress(b"zipped " * 20), "Content-Encoding: gzip"), b"zipped " * 20),
}


@pytest.mark.parametrize("name", list(SPLIT_CASES))
async def test_every_split_of_a_response_parses_the_same(name):
    raw, want = SPLIT_CASES[name]
    client = HttpClient("http://127.0.0.1:1")
    client.loop = asyncio.get_running_loop()
    for cut in range(1, len(raw)):
        for pieces in ([raw[:cut], raw[cut:]], [raw[i:i + cut] for i in range(0, len(raw), cut)]):
            conn = _Conn(client)
            conn.connection_made(_Transport())
            task = asyncio.create_task(conn.send("POST", b"head", b"", True, None))
            await asyncio.sleep(0)
            for p in pieces:
                conn.data_received(p)
            resp = await task
            assert await resp.read() == want, (cut, pieces)
            assert client.idle[-1] is conn and not conn.transport.closed
            client.idle.clear()
            client.live.clear()


TLS = Path(__file__).parent / "support" / "tls"


async def test_https_upstream_is_verified():
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(TLS / "localhost-cert.pem", TLS / "localhost-key.pem")
    async with Script([ok(b"over tls")], ssl_context=server_ctx) as s:
        port = s.url.rsplit(":", 1)[1]
        trusting = HttpClient(f"https://localhost:{port}/v1",
                              ssl_context=ssl.create_default_context(cafile=str(TLS / "localhost-cert.pem")))
        assert (await fetch(trusting, "/messages"))[2] == b"over tls"
        assert s.requests[0].startswith(f"POST /v1/messages HTTP/1.1\r\nHost: localhost:{port}\r\n".encode())
        await trusting.close()
        # the system's CAs do not know this certificate: refused before anything is sent
        with pytest.raises(aiohttp.ClientConnectionError, match="certificate"):
            await fetch(HttpClient(f"https://localhost:{port}"))
        assert len(s.requests) == 1


def _fed(client, method="POST"):
    conn = _Conn(client)
    conn.connection_made(_Transport())
    task = asyncio.create_task(conn.send(method, b"head", b"", True, None))
    return conn, task


async def test_a_head_answer_ends_at_its_head_whatever_length_it_announces():
    client = HttpClient("http://127.0.0.1:1")
    client.loop = asyncio.get_running_loop()
    conn, task = _fed(client, "HEAD")
    await asyncio.sleep(0)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    resp = await task
    assert (resp.status, resp.content_length, await resp.read()) == (200, None, b"")  # no body follows
    assert client.idle == [conn] and not conn.transport.closed
    # the next answer on the same connection parses from its own first byte
    task = asyncio.create_task(conn.send("POST", b"head", b"", True, None))
    await asyncio.sleep(0)
    conn.data_received(ok(b"next"))
    assert await (await task).read() == b"next"


async def test_bytes_after_the_answer_drop_the_connection():
    client = HttpClient("http://127.0.0.1:1")
    client.loop = asyncio.get_running_loop()
    conn, task = _fed(client)
    await asyncio.sleep(0)
    conn.data_received(ok(b"one") + ok(b"two"))
    assert await (await task).read() == b"one"
    assert conn.transport.closed and conn not in client.idle


async def test_a_head_that_never_ends_is_refused_past_64_kib_while_reading():
    client = HttpClient("http://127.0.0.1:1")
    client.loop = asyncio.get_running_loop()
    conn, task = _fed(client)
    await asyncio.sleep(0)
    conn.data_received(b"HTTP/1.1 200 OK\r\nX-Pad: ")
    fed = 0
    while not conn.transport.closed:
        conn.data_received(b"a" * 1024)
        fed += 1024
        assert fed <= 65 * 1024
    with pytest.raises(InvalidResponse, match="64 KiB"):
        await task


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
], ids=["length-and-chunked", "two-lengths", "bad-chunk-size"])
async def test_ambiguous_framing_is_refused(reply):
    """A body whose end two readers could place differently (request smuggling's raw material)."""
    client = HttpClient("http://127.0.0.1:1")
    client.loop = asyncio.get_running_loop()
    conn, task = _fed(client)
    await asyncio.sleep(0)
    conn.data_received(reply)
    try:
        resp = await task
    except InvalidResponse:
        pass
    else:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert conn.transport.closed and conn not in client.idle


def test_headers_decoded_when_first_read_are_those_decoded_at_once():
    """Headers.of_raw (the client's, decoded on first use) answers get, [], in, items and repr as
    Headers of the decoded pairs: the first of repeated names, the case kept, any byte kept."""
    from engine.server.httpresponse import Headers
    raw = [b"Content-Type", b"application/json", b"X-Caf\xc3\xa9", b"\xff\xfe  ", b"set-cookie", b"a=1",
           b"Set-Cookie", b"b=2", b"X-Empty", b""]
    pairs = [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
             for n, v in zip(raw[::2], raw[1::2])]
    eager = Headers(pairs)
    for read in (lambda h: h.get("SET-COOKIE"), lambda h: h["x-café"], lambda h: "x-empty" in h,
                 lambda h: 3 in h, lambda h: h.get("absent", "-"), lambda h: list(h.items()), repr):
        assert read(Headers.of_raw(list(raw))) == read(eager)
    assert eager.get("set-cookie") == "a=1" and eager["x-café"] == "\udcff\udcfe  "
    assert list(Headers.of_raw([]).items()) == [] and Headers.of_raw([]).get("a") is None


@pytest.mark.parametrize("names", [
    ["Content-Length", "Connection"], ["connection", "CONTENT-LENGTH", "Keep-Alive", "content-length"],
    ["X-Connection", "Connection-X", "content-lengthy", "Content-Length"],
    ["Transfer-Encoding", "Content-Encoding", "content-encoding"],
])
def test_framing_headers_are_read_as_headers_get_reads_them(names):
    """_header, which finds a framing header without decoding the head, gives what Headers.get
    gives, for names in any case, repeated, or holding another as a part."""
    from engine.server.httpclient import _header
    from engine.server.httpresponse import Headers
    items = []
    for i, n in enumerate(names):
        items += [n.encode(), f"v{i} ".encode()]
    joined = b"\0%s\0" % b"\0".join(items[::2]).lower()
    headers = Headers.of_raw(items)
    for name in ("connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"):
        assert _header(items, joined, b"\0%s\0" % name.encode()) == headers.get(name), name


async def test_the_answer_headers_are_decoded_only_when_read():
    client = HttpClient("http://127.0.0.1:1")
    client.loop = asyncio.get_running_loop()
    conn = _Conn(client)
    conn.connection_made(_Transport())
    task = asyncio.create_task(conn.send("POST", b"head", b"", True, None))
    await asyncio.sleep(0)
    conn.data_received(b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                       b"Content-Length: 2\r\n\r\nok")
    resp = await task
    assert resp.headers._map is None  # the framing was read without them
    assert (resp.content_length, conn.keep_alive, conn.idle_limit) == (2, True, 4.0)
    assert await resp.read() == b"ok" and resp.headers["x-a"] == "1"
