"""What the upstream HTTP client hands the gateway: the response head and its body as it arrives.

The subset of aiohttp's ClientResponse / StreamReader the gateway uses, so its callers read an
answer the same way whichever client produced it."""
from __future__ import annotations

import asyncio
import re
import zlib

import aiohttp

HIGH_WATER = 256 * 1024  # body bytes buffered before the connection stops reading
INFLATE_STEP = 256 * 1024  # most decompressed bytes made per read of a compressed body
# Response.drain: how long, and how many more body bytes, the end of an answer whose reader is
# done may take before its connection is closed rather than kept
DRAIN_SECONDS = 1.0
DRAIN_BYTES = 16 * 1024


class TooLarge(aiohttp.ClientPayloadError):
    """The upstream's answer is over one of the gateway's size limits."""


class Headers:
    """Response headers: case-insensitive get, items() in received order and case.

    From the HTTP client they come as the raw byte names and values llhttp reported (`of_raw`),
    decoded when first read: a translated answer's 20-odd headers are never read once the
    client has taken its framing from them, and decoding them all cost ~5% of such a request."""
    __slots__ = ("_items", "_map", "_raw")

    def __init__(self, items: list):
        self._raw = None
        self._items = items
        self._map = _first_of_each(items)

    @classmethod
    def of_raw(cls, raw: list) -> "Headers":
        """`raw`: names and values alternating, as bytes (llhttp refuses a NUL in either)."""
        h = cls.__new__(cls)
        h._raw = raw
        h._items = h._map = None
        return h

    def _decode(self) -> dict:
        raw = self._raw
        # one decode for the whole head; UTF-8 with surrogateescape keeps any byte as it came
        text = b"\0".join(raw).decode("utf-8", "surrogateescape").split("\0") if raw else []
        self._items = list(zip(text[::2], text[1::2]))
        self._map = m = _first_of_each(self._items)
        self._raw = None
        return m

    def get(self, name: str, default=None):
        m = self._map
        if m is None:
            m = self._decode()
        return m.get(name.lower(), default)

    def __getitem__(self, name: str):
        m = self._map
        if m is None:
            m = self._decode()
        return m[name.lower()]

    def __contains__(self, name) -> bool:
        m = self._map
        if m is None:
            m = self._decode()
        return isinstance(name, str) and name.lower() in m

    def items(self):
        if self._map is None:
            self._decode()
        return iter(self._items)

    def __repr__(self):
        if self._map is None:
            self._decode()
        return f"Headers({self._items!r})"


def _first_of_each(items: list) -> dict:
    m = {}
    for k, v in items:
        m.setdefault(k.lower(), v)
    return m


