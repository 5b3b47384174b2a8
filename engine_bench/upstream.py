"""A fast fake upstream for the benchmark: Anthropic Messages, or OpenAI Chat Completions for
`gpt-bench-*` models.

A raw asyncio HTTP/1.1 server (keep-alive, Content-Length request bodies) rather than an aiohttp
app, so that the upstream costs little next to what it serves and is not what limits a run.
Every reply is built once per scenario and cached as the exact bytes to write.

The scenario is read from the requested model name, so the same request shape works through the
byte proxy (which forwards it untouched) and through the gateway (which forwards the model):

    claude-bench-text[-n<N>][-p<ms>]          text stream: N text deltas (default 200)
    claude-bench-tools[-k<K>][-n<M>][-p<ms>]  K tool calls (default 2) of M argument fragments
                                              each (default 50)

    gpt-bench-text[-n<N>]                     the same text as an OpenAI Chat Completions answer
                                              (chunks then ``data: [DONE]``), for the gateway's
                                              OpenAI upstream

``-p<ms>`` paces the events: that many milliseconds between two events (default 0: the events
are written back to back, one HTTP chunk per event, without yielding). A non-stream request
(``"stream"`` absent or false) gets the whole Messages body of the same scenario.

Fault injection (the fault load test, engine_bench.faults), also from the model name:

    ...-f<percent>[-x<kind>[.<kind>...]]-s<stream id>

``-f<percent>`` faults that share of the stream ids (exactly floor(N * percent / 100) of the ids
0..N-1, evenly spread: see `fault_of`), ``-x`` names the kinds (default ``mix``: every kind in
turn), ``-s`` is the client's stream id. Kinds (FAULT_KINDS):

    error    an Anthropic ``error`` event (overloaded_error) mid-stream, then a clean HTTP end
    drop     the connection closed mid-stream (FIN), no terminating chunk
    reset    the connection aborted mid-stream (RST), no terminating chunk
    eof      every event but ``message_stop``, then a clean HTTP end
    stall    some events, then silence (connection held open) until the peer gives up
    429      HTTP 429 with ``retry-after`` before the stream, on the first attempt only
    529      HTTP 529 overloaded before the stream, on the first attempt only
    429all   HTTP 429 with ``retry-after`` on every attempt
    529all   HTTP 529 on every attempt

Attempts are counted per model name (so per stream id) since the upstream started: the retry of a
``429``/``529`` stream gets the normal stream, so whether a stream recovers is decidable from its
id and the gateway's retry count alone. ``GET /_bench/stats`` answers the counts (requests,
faults written by kind, attempts by model).

The first text delta (or argument fragment) of every stream holds the marker ``T0K3N``: the load
generator measures time to first token as the time until that marker arrives, whatever the
framing of the proxy in between.

Run alone: ``python -m engine_bench.upstream --port 9100``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import signal
import socket
import struct
import sys

MARKER = "T0K3N"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SCENARIO = re.compile(r"-(?P<key>[nkp])(?P<val>\d+)")

_FAULTS = re.compile(r"-f(?P<pct>\d+)(?:-x(?P<kinds>[a-z0-9.]+))?-s(?P<sid>\d+)")

FAULT_KINDS = ("error", "drop", "reset", "eof", "stall", "429", "529", "429all", "529all")
TRANSIENT = frozenset({"429", "529"})       # the first attempt only: a retry succeeds
RETRY_AFTER = "0.1"                         # seconds, on every 429
STALL_MAX = 60.0                            # a stalled stream is closed after this at the latest

DEFAULT_TEXT_DELTAS = 200
DEFAULT_TOOL_CALLS = 2
DEFAULT_TOOL_FRAGMENTS = 50


def scenario(model: str) -> dict:
    """The parameters encoded in a model name (see the module docstring)."""
    kind = "tools" if "-tools" in (model or "") else "text"
    opts = {m.group("key"): int(m.group("val")) for m in _SCENARIO.finditer(model or "")}
    return {
        "kind": kind,
        "provider": "openai" if (model or "").startswith("gpt-") else "anthropic",
        "n": opts.get("n", DEFAULT_TEXT_DELTAS if kind == "text" else DEFAULT_TOOL_FRAGMENTS),
        "k": opts.get("k", DEFAULT_TOOL_CALLS),
        "pace": opts.get("p", 0) / 1000.0,
    }


def model_name(kind: str = "text", n: int | None = None, k: int | None = None, pace_ms: int = 0,
               fault_pct: int | None = None, fault_kinds: str = "mix", sid: int | None = None,
               provider: str = "anthropic") -> str:
    name = f"{'gpt' if provider == 'openai' else 'claude'}-bench-{kind}"
    if k is not None and kind == "tools":
        name += f"-k{k}"
    if n is not None:
        name += f"-n{n}"
    if pace_ms:
        name += f"-p{pace_ms}"
    if fault_pct is not None:
        name += f"-f{fault_pct}" + ("" if fault_kinds == "mix" else f"-x{fault_kinds}") + f"-s{sid or 0}"
    return name


def fault_kinds(spec: str | None) -> tuple:
    """``mix`` (or nothing): every kind; else the ``.``-separated kinds, in that order."""
    if not spec or spec == "mix":
        return FAULT_KINDS
    kinds = tuple(k for k in spec.replace(",", ".").split(".") if k)
    bad = [k for k in kinds if k not in FAULT_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown fault kind(s) {bad or spec!r}; known: {', '.join(FAULT_KINDS)} or mix")
    return kinds


def fault_plan(model: str) -> tuple | None:
    """(percent, kinds, stream id) from a model name, or None when it asks for no faults."""
    m = _FAULTS.search(model or "")
    if m is None:
        return None
    return int(m.group("pct")), fault_kinds(m.group("kinds")), int(m.group("sid"))


def fault_of(sid: int, pct: int, kinds: tuple) -> str | None:
    """The fault of stream `sid`, or None. Exactly floor(N * pct / 100) of the ids 0..N-1 are
    faulted, evenly spread (every 5th at 20 %); the faulted ones take the kinds in turn."""
    if (sid + 1) * pct // 100 == sid * pct // 100:
        return None
    return kinds[(sid * pct // 100) % len(kinds)]


def fault_for_attempt(kind: str | None, attempt: int) -> str | None:
    """What the upstream does on the `attempt`-th request (0 first) of a stream faulted `kind`."""
    if kind in TRANSIENT and attempt > 0:
        return None
    return kind


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
    """Each event as SSE bytes (``event: X\\ndata: {...}\\n\\n``), as Anthropic sends them; an
    OpenAI model's chunks as ``data: {...}\\n\\n`` then ``data: [DONE]``."""
    if scenario(model)["provider"] == "openai":
        return [f"data: {_dumps(ch)}\n\n".encode() for ch in chat_chunks(model)] + [b"data: [DONE]\n\n"]
    return [f"event: {ev['type']}\ndata: {_dumps(ev)}\n\n".encode() for ev in stream_events(model)]


