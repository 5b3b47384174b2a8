"""A small asyncio Redis client speaking RESP2 -- just what the response store needs.

The gateway's runtime dependencies are deliberately few, so instead of the
``redis`` package this module implements the protocol directly on
:func:`asyncio.open_connection`:

* :func:`parse_url` -- ``redis://[[user]:password@]host[:port][/db]`` and
  ``rediss://`` (TLS, stdlib :mod:`ssl`); query parameters ``db``,
  ``ssl_cert_reqs`` (``required`` | ``none``) and ``ssl_ca_certs`` (a PEM file).
* :func:`encode_command` / :func:`read_reply` -- the wire format.  Replies map
  to Python as: simple string -> ``str``, bulk string -> ``bytes``, integer ->
  ``int``, array -> ``list``, nil bulk/array -> ``None``, error ->
  :class:`RedisReplyError` (raised at the top level, returned as a value when
  nested in an array).
* :class:`RedisClient` -- a small connection pool.  Each connection runs one
  command at a time; new connections send ``AUTH`` / ``SELECT`` from the URL.
  A pooled connection that turns out to be dead (the server closed it, a
  proxy dropped it) is thrown away and the command is retried once on a fresh
  connection; failures on a fresh connection are raised.

Errors: every failure is a :class:`RedisError`; :class:`RedisReplyError` for
``-ERR ...`` replies (the connection stays usable), :class:`RedisConnectionError`
(and its subclass :class:`RedisTimeoutError`) when the server cannot be
reached or goes away, :class:`RedisProtocolError` for unparseable replies.
Messages name ``host:port`` but never the password.
"""
from __future__ import annotations

import asyncio
import collections
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "RedisClient",
    "RedisConnectionError",
    "RedisError",
    "RedisParams",
    "RedisProtocolError",
    "RedisReplyError",
    "RedisTimeoutError",
    "encode_command",
    "parse_url",
    "read_reply",
]

CRLF = b"\r\n"


# ------------------------------------------------------------------ errors


class RedisError(Exception):
    """Base class of every error raised by this module."""


class RedisReplyError(RedisError):
    """The server answered with an error reply (``-ERR ...``, ``-WRONGTYPE ...``).

    ``code`` is the first word of the message (``"ERR"``, ``"NOAUTH"``, ...).
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
        self.code = message.split(" ", 1)[0] if message else ""


class RedisConnectionError(RedisError):
    """The server could not be reached, or the connection broke mid-command."""


class RedisTimeoutError(RedisConnectionError):
    """Connecting or waiting for a reply took longer than the configured timeout."""


class RedisProtocolError(RedisError):
    """The server sent something that is not RESP2."""


# ------------------------------------------------------------------ URL


@dataclass(frozen=True)
class RedisParams:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: str | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_QUERY_KEYS = ("db", "ssl_cert_reqs", "ssl_ca_certs")


def parse_url(url: str) -> RedisParams:
    """Parse a ``redis://`` / ``rediss://`` URL; raise ``ValueError`` with a clear message."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        port = parts.port
    except ValueError as e:  # bad port, bad IPv6 literal
        raise ValueError(f"invalid Redis URL {_redact(url)!r}: {e}") from None
    if scheme not in ("redis", "rediss"):
        raise ValueError(
            f"invalid Redis URL {_redact(url)!r}: scheme must be redis:// or rediss:// "
            "(unix sockets are not supported)"
        )
    host = parts.hostname or "127.0.0.1"
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password == "":
        password = None

    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise ValueError(
            f"invalid Redis URL {_redact(url)!r}: unsupported query parameter(s) "
            f"{', '.join(unknown)} (supported: {', '.join(_QUERY_KEYS)})"
        )

    db_text = parts.path.strip("/")
    if "db" in query:
        if db_text:
            raise ValueError(f"invalid Redis URL {_redact(url)!r}: database given twice (path and ?db=)")
        db_text = query["db"][-1]
    db = 0
    if db_text:
        if not db_text.isdigit():
            raise ValueError(
                f"invalid Redis URL {_redact(url)!r}: database must be a number, got {db_text!r}"
            )
        db = int(db_text)

    tls = scheme == "rediss"
    tls_verify = True
    tls_ca_file = None
    if "ssl_cert_reqs" in query:
        value = query["ssl_cert_reqs"][-1].lower()
        if value in ("none", "cert_none"):
            tls_verify = False
        elif value not in ("required", "cert_required"):
            raise ValueError(
                f"invalid Redis URL {_redact(url)!r}: ssl_cert_reqs must be 'required' or 'none'"
            )
    if "ssl_ca_certs" in query:
        tls_ca_file = query["ssl_ca_certs"][-1] or None
    if not tls and ("ssl_cert_reqs" in query or "ssl_ca_certs" in query):
        raise ValueError(
            f"invalid Redis URL {_redact(url)!r}: ssl_* parameters need a rediss:// URL"
        )
    return RedisParams(
        host=host,
        port=port if port is not None else 6379,
        db=db,
        username=username,
        password=password,
        tls=tls,
        tls_verify=tls_verify,
        tls_ca_file=tls_ca_file,
    )