class Body:
    """The response body as it arrives. readany/iter_any/read/is_eof as on aiohttp's
    StreamReader; data already received is handed out before a failure is raised."""
    __slots__ = ("_chunks", "_size", "_eof", "_exc", "_waiter", "_conn", "_inflater", "_ctail", "_inflated",
                 "_max_inflated", "_back", "_loop")

    def __init__(self, conn, inflater=None, max_inflated: int = 0):
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._conn = conn
        # _wait runs once per read of a stream, and on Python 3.11 asyncio.get_running_loop()
        # makes a getpid() system call each time
        self._loop = conn.loop
        # a compressed body: the chunks hold compressed bytes, inflated as they are read
        self._inflater = inflater
        self._ctail = b""
        self._inflated = 0
        self._max_inflated = max_inflated
        self._back = b""

    def feed(self, data: bytes):
        self._chunks.append(data)
        self._size += len(data)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)
        if self._size > HIGH_WATER and self._conn is not None:
            self._conn.pause()

    def feed_eof(self):
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException):
        if not self._eof and self._exc is None:
            self._exc = exc
        self._wake()

    def _wake(self):
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def unread(self, data: bytes):
        """Puts bytes already read back in front of the body (a peek at an error body)."""
        self._back = data + self._back

    def is_eof(self) -> bool:
        return self._eof

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        return data

    async def _wait(self):
        while not self._chunks and not self._eof and self._exc is None:
            self._waiter = w = self._loop.create_future()
            await w

    async def readany(self) -> bytes:
        """Whatever has arrived (waiting for something), b"" at the end."""
        if self._back:
            data, self._back = self._back, b""
            return data
        if self._inflater is not None:
            return await self._read_inflated()
        if not self._chunks:
            await self._wait()
            if not self._chunks:
                if self._exc is not None:
                    raise self._exc
                return b""
        return self._take()

    def iter_any(self):
        return self

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        # readany, with its wait inlined: a stream's task waits here between upstream reads, and
        # each coroutine it waits through is resumed on every read and kept for the stream's life
        if self._back or self._inflater is not None:
            data = await self.readany()
            if not data:
                raise StopAsyncIteration
            return data
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self._eof:
                raise StopAsyncIteration
            self._waiter = w = self._loop.create_future()
            await w
        return self._take()

    async def _read_inflated(self) -> bytes:
        """The next step of a compressed body, inflated: at most INFLATE_STEP bytes, and
        TooLarge past the decompressed limit."""
        d = self._inflater
        while True:
            if self._ctail or self._chunks:
                src = self._ctail + self._take() if self._chunks else self._ctail
                try:
                    out = d.decompress(src, INFLATE_STEP)
                except zlib.error as e:
                    self._drop()
                    raise aiohttp.ClientPayloadError(f"the upstream's compressed body is corrupt: {e}") from None
                self._ctail = d.unconsumed_tail
                if out:
                    self._inflated += len(out)
                    limit = self._max_inflated
                    if limit and self._inflated > limit:
                        self._drop()
                        raise TooLarge(f"the upstream's answer decompresses to more than {limit} bytes "
                                       "(upstream_max_decompressed_bytes)")
                    return out
                if d.eof:
                    self._ctail = b""
                continue
            if self._eof:
                if not d.eof:
                    raise aiohttp.ClientPayloadError("the upstream's compressed body is truncated")
                return b""
            if self._exc is not None:
                raise self._exc
            await self._wait()

    def _drop(self):
        conn = self._conn
        if conn is not None:
            conn.abort(None)
        self._chunks.clear()
        self._ctail = b""

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; with `limit`, TooLarge as soon as more than `limit` bytes arrived
        (the connection is dropped: the rest is never read)."""
        if self._inflater is not None or self._back:
            parts = []
            total = 0
            while True:
                data = await self.readany()
                if not data:
                    return b"".join(parts)
                total += len(data)
                if limit is not None and total > limit:
                    self._drop()
                    raise TooLarge(f"the upstream's answer is over {limit} bytes")
                parts.append(data)
        parts = []
        total = 0
        while True:
            if self._chunks:
                parts.append(self._take())  # resumes a paused connection
                if limit is not None:
                    total += len(parts[-1])
                    if total > limit:
                        self._drop()
                        raise TooLarge(f"the upstream's answer is over {limit} bytes")
            if self._eof:
                break
            if self._exc is not None:
                raise self._exc
            await self._wait()
        return parts[0] if len(parts) == 1 else b"".join(parts)


class Response:
    """What the gateway reads of an upstream answer (a subset of aiohttp's ClientResponse), and
    `request_id`: the upstream's own id of the request (Anthropic's `request-id`, OpenAI's
    `x-request-id`), or None."""
    __slots__ = ("status", "reason", "headers", "content", "content_length", "_conn", "request_id")

    def __init__(self, status: int, reason: str, headers: Headers, content: Body, conn,
                 content_length: int | None, request_id: str | None = None):
        self.request_id = request_id
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        self.content_length = content_length
        self._conn = conn

    async def read(self, limit: int | None = None) -> bytes:
        return await self.content.read(limit)

    async def text(self, encoding: str | None = None, errors: str = "strict", limit: int | None = None) -> str:
        data = await self.read(limit)
        if encoding is None:
            m = re.search(r"charset=([\w.:-]+)", self.headers.get("content-type") or "", re.I)
            encoding = m.group(1) if m else "utf-8"
        try:
            return data.decode(encoding, errors)
        except LookupError:
            return data.decode("utf-8", errors)

    def drain(self, seconds: float | None = None, limit: int | None = None):
        """The reader has all it needs (a stream's last event came): the rest of the body, which
        should be no more than the end of the chunked framing, is read and dropped, and the
        connection goes back to the pool when it ends. More than `limit` bytes, or no end within
        `seconds`, and the connection is closed instead. An upstream that writes its last event
        and the end of the body apart would otherwise cost every stream a new connection (with
        TLS, a handshake) for the next request."""
        conn, self._conn = self._conn, None
        if conn is None or self.content._eof or conn.body is not self.content:
            return
        conn.body = _Drain(conn, DRAIN_SECONDS if seconds is None else seconds,
                           DRAIN_BYTES if limit is None else limit)
        if conn.paused:
            conn.resume()

    def close(self):
        """Drops the connection unless the whole body has arrived (it cannot be reused midway)."""
        conn, self._conn = self._conn, None
        if conn is not None and not self.content._eof:
            conn.abort(aiohttp.ClientConnectionError("Connection closed"))

    release = close


class _Drain:
    """Stands in for the Body of a drained answer (Response.drain) on its connection: counts
    what still arrives and closes the connection past the limits; when the answer ends, the
    connection goes back to the pool as after any answer."""
    __slots__ = ("_conn", "left", "timer")

    def __init__(self, conn, seconds: float, limit: int):
        self._conn = conn
        self.left = limit
        self.timer = conn.loop.call_later(seconds, self._give_up)

    def feed(self, data: bytes):
        self.left -= len(data)
        if self.left < 0:
            self._give_up()

    def feed_eof(self):
        self.timer.cancel()

    def set_exception(self, exc: BaseException):
        self.timer.cancel()

    def _give_up(self):
        self.timer.cancel()
        conn = self._conn
        if conn is not None and conn.body is self:
            self._conn = None
            conn.abort(None)
