"""The gateway's HTTP/1.1 client for its upstreams: pooled keep-alive connections to one origin.

Why not aiohttp's ClientSession: measured on the bench's non-stream request, the session's
request/response machinery (URL and header objects, cookie jar, traces, timers, the generic
StreamReader) cost about 120 µs of the byte proxy's 200 µs per request on one core. This client
does only what the gateway needs: POST/GET/DELETE with a bytes body and Content-Length, responses
framed by Content-Length, chunked transfer coding or connection close, gzip/deflate decoding when
asked, backpressure on slow readers, TLS through asyncio. The response offers the subset of
aiohttp's ClientResponse the gateway uses, and failures are aiohttp's own exception classes, so
the callers' error handling is unchanged.

A reused connection that the server closed while idle fails before any response byte: such a
request is sent once more on a new connection (nothing has reached the upstream's application).

Responses are parsed by llhttp (through httptools): status line, headers, Content-Length and
chunked framing, trailers, and refusal of what two readers could frame differently (Content-Length
with Transfer-Encoding, two lengths, bad chunk sizes). This module keeps what llhttp leaves to its
caller: the 64 KiB bound on a head (on the complete head, and on the bytes received while it is
incomplete, so memory stays bounded), interim 1xx heads skipped, 101 refused, a HEAD answer ending
at its head, bytes after an answer dropping the connection, the pool and the deadlines. Its cost,
measured against a hand-written head and chunk parser doing the same job (one tight loop, both
side by side in one run, best of 9, one core, µs per response, hand-written / llhttp): a non-stream answer with 20 headers and a
2 KB body in one read 11.1 / 13.1; a 40 KB body in 16 KB reads 12.4 / 14.9; an SSE stream of 100
events one chunk per read 144 / 56, in 4 KB reads 72 / 26. So about 2 µs more per head (a Python
call per header) and 2.5x less per streamed event.

Egress through an HTTP proxy (`proxy=`, from upstream_proxy or HTTPS_PROXY / HTTP_PROXY unless
NO_PROXY names the host; see proxy_for): an https origin through a CONNECT tunnel, TLS end to end
inside it; an http origin by absolute-form requests sent to the proxy.
"""
from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
import urllib.request
import zlib
from urllib.parse import unquote, urlsplit

import aiohttp
import httptools

from .httpresponse import Body, Headers, Response

KEEPALIVE_SECONDS = 15.0  # idle connections older than this are not reused (aiohttp's default too)
_MAX_HEAD = 64 * 1024
_KA_TIMEOUT = re.compile(r"timeout\s*=\s*(\d+)", re.I).search
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution  # as asyncio's loop
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})

# A request's header lines, each checked once: the same few (content type, version) go with
# every request, so a line is looked up rather than scanned for line breaks again. The memo
# starts over when full: lines that change with each request (a request id) fill it. Lines
# carrying a credential are never kept: a passthrough route sends the client's own key.
_LINES: dict = {}
_LINES_MAX = 256
_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key"})


def _line(k: str, v) -> tuple[str, bool]:
    """(`k: v` as a header line, whether it is Accept-Encoding), refused when it would break
    the request's head."""
    text = str(v)
    if "\n" in text or "\r" in text or "\n" in k or "\r" in k or ":" in k:
        raise ValueError(f"header {k!r} holds a line break or colon; refusing to send it")
    name = k.lower()
    hit = (f"{k}: {text}\r\n", name == "accept-encoding")
    if type(v) is str and type(k) is str and name not in _CREDENTIALS:
        if len(_LINES) >= _LINES_MAX:
            _LINES.clear()
        _LINES[(k, v)] = hit
    return hit

# connection states: the body is framed by llhttp (length or chunked), or ends when the connection does
_IDLE, _HEAD, _BODY, _UNTIL_CLOSE, _CLOSED = range(5)


