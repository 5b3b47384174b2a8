"""A fast fake Anthropic Messages upstream for the benchmark.

A raw asyncio HTTP/1.1 server (keep-alive, Content-Length request bodies) rather than an aiohttp
app, so that the upstream costs little next to what it serves and is not what limits a run.
Every reply is built once per scenario and cached as the exact bytes to write.

The scenario is read from the requested model name, so the same request shape works through the
byte proxy (which forwards it untouched) and through the gateway (which forwards the model):

    claude-bench-text[-n<N>][-p<ms>]          text stream: N text deltas (default 200)
    claude-bench-tools[-k<K>][-n<M>][-p<ms>]  K tool calls (default 2) of M argument fragments
                                              each (default 50)

``-p<ms>`` paces the events: that many milliseconds between two events (default 0: the events
are written back to back, one HTTP chunk per event, without yielding). A non-stream request
(``"stream"`` absent or false) gets the whole Messages body of the same scenario.

The first text delta (or argument fragment) of every stream holds the marker ``T0K3N``: the load
generator measures time to first token as the time until that marker arrives, whatever the
framing of the proxy in between.

Run alone: ``python -m engine.bench.upstream --port 9100``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import signal
import sys

MARKER = "T0K3N"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SCENARIO = re.compile(r"-(?P<key>[nkp])(?P<val>\d+)")

DEFAULT_TEXT_DELTAS = 200
DEFAULT_TOOL_CALLS = 2
DEFAULT_TOOL_FRAGMENTS = 50


def scenario(model: str) -> dict:
    """The parameters encoded in a model name (see the module docstring)."""
    kind = "tools" if "-tools" in (model or "") else "text"
    opts = {m.group("key"): int(m.group("val")) for m in _SCENARIO.finditer(model or "")}
    return {
        "kind": kind,
        "n": opts.get("n", DEFAULT_TEXT_DELTAS if kind == "text" else DEFAULT_TOOL_FRAGMENTS),
        "k": opts.get("k", DEFAULT_TOOL_CALLS),
        "pace": opts.get("p", 0) / 1000.0,
    }


def model_name(kind: str = "text", n: int | None = None, k: int | None = None, pace_ms: int = 0) -> str:
    name = f"claude-bench-{kind}"
    if k is not None and kind == "tools":
        name += f"-k{k}"
    if n is not None:
        name += f"-n{n}"
    if pace_ms:
        name += f"-p{pace_ms}"
    return name


def _usage(out_tokens: int) -> dict:
    return {"input_tokens": 42, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": out_tokens, "service_tier": "standard"}


def _text_pieces(n: int) -> list[str]:
    return [MARKER + " "] + [f"word{i} " for i in range(1, n)]


def _tool_fragments(m: int) -> list[str]:
    # valid JSON once joined: {"query":"T0K3N w1 w2 ...","limit":10}
    middle = [f" w{i}" for i in range(1, max(m - 2, 0) + 1)]
    frags = ['{"query":"' + MARKER] + middle + ['","limit":10}']
    return frags[:m] if m >= 2 else ["".join(frags)]


def stream_events(model: str) -> list[dict]:
    """The Anthropic stream events of a scenario, in order."""
    sc = scenario(model)
    msg_id = "msg_bench0000000000000000000001"
    events = [{"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "content": [], "model": model,
        "stop_reason": None, "stop_sequence": None, "usage": _usage(1)}}]
    if sc["kind"] == "text":
        events.append({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        events.append({"type": "ping"})
        for piece in _text_pieces(sc["n"]):
            events.append({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": piece}})
        events.append({"type": "content_block_stop", "index": 0})
        stop = "end_turn"
    else:
        for i in range(sc["k"]):
            events.append({"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": f"toolu_bench{i:020d}", "name": "search", "input": {}}})
            for frag in _tool_fragments(sc["n"]):
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "input_json_delta", "partial_json": frag}})
            events.append({"type": "content_block_stop", "index": i})
        stop = "tool_use"
    events.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                   "usage": {"output_tokens": len(events)}})
    events.append({"type": "message_stop"})
    return events


def message_body(model: str) -> dict:
    """The non-stream Messages body of a scenario."""
    sc = scenario(model)
    if sc["kind"] == "text":
        content = [{"type": "text", "text": "".join(_text_pieces(sc["n"]))}]
        stop = "end_turn"
    else:
        content = [{"type": "tool_use", "id": f"toolu_bench{i:020d}", "name": "search",
                    "input": json.loads("".join(_tool_fragments(sc["n"])))} for i in range(sc["k"])]
        stop = "tool_use"
    return {"id": "msg_bench0000000000000000000001", "type": "message", "role": "assistant",
            "model": model, "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": _usage(sc["n"])}


def sse_frames(model: str) -> list[bytes]:
    """Each event as SSE bytes (``event: X\\ndata: {...}\\n\\n``), as Anthropic sends them."""
    return [f"event: {ev['type']}\ndata: {_dumps(ev)}\n\n".encode() for ev in stream_events(model)]


_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n")
_KEEP = b"Connection: keep-alive\r\n\r\n"
_CLOSE = b"Connection: close\r\n\r\n"


class Reply:
    """One scenario's reply, prebuilt: the head, the body or the chunked frames."""
    __slots__ = ("stream", "head", "body", "chunks", "whole", "pace", "events")

    def __init__(self, model: str, stream: bool):
        sc = scenario(model)
        self.stream = stream
        self.pace = sc["pace"]
        if stream:
            frames = sse_frames(model)
            self.events = len(frames)
            self.chunks = [b"%x\r\n%s\r\n" % (len(f), f) for f in frames] + [b"0\r\n\r\n"]
            self.whole = b"".join(self.chunks)
            self.head = _STREAM_HEAD
            self.body = b""
        else:
            self.events = 0
            self.body = _dumps(message_body(model)).encode()
            self.head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         % len(self.body))
            self.chunks = []
            self.whole = b""


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("server", "transport", "buf", "busy", "closed")

    def __init__(self, server: "FakeAnthropic"):
        self.server = server
        self.transport = None
        self.buf = b""
        self.busy = False
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        self.server.connections += 1

    def connection_lost(self, exc):
        self.closed = True
        self.server.connections -= 1

    def data_received(self, data: bytes):
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self._process()

    def _process(self):
        while not self.busy and not self.closed:
            buf = self.buf
            he = buf.find(b"\r\n\r\n")
            if he < 0:
                return
            head = buf[:he].lower()
            clen = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                clen = int(head[i + 17: j if j >= 0 else len(head)])
            end = he + 4 + clen
            if len(buf) < end:
                return
            body = buf[he + 4:end]
            self.buf = buf[end:]
            self._handle(body, b"\r\nconnection: close" in head)

    def _handle(self, body: bytes, close: bool):
        self.server.requests += 1
        reply = self.server.reply_for(body)
        t = self.transport
        if reply is None:
            msg = b'{"type":"error","error":{"type":"invalid_request_error","message":"bad body"}}'
            t.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s"
                    % (len(msg), _CLOSE if close else _KEEP, msg))
        elif not reply.stream:
            t.write(reply.head + (_CLOSE if close else _KEEP) + reply.body)
        elif reply.pace:
            t.write(reply.head + (_CLOSE if close else _KEEP))
            self.busy = True
            asyncio.get_running_loop().create_task(self._paced(reply, close))
            return
        else:
            t.write(reply.head + (_CLOSE if close else _KEEP))
            if self.server.whole:
                t.write(reply.whole)
            else:
                write = t.write
                for c in reply.chunks:  # one write (one HTTP chunk) per event, back to back
                    write(c)
        if close:
            t.close()

    async def _paced(self, reply: Reply, close: bool):
        t = self.transport
        try:
            for i, c in enumerate(reply.chunks):
                if self.closed:
                    return
                if i:
                    await asyncio.sleep(reply.pace)
                t.write(c)
        finally:
            self.busy = False
        if close:
            t.close()
        elif self.buf and not self.closed:
            self._process()


