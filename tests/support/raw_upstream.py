"""A hostile upstream: a loopback TCP server whose answer to each request is raw bytes written
by a script, for what a well-behaved HTTP server cannot do (stall mid-head or mid-body, lie
about Content-Length, answer 101 or 307, send a 100 MB body or a gzip bomb).

    with RawUpstream() as up:
        up.script = stall_after(b"HTTP/1.1 500 x\\r\\nContent-Length: 100\\r\\n\\r\\n{")
        ... point the gateway at up.url ...
        assert len(up.requests) == 1

A script is `async def script(reader, writer)`; the connection is closed when it returns.
"""
from __future__ import annotations

import asyncio
import threading


class RawUpstream:
    def __init__(self):
        self.script = None
        self.requests: list[bytes] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._ready = threading.Event()
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "RawUpstream":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        loop = self.loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self):
        self.loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                await self.script(reader, writer)
                await writer.drain()
                break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass


def reply(data: bytes, then_stall: float = 0.0):
    """A script writing `data`, then holding the connection open `then_stall` seconds (or
    until the gateway closes it)."""
    async def script(reader, writer):
        writer.write(data)
        await writer.drain()
        if then_stall:
            await hold(reader, then_stall)
    return script


async def hold(reader: asyncio.StreamReader, seconds: float):
    """Sends nothing for `seconds`, or until the peer closes the connection."""
    try:
        await asyncio.wait_for(reader.read(), seconds)
    except (asyncio.TimeoutError, ConnectionError):
        pass


def response(status: str, body: bytes, headers: dict | None = None) -> bytes:
    """A whole HTTP/1.1 answer with Content-Length."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {"Content-Type": "application/json"}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked_head(status: str = "200 OK", content_type: str = "text/event-stream") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