class _Conn(asyncio.Protocol):
    """One connection: writes a request, parses its response (llhttp), then goes back to the pool."""

    def __init__(self, client: "HttpClient"):
        self.client = client
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.state = _IDLE
        self.parser = None
        self.waiter: asyncio.Future | None = None
        self.method = "GET"
        self.body: Body | None = None
        self.keep_alive = True
        self.decompress = True
        self.max_inflated = client.max_inflated
        self.paused = False
        self.got_bytes = False
        self.idle_since = 0.0
        self.idle_limit = KEEPALIVE_SECONDS
        # the response being parsed
        self.items: list = []
        self.reason = b""
        self.head_seen = 0   # bytes received while a head is incomplete, against _MAX_HEAD
        self.interim = False
        self.pieces: list = []
        self.stray = False

    # -- asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport
        self.client.live.add(self)

    def connection_lost(self, exc):
        state, self.state = self.state, _CLOSED
        self.client._forget(self)
        if state == _HEAD:
            w = self.waiter
            if w is not None and not w.done():
                w.set_exception(aiohttp.ServerDisconnectedError(
                    "the upstream closed the connection before answering"))
        elif state == _UNTIL_CLOSE:
            self.body.feed_eof()
        elif state == _BODY and self.body is not None:
            self.body.set_exception(aiohttp.ClientPayloadError(
                "Response payload is not completed: the upstream closed the connection"))

    def data_received(self, data: bytes):
        self.got_bytes = True
        state = self.state
        if state == _IDLE or state == _CLOSED:
            self.abort(None)  # bytes nobody asked for: the connection is out of step
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            self._flush()
            if self.stray:
                self.abort(None)  # bytes after the response: the connection is out of step
                return
            self._fail(str(cause) if isinstance(cause, _BadResponse) else f"the upstream's response: {cause!r}")
            return
        except httptools.HttpParserError as e:
            self._flush()
            self._fail(f"malformed response from the upstream: {e}")
            return
        if self.pieces:
            self._flush()
        if self.stray:
            self.abort(None)  # bytes after the response: the connection is out of step
        elif self.state == _HEAD:
            self.head_seen += len(data)
            if self.head_seen > _MAX_HEAD:
                self._fail("response head over 64 KiB")

    def pause(self):
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()

    def resume(self):
        if self.paused:
            self.paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    # -- requests
    async def send(self, method: str, head: bytes, data: bytes, decompress: bool,
                   deadline: float | None) -> Response:
        self._begin(method, decompress)
        self.waiter = w = self.loop.create_future()
        if data:
            self.transport.writelines((head, data))
        else:
            self.transport.write(head)
        # one timer for all the client's calls (HeadDeadlines), not one per request
        due = self.client.deadlines if deadline is not None else None
        if due is not None:
            due.add(self, deadline)
        try:
            return await w
        except BaseException:
            # timed out, cancelled or failed before the head: the answer would arrive out of step
            self.abort(None)
            raise
        finally:
            if due is not None:
                due.discard(self)

    def _begin(self, method: str, decompress: bool):
        """Ready to parse one response: a fresh parser each time, so nothing of the last one
        (a HEAD answer's announced length) carries over."""
        self.method = method
        self.state = _HEAD
        self.decompress = decompress
        self.got_bytes = False
        self.body = None
        self.parser = httptools.HttpResponseParser(self)
        self.items = []      # header names and values, alternating, as bytes
        self.reason = b""
        self.head_seen = 0
        self.interim = self.stray = False

    def _head_timeout(self):
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(TimeoutError("timed out waiting for the upstream's response head"))

    def abort(self, exc: BaseException | None):
        if self.body is not None and exc is not None:
            self.body.set_exception(exc)
        self.state = _CLOSED
        self.client._forget(self)
        if self.transport is not None:
            self.transport.close()

    def _fail(self, why: str):
        if self.state == _HEAD:
            w = self.waiter
            self.abort(None)
            if w is not None and not w.done():
                w.set_exception(InvalidResponse(why))
        else:
            self.abort(aiohttp.ClientPayloadError(why))

    # -- llhttp's callbacks (httptools), called from feed_data
    def on_message_begin(self):
        if self.state != _HEAD:
            self.stray = True  # a second answer to one request: parse no further
            raise _BadResponse("bytes after the upstream's answer")

    def on_status(self, at: bytes):
        self.reason += at

    def on_header(self, name: bytes, value: bytes):
        self.items.append(name)
        self.items.append(value)

    def on_headers_complete(self):
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # interim (100 Continue, 103 Early Hints): the final head follows
            self.interim = True
            self.items = []
            self.reason = b""
            self.head_seen = 0
            return
        if status == 101:
            # a switch to another protocol: the bytes after it are not HTTP, so nothing can be relayed
            raise _BadResponse("the upstream answered 101 Switching Protocols")
        items = self.items
        # the complete head: status line, and each header line's name, ": " and CRLF
        if len(b"".join(items)) + 2 * len(items) + len(self.reason) + 17 > _MAX_HEAD:
            raise _BadResponse("response head over 64 KiB")
        headers = Headers.of_raw(items)  # decoded if someone reads them
        # the framing headers, found in the names lowercased together (llhttp allows only ASCII
        # token characters in a name, and no NUL)
        names = b"\0" + b"\0".join(items[::2]).lower() + b"\0"
        conn_hdr = (_header(items, names, b"\0connection\0") or "").lower()
        self.keep_alive = self.parser.get_http_version() == "1.1" and "close" not in conn_hdr
        self.idle_limit = _idle_limit(_header(items, names, b"\0keep-alive\0"))
        length = None
        bodiless = self.method == "HEAD" or status in (204, 304)
        if bodiless:
            mode = _BODY
        elif "chunked" in (_header(items, names, b"\0transfer-encoding\0") or "").lower():
            mode = _BODY
        elif (text := _header(items, names, b"\0content-length\0")) is not None:
            length = int(text)  # llhttp has checked it is digits
            mode = _BODY
        else:
            mode = _UNTIL_CLOSE
            self.keep_alive = False
        enc = (_header(items, names, b"\0content-encoding\0") or "").strip().lower() if self.decompress else ""
        # a compressed body is inflated by its reader, a step at a time (httpresponse.Body), so
        # backpressure holds on the compressed bytes and a bomb costs no more than one step
        inflater = zlib.decompressobj(wbits=47) if enc in ("gzip", "x-gzip", "deflate") else None
        self.body = body = Body(self, inflater, self.max_inflated)
        # the upstream's id of the request, for the caller and the log line: found like the framing
        # headers, without decoding the rest
        rid = _header(items, names, b"\0request-id\0") or _header(items, names, b"\0x-request-id\0")
        if rid is not None and len(rid) > _MAX_ID:
            rid = None  # not an id: kept out of the answer and the log line
        resp = Response(status, self.reason.decode("utf-8", "surrogateescape"), headers, body, self, length, rid)
        self.state = mode
        w = self.waiter
        self.waiter = None
        if w is not None and not w.done():
            w.set_result(resp)
        if self.method == "HEAD":
            self._done()  # llhttp would wait for the announced length: the answer ends here

    def on_body(self, data: bytes):
        if self.state == _BODY or self.state == _UNTIL_CLOSE:
            self.pieces.append(data)
        else:
            self.stray = True

    def on_message_complete(self):
        if self.interim:
            self.interim = False
            return
        if self.state == _BODY or self.state == _UNTIL_CLOSE:
            self._flush()
            self._done()

    def _flush(self):
        pieces = self.pieces
        if pieces:
            self.pieces = []
            if self.body is not None:
                self.body.feed(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def _done(self):
        """The whole response has arrived: the body ends and the connection is free again."""
        body = self.body
        body._conn = None
        if self.paused:
            self.resume()
        self.state = _IDLE
        body.feed_eof()
        if self.keep_alive:
            self.client._release(self)
        else:
            self.abort(None)


_MAX_ID = 256


def _header(items: list, names: bytes, key: bytes) -> str | None:
    """The first value of a header as Headers.get gives it: `key` is its lowercase name between
    NULs, `names` every name of `items` (names and values alternating) lowercased and joined
    with NULs, with a NUL at each end."""
    i = names.find(key)
    if i < 0:
        return None
    return items[2 * names.count(b"\0", 0, i) + 1].decode("utf-8", "surrogateescape")


def _idle_limit(keep_alive: str | None) -> float:
    """How long an idle connection may be reused: KEEPALIVE_SECONDS, or less when the server
    says in `Keep-Alive: timeout=N` that it closes idle connections sooner (with a margin, so
    a request is not sent on a connection the server is closing)."""
    if keep_alive:
        m = _KA_TIMEOUT(keep_alive)
        if m:
            n = float(m.group(1))
            return min(KEEPALIVE_SECONDS, max(n - 1.0, n / 2))
    return KEEPALIVE_SECONDS


class HeadDeadlines:
    """The response-head deadlines of a client's calls in flight, on one loop timer set for the
    earliest. A timer per request cost ~3% of the gateway's CPU under load: every call_at pushes
    onto the loop's heap through TimerHandle.__lt__, and the cancelled handles stay there until
    swept. Here a call costs a dict insert and delete; the timer moves only when a call with an
    earlier deadline comes, which with one timeout per client is never, and fires about once per
    timeout period, when it times out what is due and sets itself for the next deadline."""
    __slots__ = ("loop", "due", "timer", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.due: dict = {}
        self.timer: asyncio.TimerHandle | None = None
        self.at = float("inf")

    def add(self, conn: "_Conn", deadline: float):
        self.due[conn] = deadline
        if deadline < self.at:
            self._arm(deadline)

    def discard(self, conn: "_Conn"):
        self.due.pop(conn, None)

    def _arm(self, at: float):
        if self.timer is not None:
            self.timer.cancel()
        self.at = at
        self.timer = self.loop.call_at(at, self._fire)

    def close(self):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None
        self.at = float("inf")
        self.due.clear()

    def _fire(self):
        self.timer = None
        self.at = float("inf")
        # the loop runs a timer up to its clock resolution early
        now = self.loop.time() + _CLOCK_RESOLUTION
        late = [c for c, d in self.due.items() if d <= now]
        for c in late:
            del self.due[c]
            c._head_timeout()
        if self.due:
            self._arm(min(self.due.values()))


class _BadResponse(Exception):
    pass


from .httpresponse import TooLarge  # noqa: E402  (re-exported: callers catch it from here)


class ConnectFailed(aiohttp.ClientOSError):
    """No connection could be made: nothing reached the upstream, so the request may be sent again."""


class ConnectTimeout(aiohttp.ServerTimeoutError):
    """Connecting took longer than the connect timeout: nothing reached the upstream."""


class InvalidResponse(aiohttp.ClientError):
    """The upstream's response head is not HTTP/1.x."""


class _Call:
    """`async with client.request(...) as resp`, and the ctx/__aenter__ form open_with_retries uses."""
    __slots__ = ("client", "args", "resp")

    def __init__(self, client, args):
        self.client = client
        self.args = args
        self.resp: Response | None = None

    async def __aenter__(self) -> Response:
        return await self.open()

    async def open(self, timeout: float | None = None) -> Response:
        """The response head, within `timeout` seconds (connecting included) when given. The call
        gives up its body once sent: a stream answering it may stay open for minutes."""
        args, self.args = self.args, None
        self.resp = await self.client.send(*args, timeout=timeout)
        return self.resp

    async def __aexit__(self, *exc):
        if self.resp is not None:
            self.resp.release()


def proxy_for(base_url: str, configured: str = "") -> str | None:
    """The proxy URL to reach `base_url` through, or None to go direct. `configured` is the
    upstream_proxy setting: "none" goes direct, a URL is used, "" defers to the environment
    (HTTPS_PROXY for an https origin, HTTP_PROXY for http, lowercase names first, as curl).
    NO_PROXY (host names, domain suffixes, `*`) sends a host direct in both cases."""
    configured = (configured or "").strip()
    if configured.lower() == "none":
        return None
    u = urlsplit(base_url)
    host = u.hostname or ""
    env = urllib.request.getproxies_environment()
    if "no" in env:
        hostport = f"{host}:{u.port}" if u.port else host
        if urllib.request.proxy_bypass_environment(hostport, env):
            return None
    if configured:
        return configured
    return env.get(u.scheme) or None


def _parse_proxy(proxy: str) -> tuple[str, int, str | None]:
    """(host, port, Proxy-Authorization value or None) of an http:// proxy URL."""
    if "://" not in proxy:
        proxy = "http://" + proxy  # HTTPS_PROXY=host:3128, as curl takes it
    p = urlsplit(proxy)
    if p.scheme != "http" or not p.hostname:
        raise ValueError(f"the proxy must be an http://host:port URL, got {p.scheme}://{p.hostname or ''}")
    auth = None
    if p.username is not None:
        cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        auth = "Basic " + base64.b64encode(cred).decode()
    return p.hostname, p.port or 80, auth


class _TunnelReply(asyncio.Protocol):
    """The proxy's answer to CONNECT: its head, up to the blank line."""

    def __init__(self, loop):
        self.done = loop.create_future()
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        if b"\r\n\r\n" in self.buf or len(self.buf) > _MAX_HEAD:
            if not self.done.done():
                self.done.set_result(self.buf)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(ConnectionResetError("the proxy closed the connection during CONNECT"))


class HttpClient:
    """Pooled keep-alive HTTP/1.1 connections to the origin of `base_url` (http or https)."""

    def __init__(self, base_url: str, connect_timeout: float | None = 10.0,
                 ssl_context: ssl.SSLContext | None = None, max_inflated: int = 64 * 1024 * 1024,
                 proxy: str | None = None):
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"upstream base URL must be http:// or https://HOST, got {base_url!r}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.prefix = u.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.max_inflated = max_inflated  # 0: no limit
        self.ssl = (ssl_context or ssl.create_default_context()) if self.tls else None
        self.proxy = _parse_proxy(proxy) if proxy else None
        # an http origin through a proxy: absolute-form request targets, sent to the proxy
        self.target = f"http://{self.host_header}" if self.proxy and not self.tls else ""
        self.proxy_auth_line = (f"Proxy-Authorization: {self.proxy[2]}\r\n"
                                if self.target and self.proxy[2] else "")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.deadlines: HeadDeadlines | None = None
        self.idle: list[_Conn] = []
        self.live: set[_Conn] = set()

    @property
    def in_use(self) -> int:
        return len(self.live) - len(self.idle)

    def request(self, method: str, path: str, data: bytes = b"", headers=None, decompress: bool = True) -> _Call:
        """`path` is appended to the base URL's path (query string included, as written)."""
        return _Call(self, (method, path, data, headers, decompress))

    def post(self, path: str, data: bytes, headers=None) -> _Call:
        return _Call(self, ("POST", path, data, headers, True))

    def _head(self, method: str, path: str, n: int, headers, decompress: bool) -> bytes:
        parts = [f"{method} {self.target}{self.prefix}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                 f"{self.proxy_auth_line}"]
        offered = False
        if headers:
            lines = _LINES
            for k, v in headers.items():
                hit = lines.get((k, v))
                if hit is None:
                    hit = _line(k, v)
                parts.append(hit[0])
                if hit[1]:
                    offered = True
        if decompress and not offered:
            parts.append("Accept-Encoding: gzip, deflate\r\n")
        if n or method not in _NO_BODY_METHODS:
            parts.append(f"Content-Length: {n}\r\n")
        parts.append("\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape")

    async def send(self, method: str, path: str, data: bytes, headers, decompress: bool,
                   timeout: float | None = None) -> Response:
        head = self._head(method, path, len(data), headers, decompress)
        loop = self.loop
        if loop is None:
            self.loop = loop = asyncio.get_running_loop()
            self.deadlines = HeadDeadlines(loop)
        deadline = loop.time() + timeout if timeout is not None else None
        while True:
            conn, reused = await self._acquire(deadline)
            try:
                return await conn.send(method, head, data, decompress, deadline)
            except aiohttp.ServerDisconnectedError:
                if reused and not conn.got_bytes:
                    continue  # the server had closed this idle connection: a new one
                raise

    async def _acquire(self, deadline: float | None) -> tuple[_Conn, bool]:
        loop = self.loop
        idle = self.idle
        if idle:
            now = loop.time()
            while idle:
                c = idle.pop()
                if c.state != _IDLE or c.transport.is_closing():
                    continue
                if now - c.idle_since > c.idle_limit:
                    c.abort(None)  # the server may be closing it right now
                    continue
                return c, True
        limit = self.connect_timeout
        if deadline is not None:
            left = deadline - loop.time()
            limit = left if limit is None else min(limit, left)
        try:
            async with asyncio.timeout(limit):
                if self.proxy is not None:
                    conn = await self._via_proxy(loop)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Conn(self), self.host, self.port, ssl=self.ssl,
                        server_hostname=self.host if self.tls else None)
        except TimeoutError:
            raise ConnectTimeout(f"Connection timeout to host {self.host}:{self.port}{self._via()}") from None
        except OSError as e:
            raise ConnectFailed(e.errno, f"Cannot connect to host {self.host}:{self.port}{self._via()}: "
                                         f"{e.strerror or e}") from None
        return conn, False

    def _via(self) -> str:
        return f" through the proxy {self.proxy[0]}:{self.proxy[1]}" if self.proxy else ""

    async def _via_proxy(self, loop) -> _Conn:
        phost, pport, auth = self.proxy
        if not self.tls:
            _, conn = await loop.create_connection(lambda: _Conn(self), phost, pport)
            return conn
        transport, reply = await loop.create_connection(lambda: _TunnelReply(loop), phost, pport)
        try:
            host = f"[{self.host}]" if ":" in self.host else self.host
            target = f"{host}:{self.port}"
            auth_line = f"Proxy-Authorization: {auth}\r\n" if auth else ""
            transport.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth_line}\r\n".encode())
            head = await reply.done
            status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            if b"\r\n\r\n" not in head or len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                raise OSError(f"the proxy's answer to CONNECT is not HTTP: {status_line[:100]!r}")
            if not parts[1].startswith("2"):
                raise OSError(f"the proxy refused CONNECT {target}: {status_line[:200]}")
            if not head.endswith(b"\r\n\r\n"):
                raise OSError("the proxy sent bytes after its CONNECT answer")
            conn = _Conn(self)
            tls = await loop.start_tls(transport, conn, self.ssl, server_hostname=self.host)
        except BaseException:
            transport.close()
            raise
        conn.connection_made(tls)
        return conn

    def _release(self, conn: _Conn):
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def _forget(self, conn: _Conn):
        self.live.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    async def close(self):
        for c in list(self.live):
            c.abort(aiohttp.ClientConnectionError("the gateway is shutting down"))
        if self.deadlines is not None:
            self.deadlines.close()
        self.idle.clear()
        self.live.clear()