def _redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for error messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        return parts._replace(netloc=f"{user}:***@{hostport}").geturl()
    except ValueError:
        return "<unparseable URL>"


# ------------------------------------------------------------------ wire format


def _arg_bytes(arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    if isinstance(arg, bool):
        raise TypeError("bool is not a valid Redis command argument; pass 0/1 or a string")
    if isinstance(arg, (int, float)):
        return repr(arg).encode("ascii")
    raise TypeError(f"invalid Redis command argument of type {type(arg).__name__}")


def encode_command(*args) -> bytes:
    """``SET k v`` -> ``*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n``."""
    if not args:
        raise ValueError("empty Redis command")
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        b = _arg_bytes(arg)
        out.append(b"$%d\r\n" % len(b))
        out.append(b)
        out.append(CRLF)
    return b"".join(out)


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(CRLF)
    except asyncio.LimitOverrunError:
        raise RedisProtocolError("reply line too long") from None
    return line[:-2]


async def read_reply(reader: asyncio.StreamReader):
    """Read one RESP2 reply.

    Error replies are *returned* as :class:`RedisReplyError` instances (so that
    errors inside arrays do not lose the rest of the array); callers decide
    whether to raise.  End of stream raises :class:`asyncio.IncompleteReadError`.
    """
    line = await _read_line(reader)
    if not line:
        raise RedisProtocolError("empty reply line")
    kind, rest = line[:1], line[1:]
    if kind == b"$":
        n = _length(rest)
        if n < 0:
            return None
        data = await reader.readexactly(n + 2)
        if data[-2:] != CRLF:
            raise RedisProtocolError("bulk string not terminated by CRLF")
        return data[:-2]
    if kind == b"+":
        return rest.decode("utf-8", "replace")
    if kind == b"-":
        return RedisReplyError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return _length(rest)
    if kind == b"*":
        n = _length(rest)
        if n < 0:
            return None
        return [await read_reply(reader) for _ in range(n)]
    raise RedisProtocolError(f"unexpected reply type byte {kind!r} (line {line[:40]!r})")


def _length(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise RedisProtocolError(f"invalid integer in reply: {text[:40]!r}") from None


# ------------------------------------------------------------------ connections


class _Connection:
    __slots__ = ("reader", "writer", "fresh")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.fresh = True  # not yet returned to the pool

    def looks_alive(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof() or self.reader.exception())

    async def call(self, payload: bytes):
        self.writer.write(payload)
        await self.writer.drain()
        return await read_reply(self.reader)

    def abort(self) -> None:
        transport = self.writer.transport
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            self.abort()


class _StaleConnection(Exception):
    """Internal: a pooled connection broke before answering; retry on a fresh one."""


class RedisClient:
    """A pool of up to ``max_connections`` RESP2 connections to one Redis server.

    Connections are made on demand (the constructor does no I/O) and bound to
    the event loop that made them; using the client from another loop drops
    the old connections.  ``command_timeout`` bounds each round trip.
    """

    def __init__(
        self,
        url: str | RedisParams,
        *,
        max_connections: int = 16,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
    ):
        self.params = url if isinstance(url, RedisParams) else parse_url(url)
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._ssl_context: ssl.SSLContext | None = None
        if self.params.tls:
            self._ssl_context = self._make_ssl_context()
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # ------------------------------------------------------------- public API

    async def execute(self, *args):
        """Send one command and return its reply; error replies are raised."""
        if self._closed:
            raise RedisError("Redis client is closed")
        payload = encode_command(*args)
        self._bind_loop()
        assert self._slots is not None
        async with self._slots:
            conn = await self._acquire()
            try:
                reply = await self._round_trip(conn, payload, args)
            except _StaleConnection:
                # A pooled connection died while idle (server restart, idle timeout,
                # CLIENT KILL, a proxy): its siblings are suspect too.  Retry once
                # on a brand-new connection; errors there are real.
                self._drop_idle()
                conn = await self._connect()
                reply = await self._round_trip(conn, payload, args)
            self._release(conn)
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    async def ping(self) -> None:
        reply = await self.execute("PING")
        if reply != "PONG":
            raise RedisProtocolError(f"unexpected PING reply {reply!r}")

    async def get(self, key: str | bytes) -> bytes | None:
        return await self.execute("GET", key)

    async def set(self, key: str | bytes, value, *, ex: int | None = None) -> bool:
        """``SET key value [EX ex]``; True when the server answered OK."""
        if ex is None:
            reply = await self.execute("SET", key, value)
        else:
            if not isinstance(ex, int) or isinstance(ex, bool) or ex < 1:
                raise ValueError("ex must be a positive whole number of seconds")
            reply = await self.execute("SET", key, value, "EX", ex)
        return reply == "OK"

    async def delete(self, *keys: str | bytes) -> int:
        """``DEL key...``; the number of keys removed."""
        if not keys:
            return 0
        return await self.execute("DEL", *keys)

    async def close(self) -> None:
        """Close idle connections; connections in use are closed when released."""
        self._closed = True
        idle, self._idle = list(self._idle), collections.deque()
        for conn in idle:
            await conn.close()

    async def __aenter__(self) -> "RedisClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ------------------------------------------------------------- internals

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Streams and semaphores belong to one loop; start over on a new one.
            for conn in self._idle:
                try:
                    conn.abort()
                except RuntimeError:  # the old loop is closed
                    pass
            self._idle = collections.deque()
            self._slots = asyncio.Semaphore(self.max_connections)
            self._loop = loop

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.looks_alive():
                conn.fresh = False
                return conn
            conn.abort()
        return await self._connect()

    def _drop_idle(self) -> None:
        idle, self._idle = list(self._idle), collections.deque()
        for conn in idle:
            conn.abort()

    def _release(self, conn: _Connection) -> None:
        if self._closed:
            conn.abort()
        else:
            self._idle.append(conn)

    async def _round_trip(self, conn: _Connection, payload: bytes, args):
        name = _arg_bytes(args[0]).decode("utf-8", "replace").upper()
        try:
            async with asyncio.timeout(self.command_timeout):
                return await conn.call(payload)
        except BaseException as e:
            # Whatever happened (including cancellation), the connection may hold
            # half a reply: it can never be reused.
            conn.abort()
            if isinstance(e, TimeoutError):
                raise RedisTimeoutError(
                    f"Redis at {self.params.address} did not answer {name} within "
                    f"{self.command_timeout:g}s"
                ) from None
            if isinstance(e, (asyncio.IncompleteReadError, ConnectionError, OSError)):
                partial = isinstance(e, asyncio.IncompleteReadError) and bool(e.partial)
                if not conn.fresh and not partial:
                    raise _StaleConnection() from e
                raise RedisConnectionError(
                    f"lost the connection to Redis at {self.params.address} during {name}: "
                    f"{_describe(e)}"
                ) from e
            raise

    async def _connect(self) -> _Connection:
        p = self.params
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    p.host,
                    p.port,
                    ssl=self._ssl_context,
                    server_hostname=p.host if self._ssl_context is not None else None,
                )
        except TimeoutError:
            raise RedisTimeoutError(
                f"cannot connect to Redis at {p.address}: timed out after {self.connect_timeout:g}s"
            ) from None
        except ssl.SSLError as e:
            raise RedisConnectionError(
                f"TLS handshake with Redis at {p.address} failed: {_describe(e)}"
            ) from e
        except OSError as e:
            raise RedisConnectionError(f"cannot connect to Redis at {p.address}: {_describe(e)}") from e
        conn = _Connection(reader, writer)
        try:
            if p.password is not None:
                auth = ("AUTH", p.username, p.password) if p.username else ("AUTH", p.password)
                await self._setup(conn, auth, "AUTH")
            if p.db:
                await self._setup(conn, ("SELECT", p.db), f"SELECT {p.db}")
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _setup(self, conn: _Connection, args, what: str) -> None:
        reply = await self._round_trip(conn, encode_command(*args), args)
        if isinstance(reply, RedisReplyError):
            raise RedisReplyError(f"Redis at {self.params.address} refused {what}: {reply.message}")

    def _make_ssl_context(self) -> ssl.SSLContext:
        p = self.params
        try:
            ctx = ssl.create_default_context(cafile=p.tls_ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load ssl_ca_certs {p.tls_ca_file!r}: {_describe(e)}") from e
        if not p.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _describe(e: BaseException) -> str:
    if isinstance(e, asyncio.IncompleteReadError):
        return "server closed the connection"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
