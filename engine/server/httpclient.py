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

from .httpresponse import Body, Headers, Response

KEEPALIVE_SECONDS = 15.0  # idle connections older than this are not reused (aiohttp's default too)
_MAX_HEAD = 64 * 1024
_MAX_CHUNK_LINE = 4096
# a chunk size line: hex digits, then optional whitespace and extensions (ignored)
_SIZE_LINE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n").match
_KA_TIMEOUT = re.compile(r"timeout\s*=\s*(\d+)", re.I).search
_CLOCK_RESOLUTION = time.get_clock_info("monotonic").resolution  # as asyncio's loop
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})

# connection states
_IDLE, _HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _CLOSED = range(9)


class _Conn(asyncio.Protocol):
    """One connection: writes a request, parses its response, then goes back to the pool."""

    def __init__(self, client: "HttpClient"):
        self.client = client
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.state = _IDLE
        self.buf = b""
        self.waiter: asyncio.Future | None = None
        self.method = "GET"
        self.body: Body | None = None
        self.remaining = 0
        self.keep_alive = True
        self.decompress = True
        self.max_inflated = client.max_inflated
        self.paused = False
        self.got_bytes = False
        self.idle_since = 0.0
        self.idle_limit = KEEPALIVE_SECONDS

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
        elif state != _IDLE and state != _CLOSED and self.body is not None:
            self.body.set_exception(aiohttp.ClientPayloadError(
                "Response payload is not completed: the upstream closed the connection"))

    def data_received(self, data: bytes):
        self.got_bytes = True
        state = self.state
        if state == _IDLE or state == _CLOSED:
            self.abort(None)  # bytes nobody asked for: the connection is out of step
            return
        try:
            if state == _LENGTH and not self.buf and len(data) < self.remaining:
                self.remaining -= len(data)
                self._deliver(data)
                return
            self.buf = self.buf + data if self.buf else data
            self._parse()
        except _BadResponse as e:
            self._fail(str(e))

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
        self.method = method
        self.state = _HEAD
        self.decompress = decompress
        self.got_bytes = False
        self.body = None
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

    # -- parsing
    def _parse(self):
        buf = self.buf
        i = 0
        while True:
            state = self.state
            if state == _HEAD:
                j = buf.find(b"\r\n\r\n", i)
                if j < 0:
                    if len(buf) - i > _MAX_HEAD:
                        raise _BadResponse("response head over 64 KiB")
                    break
                if j - i > _MAX_HEAD:
                    raise _BadResponse("response head over 64 KiB")
                head = buf[i:j]
                i = j + 4
                if self._head(head):
                    continue  # 1xx: the real head follows
                if self.state == _IDLE:  # no body at all
                    break
            elif state == _LENGTH:
                n = len(buf) - i
                if n < self.remaining:
                    if n:
                        self.remaining -= n
                        self._deliver(buf[i:] if i else buf)
                    i = len(buf)
                    break
                end = i + self.remaining
                self.remaining = 0
                self._deliver(buf[i:end])
                i = end
                self._done()
                break
            elif state == _UNTIL_CLOSE:
                if i < len(buf):
                    self._deliver(buf[i:] if i else buf)
                i = len(buf)
                break
            elif state in (_CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS):
                i = self._chunks(buf, i)
                break
            else:
                break
        rest = buf[i:] if i < len(buf) else b""
        if rest and self.state in (_IDLE, _CLOSED):
            self.buf = b""
            if self.state == _IDLE:
                self.abort(None)  # bytes after the response: the connection is out of step
            return
        self.buf = rest

    def _head(self, head: bytes) -> bool:
        """Parses a response head; True for an interim 1xx one."""
        lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
            raise _BadResponse(f"malformed status line from the upstream: {lines[0][:100]!r}")
        status = int(parts[1])
        if 100 <= status < 200 and status != 101:
            return True  # interim (100 Continue, 103 Early Hints): the final head follows
        if status == 101:
            # a switch to another protocol: the bytes after it are not HTTP, so nothing can be relayed
            raise _BadResponse("the upstream answered 101 Switching Protocols")
        items = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadResponse(f"malformed header line from the upstream: {line[:100]!r}")
            items.append((name, value.strip(" \t")))
        headers = Headers(items)
        version = parts[0]
        conn_hdr = (headers.get("connection") or "").lower()
        self.keep_alive = version == "HTTP/1.1" and "close" not in conn_hdr
        self.idle_limit = _idle_limit(headers.get("keep-alive"))
        length = None
        if self.method == "HEAD" or status in (204, 304) or status < 200:
            mode = _IDLE
        elif "chunked" in (headers.get("transfer-encoding") or "").lower():
            mode = _CHUNK_SIZE
        elif headers.get("content-length") is not None:
            cl = headers.get("content-length").strip()
            if not cl.isdigit():
                raise _BadResponse(f"malformed content-length from the upstream: {cl[:40]!r}")
            length = int(cl)
            mode = _LENGTH if length else _IDLE
            self.remaining = length
        else:
            mode = _UNTIL_CLOSE
            self.keep_alive = False
        enc = (headers.get("content-encoding") or "").strip().lower() if self.decompress else ""
        # a compressed body is inflated by its reader, a step at a time (httpresponse.Body), so
        # backpressure holds on the compressed bytes and a bomb costs no more than one step
        inflater = zlib.decompressobj(wbits=47) if enc in ("gzip", "x-gzip", "deflate") else None
        self.body = body = Body(self, inflater, self.max_inflated)
        resp = Response(status, parts[2] if len(parts) > 2 else "", headers, body, self, length)
        self.state = mode
        if mode == _IDLE:
            body.feed_eof()
            self._done()
        w = self.waiter
        self.waiter = None
        if w is not None and not w.done():
            w.set_result(resp)
        return False

    def _chunks(self, buf: bytes, i: int) -> int:
        pieces = []
        n = len(buf)
        state = self.state
        if state == _CHUNK_SIZE:
            i = _whole_chunks(buf, i, pieces)
        while True:
            if state == _CHUNK_SIZE:
                m = _SIZE_LINE(buf, i)
                if m is None:
                    j = buf.find(b"\r\n", i)
                    if j >= 0:
                        raise _BadResponse(f"malformed chunk size from the upstream: {buf[i:j][:40]!r}")
                    if n - i > _MAX_CHUNK_LINE:
                        raise _BadResponse("chunk size line too long")
                    break
                size = int(m.group(1), 16)
                i = m.end()
                if not size:
                    state = _TRAILERS
                    continue
                end = i + size
                if end + 2 <= n:  # the whole chunk is here (the usual case: one SSE event each)
                    if buf[end] != 13 or buf[end + 1] != 10:
                        raise _BadResponse("chunk data not followed by CRLF")
                    pieces.append(buf[i:end])
                    i = end + 2
                    continue
                self.remaining = size
                state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                left = n - i
                if not left:
                    break
                want = self.remaining
                if left < want:
                    pieces.append(buf[i:])
                    self.remaining = want - left
                    i = n
                    break
                pieces.append(buf[i:i + want])
                i += want
                state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if n - i < 2:
                    break
                if buf[i] != 13 or buf[i + 1] != 10:
                    raise _BadResponse("chunk data not followed by CRLF")
                i += 2
                state = _CHUNK_SIZE
            else:  # _TRAILERS: header lines up to an empty one
                j = buf.find(b"\r\n", i)
                if j < 0:
                    if n - i > _MAX_HEAD:
                        raise _BadResponse("trailers over 64 KiB")
                    break
                empty = j == i
                i = j + 2
                if empty:
                    self.state = state
                    if pieces:
                        self._deliver(pieces[0] if len(pieces) == 1 else b"".join(pieces))
                    self._done()
                    return i
        self.state = state
        if pieces:
            self._deliver(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        return i

    def _deliver(self, data: bytes):
        self.body.feed(data)

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


def _whole_chunks(buf: bytes, i: int, pieces: list) -> int:
    """Takes the run of whole chunks at buf[i:] whose size lines are plain hex and whose data
    holds no CRLF (an SSE event ends its lines with LF): one C split, then one comparison per
    chunk. Returns where it stopped; the general parser takes it from there (an uppercase or
    zero-padded size, extensions, the last chunk, a part, any doubt)."""
    segs = (buf[i:] if i else buf).split(b"\r\n")
    last = len(segs) - 2  # data must be followed by its CRLF: a segment after it
    k = 0
    while k < last:
        data = segs[k + 1]
        size = len(data)
        # the size line must be exactly the data's length in lowercase hex, as servers write it
        if not size or segs[k] != b"%x" % size:
            break
        pieces.append(data)
        i += len(segs[k]) + size + 4
        k += 2
    return i


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
        """The response head, within `timeout` seconds (connecting included) when given."""
        self.resp = await self.client.send(*self.args, timeout=timeout)
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
            for k, v in headers.items():
                v = str(v)
                if "\n" in v or "\r" in v or "\n" in k or "\r" in k or ":" in k:
                    raise ValueError(f"header {k!r} holds a line break or colon; refusing to send it")
                if not offered and k.lower() == "accept-encoding":
                    offered = True
                parts.append(f"{k}: {v}\r\n")
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