_CHAT_ID = "chatcmpl-bench0000000000000000000001"


def chat_body(model: str) -> dict:
    """The non-stream Chat Completions body of a text scenario."""
    n = scenario(model)["n"]
    return {"id": _CHAT_ID, "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(_text_pieces(n))},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 42, "completion_tokens": n, "total_tokens": 42 + n}}


def chat_chunks(model: str) -> list[dict]:
    """The Chat Completions chunks of a text scenario: the role, one per text piece, the finish
    reason, then the usage (as with stream_options.include_usage)."""
    n = scenario(model)["n"]

    def chunk(delta, finish=None):
        return {"id": _CHAT_ID, "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": piece}) for piece in _text_pieces(n)]
    out.append(chunk({}, "stop"))
    out.append({"id": _CHAT_ID, "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                "choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": n, "total_tokens": 42 + n}})
    return out


_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n")
_KEEP = b"Connection: keep-alive\r\n\r\n"
_CLOSE = b"Connection: close\r\n\r\n"


class Reply:
    """One scenario's reply, prebuilt: the head, the body or the chunked frames."""
    __slots__ = ("stream", "head", "body", "chunks", "whole", "pace", "events", "model", "plan", "cut")

    def __init__(self, model: str, stream: bool):
        sc = scenario(model)
        self.stream = stream
        self.pace = sc["pace"]
        self.model = model
        self.plan = fault_plan(model)
        # where a mid-stream fault strikes: after message_start, the first block's start (and the
        # ping of a text stream) and about half of the deltas
        self.cut = 3 + max(sc["n"] // 2, 1) if sc["kind"] == "text" else 2 + max(sc["n"] // 2, 1)
        if stream:
            frames = sse_frames(model)
            self.events = len(frames)
            self.chunks = [b"%x\r\n%s\r\n" % (len(f), f) for f in frames] + [b"0\r\n\r\n"]
            self.whole = b"".join(self.chunks)
            self.head = _STREAM_HEAD
            self.body = b""
        else:
            self.events = 0
            openai = sc["provider"] == "openai"
            self.body = _dumps(chat_body(model) if openai else message_body(model)).encode()
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
            if head.startswith(b"get "):
                self._stats(b"\r\nconnection: close" in head)
                continue
            self._handle(body, b"\r\nconnection: close" in head)

    def _stats(self, close: bool):
        msg = _dumps(self.server.stats()).encode()
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s"
                             % (len(msg), _CLOSE if close else _KEEP, msg))
        if close:
            self.transport.close()

    def _handle(self, body: bytes, close: bool):
        self.server.requests += 1
        reply = self.server.reply_for(body)
        t = self.transport
        if reply is not None and reply.plan is not None:
            fault = self.server.fault_for(reply)
            if fault is not None:
                self._fault(reply, fault, close)
                return
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

    def _fault(self, reply: Reply, fault: str, close: bool):
        t = self.transport
        conn = _CLOSE if close else _KEEP
        if fault in ("429", "429all", "529", "529all"):
            if fault.startswith("429"):
                status, extra = b"429 Too Many Requests", b"retry-after: " + RETRY_AFTER.encode() + b"\r\n"
                err = {"type": "rate_limit_error", "message": "bench: rate limited (injected fault)"}
            else:
                status, extra = b"529 Overloaded", b""
                err = {"type": "overloaded_error", "message": "bench: overloaded (injected fault)"}
            msg = _dumps({"type": "error", "error": err}).encode()
            t.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n%s%s"
                    % (status, extra, len(msg), conn, msg))
            if close:
                t.close()
            return
        if not reply.stream:  # mid-stream faults of a non-stream request: the connection drops
            t.close()
            return
        t.write(reply.head + conn)
        self.busy = True
        asyncio.get_running_loop().create_task(self._faulted(reply, fault, close))

    async def _faulted(self, reply: Reply, fault: str, close: bool):
        t = self.transport
        chunks, cut, last = reply.chunks, reply.cut, reply.chunks[-1]
        if fault == "error":
            frame = _dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            frame = f"event: error\ndata: {frame}\n\n".encode()
            seq = chunks[:cut] + [b"%x\r\n%s\r\n" % (len(frame), frame), last]
        elif fault == "eof":
            seq = chunks[:-2] + [last]  # all but message_stop, then a clean end of the body
        else:  # drop, reset, stall
            seq = chunks[:cut]
        try:
            for i, c in enumerate(seq):
                if self.closed:
                    return
                if i and reply.pace:
                    await asyncio.sleep(reply.pace)
                t.write(c)
            if fault == "drop":
                t.close()
                return
            if fault == "reset":
                await asyncio.sleep(0.01)  # let the events before it leave first
                sock = t.get_extra_info("socket")
                if sock is not None:  # linger 0: the close sends RST, not FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                t.abort()
                return
            if fault == "stall":
                deadline = asyncio.get_running_loop().time() + STALL_MAX
                while not self.closed and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                t.close()
                return
        finally:
            self.busy = False
        if close:
            t.close()
        elif self.buf and not self.closed:
            self._process()

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
        self.attempts: dict = {}   # model name -> requests seen (fault plans only)
        self.faults: dict = {}     # fault kind -> times written

    def fault_for(self, reply: Reply) -> str | None:
        pct, kinds, sid = reply.plan
        attempt = self.attempts.get(reply.model, 0)
        self.attempts[reply.model] = attempt + 1
        fault = fault_for_attempt(fault_of(sid, pct, kinds), attempt)
        if fault is not None:
            self.faults[fault] = self.faults.get(fault, 0) + 1
        return fault

    def stats(self) -> dict:
        return {"requests": self.requests, "connections": self.connections, "faults": self.faults,
                "attempts": self.attempts}

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
            try:
                reply = self.cache[key] = Reply(model, stream)
            except ValueError:  # an unknown fault kind in the model name
                return None
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
    p = argparse.ArgumentParser(prog="python -m engine_bench.upstream", description=__doc__.split("\n")[0])
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