class FakeAnthropic:
    def __init__(self, whole: bool = False):
        self.cache: dict = {}
        self.requests = 0
        self.connections = 0
        self.whole = whole
        self.server = None

    def reply_for(self, body: bytes) -> Reply | None:
        # the two fields that matter, without parsing a large body twice: cached by (model, stream)
        try:
            doc = json.loads(body)
            model = doc.get("model") or "claude-bench-text"
            stream = bool(doc.get("stream"))
        except (ValueError, AttributeError):
            return None
        key = (model, stream)
        reply = self.cache.get(key)
        if reply is None:
            if len(self.cache) > 256:
                self.cache.clear()
            reply = self.cache[key] = Reply(model, stream)
        return reply

    async def start(self, host: str = "127.0.0.1", port: int = 0, backlog: int = 4096):
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: UpstreamProtocol(self), host, port,
                                               backlog=backlog, reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def raise_nofile():
    """Lift the soft open-files limit to the hard one (1,000 streams need ~2,000 sockets)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ValueError, OSError):
        pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench.upstream", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--whole", action="store_true",
                   help="write an unpaced stream in one write instead of one write per event")
    args = p.parse_args(argv)
    raise_nofile()

    async def run():
        up = FakeAnthropic(whole=args.whole)
        port = await up.start(args.host, args.port)
        print(f"listening {args.host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await up.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
