"""A scriptable fake upstream LLM API server for end-to-end tests.

One ``FakeUpstream`` speaks both the Anthropic Messages API (``POST /v1/messages``,
``POST /v1/messages/count_tokens``) and the OpenAI API (``POST /v1/chat/completions``,
``POST /v1/responses``, ``GET /v1/models``).  It runs an aiohttp server on 127.0.0.1
(random free port) in a background thread with its own event loop, so synchronous
tests, async tests and a gateway running as a subprocess can all talk to it.

Typical use::

    with FakeUpstream() as up:
        up.enqueue(sse_reply(fixture("anthropic-text.sse"), chunk_size=7, delay=0.01))
        up.enqueue(error_reply(429, headers={"retry-after": "1"}))
        ...  # drive the gateway
        assert up.last.json["model"] == "claude-sonnet-4-5"
        assert up.last.headers["X-Api-Key"] == "sk-ant-upstream-secret"

Scripted replies are consumed in FIFO order, one per request (optionally only by
requests whose path matches ``path=``).  When nothing scripted matches, a default
reply is produced from the path and the request body (``stream``): see
``default_reply_for``.

Stream / body builders follow /work/shared/WIRE.md (A.3/A.4, B.3/B.4, C.3/C.4).
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from . import anthropic_rules

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"

DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
DEFAULT_OPENAI_MODEL = "gpt-4o-2024-08-06"
DEFAULT_TEXT_CHUNKS = ("Hello", " from the", " fake upstream.")
DEFAULT_CREATED = 1770933883  # fixed so snapshots are stable

__all__ = [
    "FakeUpstream",
    "RecordedRequest",
    "Reply",
    "JsonReply",
    "SseReply",
    "ErrorReply",
    "StallReply",
    "DisconnectReply",
    "CallableReply",
    "json_reply",
    "sse_reply",
    "sse_events",
    "parse_sse",
    "error_reply",
    "stall_reply",
    "disconnect_reply",
    "callable_reply",
    "fixture",
    "fixture_text",
    "fixture_json",
    "anthropic_message",
    "anthropic_stream_events",
    "anthropic_text_stream",
    "anthropic_tool_stream",
    "anthropic_error_body",
    "openai_chat_completion",
    "openai_chat_stream_events",
    "openai_chat_stream",
    "openai_error_body",
    "openai_response",
    "openai_responses_stream_events",
    "openai_responses_stream",
    "default_reply_for",
    "openai_refusal",
    "is_reasoning_model",
    "FIXTURES_DIR",
]


# --------------------------------------------------------------------------------------
# fixtures


def fixture(name: str) -> bytes:
    """Raw bytes of tests/fixtures/<name> (e.g. ``fixture("anthropic-text.sse")``)."""
    return (FIXTURES_DIR / name).read_bytes()


def fixture_text(name: str) -> str:
    return fixture(name).decode("utf-8")


def fixture_json(name: str) -> Any:
    return json.loads(fixture(name))


# --------------------------------------------------------------------------------------
# recorded requests


@dataclass
class RecordedRequest:
    """One request the fake received, in arrival order."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy  # case-insensitive: rec.headers["x-api-key"] / .get(...)
    body: bytes
    json: Any  # parsed body, or None when the body is empty or not JSON
    index: int = 0  # position in FakeUpstream.requests
    received_at: float = field(default_factory=time.monotonic)
    # set when the reply handler has finished (normally or not)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    # True when the client went away while we were still answering (stall / stream)
    client_disconnected: bool = False
    # the message of the 400 the real API gives this request (support/anthropic_rules.py), if any
    refused: str | None = None
    # (host, port) the request came from: one per connection of the client
    peer: tuple | None = None

    @property
    def query(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    @property
    def stream(self) -> bool:
        return isinstance(self.json, dict) and bool(self.json.get("stream"))

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def wait_done(self, timeout: float = 5.0) -> bool:
        return self.done.wait(timeout)


# --------------------------------------------------------------------------------------
# replies


class Reply:
    """Base class: ``respond`` produces the aiohttp response for one request."""

    async def respond(self, request: web.Request, rec: RecordedRequest, up: "FakeUpstream"):
        raise NotImplementedError


def _merge_headers(base: dict[str, str], extra: dict[str, str] | None) -> CIMultiDict:
    h = CIMultiDict(base)
    for k, v in (extra or {}).items():
        h[k] = str(v)
    return h


def _to_bytes(data: bytes | str | dict | list) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


class JsonReply(Reply):
    def __init__(self, body: Any, status: int = 200, headers: dict[str, str] | None = None):
        self.body = body
        self.status = status
        self.headers = headers

    def __repr__(self) -> str:
        return f"JsonReply(status={self.status})"

    async def respond(self, request, rec, up):
        headers = _merge_headers({"Content-Type": "application/json"}, up._auto_headers(rec))
        headers = _merge_headers(dict(headers), self.headers)
        return web.Response(status=self.status, body=_to_bytes(self.body), headers=headers)


class ErrorReply(JsonReply):
    """A JSON error. ``body=None`` → an error body in the dialect of the request path."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
                 message: str | None = None):
        super().__init__(body, status, headers)
        self.message = message

    def __repr__(self) -> str:
        return f"ErrorReply(status={self.status})"

    async def respond(self, request, rec, up):
        body = self.body
        if body is None:
            if up._dialect(rec) == "anthropic":
                body = anthropic_error_body(self.status, self.message)
            else:
                body = openai_error_body(self.status, self.message)
        return await JsonReply(body, self.status, self.headers).respond(request, rec, up)


class SseReply(Reply):
    def __init__(self, data: bytes | str, status: int = 200, chunk_size: int | str | None = None,
                 delay: float = 0.0, drop_after: int | None = None,
                 headers: dict[str, str] | None = None, first_byte_delay: float = 0.0,
                 end_delay: float = 0.0):
        self.data = _to_bytes(data)
        # seconds between the last event and the end of the chunked body, as an upstream that
        # writes them apart
        self.end_delay = end_delay
        self.status = status
        self.chunk_size = chunk_size
        self.delay = delay
        self.drop_after = drop_after
        self.headers = headers
        self.first_byte_delay = first_byte_delay

    def __repr__(self) -> str:
        return (f"SseReply({len(self.data)} bytes, chunk_size={self.chunk_size!r}, "
                f"delay={self.delay}, drop_after={self.drop_after})")

    def _chunks(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        if self.chunk_size == "event":
            parts = data.split(b"\n\n")
            out = [p + b"\n\n" for p in parts[:-1]]
            if parts[-1]:
                out.append(parts[-1])
            return out
        if self.chunk_size is None:
            return [data]
        n = int(self.chunk_size)
        if n <= 0:
            raise ValueError("chunk_size must be > 0")
        return [data[i:i + n] for i in range(0, len(data), n)]

    async def respond(self, request, rec, up):
        headers = _merge_headers(
            {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"},
            up._auto_headers(rec))
        headers = _merge_headers(dict(headers), self.headers)
        resp = web.StreamResponse(status=self.status, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        data = self.data if self.drop_after is None else self.data[: self.drop_after]
        if self.first_byte_delay:
            await asyncio.sleep(self.first_byte_delay)
        try:
            for i, chunk in enumerate(self._chunks(data)):
                if i and self.delay:
                    await asyncio.sleep(self.delay)
                if _closing(request):
                    rec.client_disconnected = True
                    return resp
                await resp.write(chunk)
        except (ConnectionError, RuntimeError):
            rec.client_disconnected = True
            return resp
        if self.drop_after is not None:
            # Abrupt end: no terminating zero-length chunk. close() flushes what was
            # already written, then closes the socket, so the client sees a truncated
            # chunked body (aiohttp: ClientPayloadError), not a clean end of stream.
            await asyncio.sleep(0.01)
            _kill_connection(request)
            return resp
        if self.end_delay:
            await asyncio.sleep(self.end_delay)
            if _closing(request):
                rec.client_disconnected = True
                return resp
        await resp.write_eof()
        return resp


class StallReply(Reply):
    """Send headers (unless before_headers) then nothing for ``seconds``.

    Afterwards write ``then`` (if any) and end the response normally."""

    def __init__(self, seconds: float, status: int = 200, headers: dict[str, str] | None = None,
                 content_type: str = "text/event-stream; charset=utf-8",
                 before_headers: bool = False, then: bytes | str | None = None):
        self.seconds = seconds
        self.status = status
        self.headers = headers
        self.content_type = content_type
        self.before_headers = before_headers
        self.then = None if then is None else _to_bytes(then)

    def __repr__(self) -> str:
        return f"StallReply({self.seconds}s, before_headers={self.before_headers})"

    async def _wait(self, request, rec, up) -> bool:
        """Sleep up to self.seconds; False if the client went away (or server stops)."""
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if _closing(request):
                rec.client_disconnected = True
                return False
            if up._stopping:
                return False
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        return True

    async def respond(self, request, rec, up):
        headers = _merge_headers({"Content-Type": self.content_type,
                                  "Cache-Control": "no-cache"}, up._auto_headers(rec))
        headers = _merge_headers(dict(headers), self.headers)
        resp = web.StreamResponse(status=self.status, headers=headers)
        resp.enable_chunked_encoding()
        if self.before_headers:
            if not await self._wait(request, rec, up):
                _kill_connection(request)
                return resp
            await resp.prepare(request)
        else:
            await resp.prepare(request)
            # (StreamResponse.prepare() puts the status line + headers on the wire now.)
            if not await self._wait(request, rec, up):
                _kill_connection(request)
                return resp
        try:
            if self.then:
                await resp.write(self.then)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            rec.client_disconnected = True
        return resp


class DisconnectReply(Reply):
    """Close the TCP connection without sending any response (connection reset)."""

    def __repr__(self) -> str:
        return "DisconnectReply()"

    async def respond(self, request, rec, up):
        _kill_connection(request, abort=True)
        return web.Response(status=500)  # never sent: the transport is gone


class CallableReply(Reply):
    """``fn(record) -> reply`` (sync or async) for dynamic answers.

    The result may be a Reply, a dict/list (→ json_reply), str/bytes (→ sse_reply)
    or None (→ the default reply for the path)."""

    def __init__(self, fn: Callable[[RecordedRequest], Any]):
        self.fn = fn

    def __repr__(self) -> str:
        return f"CallableReply({getattr(self.fn, '__name__', self.fn)!r})"

    async def respond(self, request, rec, up):
        result = self.fn(rec)
        if inspect.isawaitable(result):
            result = await result
        reply = _coerce_reply(result) if result is not None else default_reply_for(rec, up.flavor)
        return await reply.respond(request, rec, up)


def _closing(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()


def _kill_connection(request: web.Request, abort: bool = False) -> None:
    t = request.transport
    if t is None:
        return
    try:
        request.protocol.force_close()  # don't try keep-alive on this connection
    except Exception:  # pragma: no cover - private API differences
        pass
    if abort:
        t.abort()
    else:
        t.close()


def _coerce_reply(obj: Any) -> Reply:
    if isinstance(obj, Reply):
        return obj
    if callable(obj):
        return CallableReply(obj)
    if isinstance(obj, (dict, list)):
        return JsonReply(obj)
    if isinstance(obj, (str, bytes, bytearray)):
        return SseReply(obj)
    raise TypeError(f"cannot use {obj!r} as a reply")


# plain helper constructors ------------------------------------------------------------


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JsonReply:
    """JSON body (dict/list, or str/bytes sent as-is) with content-type application/json."""
    return JsonReply(body, status, headers)


def sse_reply(data: bytes | str, status: int = 200, chunk_size: int | str | None = None,
              delay: float = 0.0, drop_after: int | None = None,
              headers: dict[str, str] | None = None, first_byte_delay: float = 0.0,
              end_delay: float = 0.0) -> SseReply:
    """Stream ``data`` verbatim as text/event-stream (chunked transfer encoding).

    chunk_size: bytes per write (None = one write; "event" = one write per SSE event);
    delay: seconds between writes; drop_after: close the TCP connection abruptly after
    that many body bytes (no clean end of the chunked body); first_byte_delay: seconds
    between the headers and the first body byte; end_delay: seconds between the last
    event and the end of the chunked body."""
    return SseReply(data, status, chunk_size, delay, drop_after, headers, first_byte_delay, end_delay)


def error_reply(status: int, body: Any = None, headers: dict[str, str] | None = None,
                message: str | None = None) -> ErrorReply:
    """Error response; ``body=None`` → an Anthropic- or OpenAI-shaped error for the path,
    e.g. ``error_reply(429, headers={"retry-after": "2"})``, ``error_reply(529)``."""
    return ErrorReply(status, body, headers, message)


def stall_reply(seconds: float, status: int = 200, headers: dict[str, str] | None = None,
                before_headers: bool = False, then: bytes | str | None = None,
                content_type: str = "text/event-stream; charset=utf-8") -> StallReply:
    """Send the headers, then nothing for ``seconds`` (then ``then``, then end).
    ``before_headers=True`` stalls before even the status line."""
    return StallReply(seconds, status, headers, content_type, before_headers, then)


def disconnect_reply() -> DisconnectReply:
    """Drop the connection without any response bytes."""
    return DisconnectReply()


def callable_reply(fn: Callable[[RecordedRequest], Any]) -> CallableReply:
    return CallableReply(fn)


# --------------------------------------------------------------------------------------
# SSE text


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_events(events: Iterable[dict | str], event_lines: bool = True, done: bool = False) -> str:
    """SSE text from payload dicts: ``event: <type>\\ndata: <json>\\n\\n`` per event
    (``event_lines=False``: ``data:`` lines only, as in OpenAI Chat streams).
    A str item is emitted verbatim (for hand-made oddities). ``done=True`` appends
    ``data: [DONE]\\n\\n``."""
    out: list[str] = []
    for ev in events:
        if isinstance(ev, str):
            out.append(ev)
            continue
        lines = ""
        if event_lines and isinstance(ev, dict) and "type" in ev:
            lines += f"event: {ev['type']}\n"
        lines += f"data: {_dumps(ev)}\n\n"
        out.append(lines)
    if done:
        out.append("data: [DONE]\n\n")
    return "".join(out)


def parse_sse(data: bytes | str) -> list[dict]:
    """Parse SSE text into ``[{"event": str|None, "data": str}]`` (data lines joined by
    newline). Handy for asserting what a gateway streamed back."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    data = data.replace("\r\n", "\n").replace("\r", "\n")
    events: list[dict] = []
    ev: str | None = None
    buf: list[str] = []
    seen = False
    for line in data.split("\n"):
        if line == "":
            if seen:
                events.append({"event": ev, "data": "\n".join(buf)})
            ev, buf, seen = None, [], False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            ev, seen = value, True
        elif name == "data":
            buf.append(value)
            seen = True
    if seen:
        events.append({"event": ev, "data": "\n".join(buf)})
    return events


# --------------------------------------------------------------------------------------
# Anthropic builders (WIRE.md A.3 / A.4 / A.5)

def _fake_id(prefix: str, n: int = 1) -> str:
    """Deterministic ids (stable snapshots): ``msg_fake0001``, ``toolu_fake0002``…
    Pass explicit ids to builders when a test needs distinct ones."""
    return f"{prefix}fake{n:04d}"


def _anthropic_usage(usage: dict | None, output_tokens: int) -> dict:
    u = {
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    if usage:
        u.update(usage)
    return u


def _join(x: str | Sequence[str] | None) -> str:
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    return "".join(x)


def _chunks_of(x: str | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x] if x else []
    return list(x)


def _final_block(block: dict) -> dict:
    """A stream-spec block (text/thinking as chunk lists, tool_use with partial_json)
    turned into its non-stream form."""
    b = dict(block)
    t = b.get("type")
    if t == "text":
        b["text"] = _join(b.get("text"))
    elif t == "thinking":
        b["thinking"] = _join(b.get("thinking"))
        b.setdefault("signature", "")
    elif t in ("tool_use", "server_tool_use"):
        if "partial_json" in b:
            raw = _join(b.pop("partial_json"))
            b["input"] = json.loads(raw) if raw.strip() else {}
        b.setdefault("input", {})
    return b


def anthropic_message(content_blocks: str | Sequence[dict] = "Hello from the fake upstream.",
                      stop_reason: str | None = "end_turn", usage: dict | None = None, *,
                      model: str = DEFAULT_ANTHROPIC_MODEL, id: str | None = None,
                      stop_sequence: str | None = None, **extra: Any) -> dict:
    """Non-streaming Messages response body (A.3). ``content_blocks`` may be a str
    (one text block) or blocks; stream-style specs (text as list of chunks, tool_use
    with ``partial_json`` fragments) are accepted and joined."""
    if isinstance(content_blocks, str):
        content_blocks = [{"type": "text", "text": content_blocks}]
    content = [_final_block(b) for b in content_blocks]
    for i, b in enumerate(content):
        if b.get("type") in ("tool_use", "server_tool_use") and "id" not in b:
            b["id"] = _fake_id("toolu_" if b["type"] == "tool_use" else "srvtoolu_", i + 1)
    body = {
        "model": model,
        "id": id or _fake_id("msg_"),
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _anthropic_usage(usage, 29),
    }
    body.update(extra)
    return body


def anthropic_stream_events(content_blocks: Sequence[dict], stop_reason: str | None = "end_turn",
                            usage: dict | None = None, *, model: str = DEFAULT_ANTHROPIC_MODEL,
                            id: str | None = None, stop_sequence: str | None = None,
                            ping: bool = True, message_stop: bool = True,
                            final_usage: dict | None = None) -> list[dict]:
    """Event dicts of a Messages stream (A.4) for the given blocks.

    Block specs: ``{"type":"text","text": "..." | [chunks]}``,
    ``{"type":"thinking","thinking": "..." | [chunks], "signature": "..."}``,
    ``{"type":"tool_use","id":...,"name":...,"partial_json":[fragments]}`` (or ``input``:
    dict → one fragment), ``{"type":"redacted_thinking","data":...}``; any other block is
    sent whole in its content_block_start. ``usage`` overrides fields of message_start's
    usage (and ``output_tokens`` is the final count in message_delta); ``final_usage``
    replaces message_delta.usage entirely."""
    usage = dict(usage or {})
    final_out = usage.pop("output_tokens", None)
    start_usage = _anthropic_usage(usage, 1)
    events: list[dict] = [{
        "type": "message_start",
        "message": {
            "model": model,
            "id": id or _fake_id("msg_"),
            "type": "message",
            "role": "assistant",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        },
    }]
    n_deltas = 0
    for i, block in enumerate(content_blocks):
        t = block.get("type")
        if t == "text":
            start = {k: v for k, v in block.items() if k != "text"}
            start["text"] = ""
            events.append({"type": "content_block_start", "index": i, "content_block": start})
            if ping and i == 0:
                events.append({"type": "ping"})
            for c in _chunks_of(block.get("text")):
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "text_delta", "text": c}})
                n_deltas += 1
        elif t == "thinking":
            events.append({"type": "content_block_start", "index": i,
                           "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            if ping and i == 0:
                events.append({"type": "ping"})
            for c in _chunks_of(block.get("thinking")):
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "thinking_delta", "thinking": c}})
                n_deltas += 1
            if block.get("signature"):
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "signature_delta",
                                         "signature": block["signature"]}})
        elif t in ("tool_use", "server_tool_use"):
            start = {k: v for k, v in block.items() if k not in ("partial_json", "input")}
            start.setdefault("id", _fake_id("toolu_" if t == "tool_use" else "srvtoolu_", i + 1))
            start["input"] = {}
            events.append({"type": "content_block_start", "index": i, "content_block": start})
            if ping and i == 0:
                events.append({"type": "ping"})
            if "partial_json" in block:
                frags = _chunks_of(block["partial_json"]) or [""]
            else:
                frags = ["", _dumps(block.get("input", {}))]
            for f in frags:
                events.append({"type": "content_block_delta", "index": i,
                               "delta": {"type": "input_json_delta", "partial_json": f}})
                n_deltas += 1
        else:
            events.append({"type": "content_block_start", "index": i, "content_block": dict(block)})
        events.append({"type": "content_block_stop", "index": i})
    if ping and not content_blocks:
        events.append({"type": "ping"})
    out_tokens = final_out if final_out is not None else max(1, n_deltas) + 5
    delta_usage = final_usage if final_usage is not None else {"output_tokens": out_tokens}
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                   "usage": delta_usage})
    if message_stop:
        events.append({"type": "message_stop"})
    return events


def anthropic_text_stream(text_chunks: Sequence[str] = DEFAULT_TEXT_CHUNKS, *,
                          model: str = DEFAULT_ANTHROPIC_MODEL, stop_reason: str = "end_turn",
                          usage: dict | None = None, id: str | None = None,
                          ping: bool = True) -> str:
    """SSE text of a one-text-block Messages stream."""
    return sse_events(anthropic_stream_events(
        [{"type": "text", "text": list(text_chunks)}], stop_reason, usage,
        model=model, id=id, ping=ping))


def _tool_blocks(calls: Sequence[tuple], text=None, thinking=None, signature=None) -> list[dict]:
    blocks: list[dict] = []
    if thinking is not None:
        blocks.append({"type": "thinking", "thinking": thinking,
                       "signature": signature or "EqQBCkYIBxgCKkBfakesignature=="})
    if text is not None:
        blocks.append({"type": "text", "text": text})
    for call in calls:
        call_id, name, frags = call
        if isinstance(frags, dict):
            frags = ["", _dumps(frags)]
        elif isinstance(frags, str):
            frags = [frags]
        blocks.append({"type": "tool_use", "id": call_id, "name": name,
                       "partial_json": list(frags)})
    return blocks


def anthropic_tool_stream(calls: Sequence[tuple[str, str, Sequence[str] | dict]], text=None,
                          thinking=None, signature: str | None = None,
                          stop_reason: str = "tool_use", *, model: str = DEFAULT_ANTHROPIC_MODEL,
                          usage: dict | None = None, id: str | None = None,
                          ping: bool = True) -> str:
    """SSE text: [thinking block] [text block] then one tool_use block per
    ``(id, name, [partial_json fragments] | input dict)``."""
    return sse_events(anthropic_stream_events(
        _tool_blocks(calls, text, thinking, signature), stop_reason, usage,
        model=model, id=id, ping=ping))


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}


def anthropic_error_body(status: int, message: str | None = None,
                         error_type: str | None = None) -> dict:
    et = error_type or _ANTHROPIC_ERROR_TYPES.get(
        status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    msg = message or {"overloaded_error": "Overloaded",
                      "rate_limit_error": "Number of requests has exceeded your rate limit"
                      }.get(et, f"fake upstream error {status}")
    return {"type": "error", "error": {"type": et, "message": msg},
            "request_id": _fake_id("req_")}


# --------------------------------------------------------------------------------------
# OpenAI Chat Completions builders (WIRE.md B.3 / B.4 / B.5)


def _openai_usage(usage: dict | None, prompt: int = 14, completion: int = 30) -> dict:
    u = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }
    if usage:
        u.update(usage)
        if "total_tokens" not in usage:
            u["total_tokens"] = u["prompt_tokens"] + u["completion_tokens"]
    return u


def openai_chat_completion(content: str | None = "Hello from the fake upstream.",
                           tool_calls: Sequence[tuple[str, str, str | dict]] | None = None,
                           finish_reason: str | None = None, usage: dict | None = None, *,
                           model: str = DEFAULT_OPENAI_MODEL, id: str | None = None,
                           refusal: str | None = None, **extra: Any) -> dict:
    """Non-streaming chat.completion body (B.3). tool_calls: ``(id, name, arguments)``
    with arguments a JSON string or a dict (encoded)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function",
             "function": {"name": name,
                          "arguments": args if isinstance(args, str) else _dumps(args)}}
            for cid, name, args in tool_calls]
    message["refusal"] = refusal
    message["annotations"] = []
    if finish_reason is None:
        finish_reason = "tool_calls" if tool_calls else "stop"
    body = {
        "id": id or _fake_id("chatcmpl-"),
        "object": "chat.completion",
        "created": DEFAULT_CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": _openai_usage(usage),
        "service_tier": "default",
        "system_fingerprint": "fp_fake000000",
    }
    body.update(extra)
    return body


def openai_chat_stream_events(text_chunks: Sequence[str] | None = DEFAULT_TEXT_CHUNKS,
                              tool_calls: Sequence[tuple[str, str, Sequence[str] | str | dict]] | None = None,
                              finish_reason: str | None = None, *,
                              model: str = DEFAULT_OPENAI_MODEL, id: str | None = None,
                              include_usage: bool = True, usage: dict | None = None,
                              refusal_chunks: Sequence[str] | None = None,
                              first_tool_index: int = 0) -> list[dict]:
    """chat.completion.chunk dicts (B.4): role chunk, content deltas, tool-call deltas
    (id/type/name only in the first delta of each index, ``arguments: ""``), the
    finish_reason chunk with ``delta: {}`` and (include_usage) the ``choices: []`` usage
    chunk. tool_calls: ``(id, name, [argument fragments] | str | dict)``."""
    cid = id or _fake_id("chatcmpl-")
    base = {"id": cid, "object": "chat.completion.chunk", "created": DEFAULT_CREATED,
            "model": model, "system_fingerprint": "fp_fake000000"}

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    text_chunks = list(text_chunks or [])
    has_text = bool(text_chunks) or not tool_calls
    events = [chunk({"role": "assistant", "content": "" if has_text else None, "refusal": None})]
    for c in text_chunks:
        events.append(chunk({"content": c}))
    for c in refusal_chunks or []:
        events.append(chunk({"refusal": c}))
    for n, (call_id, name, args) in enumerate(tool_calls or []):
        idx = first_tool_index + n
        if isinstance(args, dict):
            frags = [_dumps(args)]
        elif isinstance(args, str):
            frags = [args]
        else:
            frags = list(args)
        events.append(chunk({"tool_calls": [{"index": idx, "id": call_id, "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        for f in frags:
            events.append(chunk({"tool_calls": [{"index": idx, "function": {"arguments": f}}]}))
    if finish_reason is None:
        finish_reason = "tool_calls" if tool_calls else "stop"
    events.append(chunk({}, finish_reason))
    if include_usage:
        u = {"prompt_tokens": 14, "completion_tokens": 30, "total_tokens": 44,
             "completion_tokens_details": {"reasoning_tokens": 0}}
        if usage:
            u.update(usage)
            if "total_tokens" not in usage:
                u["total_tokens"] = u["prompt_tokens"] + u["completion_tokens"]
        events.append({**base, "choices": [], "usage": u})
    return events


def openai_chat_stream(text_chunks: Sequence[str] | None = DEFAULT_TEXT_CHUNKS,
                       tool_calls: Sequence[tuple[str, str, Sequence[str] | str | dict]] | None = None,
                       finish_reason: str | None = None, *, model: str = DEFAULT_OPENAI_MODEL,
                       id: str | None = None, include_usage: bool = True,
                       usage: dict | None = None, done: bool = True,
                       refusal_chunks: Sequence[str] | None = None) -> str:
    """SSE text (data-only lines, ``data: [DONE]`` at the end unless done=False)."""
    return sse_events(openai_chat_stream_events(
        text_chunks, tool_calls, finish_reason, model=model, id=id,
        include_usage=include_usage, usage=usage, refusal_chunks=refusal_chunks),
        event_lines=False, done=done)


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("service_unavailable_error", "server_is_overloaded"),
}


def openai_error_body(status: int, message: str | None = None, error_type: str | None = None,
                      code: str | None = None, param: str | None = None) -> dict:
    t, c = _OPENAI_ERRORS.get(status, ("server_error" if status >= 500
                                       else "invalid_request_error", None))
    return {"error": {"message": message or f"fake upstream error {status}",
                      "type": error_type or t, "param": param, "code": code or c}}


# --------------------------------------------------------------------------------------
# OpenAI Responses builders (WIRE.md C.3 / C.4)


def _responses_usage(usage: dict | None) -> dict:
    u = {"input_tokens": 299, "input_tokens_details": {"cached_tokens": 0},
         "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 0},
         "total_tokens": 311}
    if usage:
        u.update(usage)
        if "total_tokens" not in usage:
            u["total_tokens"] = u["input_tokens"] + u["output_tokens"]
    return u


def _response_obj(id: str, model: str, status: str, output: list, usage: dict | None,
                  **extra: Any) -> dict:
    body = {
        "id": id, "object": "response", "created_at": DEFAULT_CREATED, "status": status,
        "background": False, "error": None, "incomplete_details": None, "instructions": None,
        "max_output_tokens": None, "max_tool_calls": None, "model": model, "output": output,
        "parallel_tool_calls": True, "previous_response_id": None, "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None}, "safety_identifier": None,
        "service_tier": "default", "store": False, "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
        "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
        "usage": usage, "user": None, "metadata": {},
    }
    body.update(extra)
    return body


def openai_response(text: str | None = "Hello from the fake upstream.",
                    function_calls: Sequence[tuple[str, str, str | dict]] | None = None, *,
                    model: str = DEFAULT_OPENAI_MODEL, id: str | None = None,
                    usage: dict | None = None, status: str = "completed", **extra: Any) -> dict:
    """Non-streaming Responses API object (C.3). function_calls: ``(call_id, name, args)``."""
    rid = id or _fake_id("resp_")
    output: list[dict] = []
    if text is not None:
        output.append({"id": _fake_id("msg_", len(output) + 1), "type": "message", "status": "completed",
                       "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                                    "text": text}], "role": "assistant"})
    for call_id, name, args in function_calls or []:
        output.append({"id": _fake_id("fc_", len(output) + 1), "type": "function_call", "status": "completed",
                       "arguments": args if isinstance(args, str) else _dumps(args),
                       "call_id": call_id, "name": name})
    return _response_obj(rid, model, status, output, _responses_usage(usage), **extra)


def openai_responses_stream_events(text_chunks: Sequence[str] | None = DEFAULT_TEXT_CHUNKS,
                                   function_calls: Sequence[tuple[str, str, Sequence[str] | str | dict]] | None = None,
                                   *, model: str = DEFAULT_OPENAI_MODEL, id: str | None = None,
                                   usage: dict | None = None,
                                   incomplete_reason: str | None = None) -> list[dict]:
    """Responses stream event dicts (C.4) with sequence_number from 0: created,
    in_progress, a message item (if text_chunks) with content_part / output_text
    events, function_call items with arguments deltas, then response.completed (or
    response.incomplete with ``incomplete_reason``)."""
    rid = id or _fake_id("resp_")
    seq = itertools.count(0)
    events: list[dict] = []

    def ev(type_: str, **kw: Any) -> None:
        events.append({"type": type_, "sequence_number": next(seq), **kw})

    ev("response.created", response=_response_obj(rid, model, "in_progress", [], None))
    ev("response.in_progress", response=_response_obj(rid, model, "in_progress", [], None))
    output: list[dict] = []
    text_chunks = list(text_chunks or [])
    oi = 0
    if text_chunks:
        mid = _fake_id("msg_", oi + 1)
        ev("response.output_item.added", output_index=oi,
           item={"id": mid, "type": "message", "status": "in_progress", "content": [],
                 "role": "assistant"})
        ev("response.content_part.added", item_id=mid, output_index=oi, content_index=0,
           part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""})
        for c in text_chunks:
            ev("response.output_text.delta", item_id=mid, output_index=oi, content_index=0,
               delta=c, logprobs=[])
        full = "".join(text_chunks)
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": full}
        ev("response.output_text.done", item_id=mid, output_index=oi, content_index=0,
           text=full, logprobs=[])
        ev("response.content_part.done", item_id=mid, output_index=oi, content_index=0,
           part=part)
        item = {"id": mid, "type": "message", "status": "completed", "content": [part],
                "role": "assistant"}
        ev("response.output_item.done", output_index=oi, item=item)
        output.append(item)
        oi += 1
    for call_id, name, args in function_calls or []:
        if isinstance(args, dict):
            frags = [_dumps(args)]
        elif isinstance(args, str):
            frags = [args]
        else:
            frags = list(args)
        fid = _fake_id("fc_", oi + 1)
        ev("response.output_item.added", output_index=oi,
           item={"id": fid, "type": "function_call", "status": "in_progress", "arguments": "",
                 "call_id": call_id, "name": name})
        for f in frags:
            ev("response.function_call_arguments.delta", item_id=fid, output_index=oi, delta=f)
        full = "".join(frags)
        ev("response.function_call_arguments.done", item_id=fid, output_index=oi, arguments=full)
        item = {"id": fid, "type": "function_call", "status": "completed", "arguments": full,
                "call_id": call_id, "name": name}
        ev("response.output_item.done", output_index=oi, item=item)
        output.append(item)
        oi += 1
    if incomplete_reason:
        ev("response.incomplete", response=_response_obj(
            rid, model, "incomplete", output, _responses_usage(usage),
            incomplete_details={"reason": incomplete_reason}))
    else:
        ev("response.completed", response=_response_obj(
            rid, model, "completed", output, _responses_usage(usage)))
    return events


def openai_responses_stream(text_chunks: Sequence[str] | None = DEFAULT_TEXT_CHUNKS,
                            function_calls: Sequence[tuple[str, str, Sequence[str] | str | dict]] | None = None,
                            *, model: str = DEFAULT_OPENAI_MODEL, id: str | None = None,
                            usage: dict | None = None,
                            incomplete_reason: str | None = None) -> str:
    """SSE text (``event:`` lines, no [DONE]) of a Responses stream."""
    return sse_events(openai_responses_stream_events(
        text_chunks, function_calls, model=model, id=id, usage=usage,
        incomplete_reason=incomplete_reason))


# --------------------------------------------------------------------------------------
# default replies


def _route(path: str) -> str | None:
    p = path.rstrip("/")
    for suffix, name in (("/messages/count_tokens", "count_tokens"), ("/messages", "messages"),
                         ("/chat/completions", "chat"), ("/responses", "responses"),
                         ("/models", "models")):
        if p.endswith(suffix):
            return name
    return None


_OPENAI_MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5"]
_ANTHROPIC_MODELS = [("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5"),
                     ("claude-haiku-4-5-20251001", "Claude Haiku 4.5"),
                     ("claude-opus-4-1-20250805", "Claude Opus 4.1")]


def default_reply_for(rec: RecordedRequest, flavor: str | None = None) -> Reply:
    """The reply used when nothing is scripted: a plain text answer in the API of the
    path (stream or not, following ``stream`` in the body)."""
    route = _route(rec.path)
    body = rec.json if isinstance(rec.json, dict) else {}
    model = body.get("model")
    if route == "messages" and rec.method == "POST":
        m = model or DEFAULT_ANTHROPIC_MODEL
        if rec.stream:
            return SseReply(anthropic_text_stream(model=m))
        return JsonReply(anthropic_message(model=m))
    if route == "count_tokens" and rec.method == "POST":
        return JsonReply({"input_tokens": 12})
    if route == "chat" and rec.method == "POST":
        m = model or DEFAULT_OPENAI_MODEL
        if rec.stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return SseReply(openai_chat_stream(model=m, include_usage=include_usage))
        return JsonReply(openai_chat_completion(model=m))
    if route == "responses" and rec.method == "POST":
        m = model or DEFAULT_OPENAI_MODEL
        if rec.stream:
            return SseReply(openai_responses_stream(model=m))
        return JsonReply(openai_response(model=m))
    if route == "models" and rec.method == "GET":
        dialect = _dialect_of(rec, flavor)
        if dialect == "anthropic":
            data = [{"type": "model", "id": mid, "display_name": dn,
                     "created_at": "2025-09-29T00:00:00Z"} for mid, dn in _ANTHROPIC_MODELS]
            return JsonReply({"data": data, "has_more": False, "first_id": data[0]["id"],
                              "last_id": data[-1]["id"]})
        return JsonReply({"object": "list", "data": [
            {"id": mid, "object": "model", "created": DEFAULT_CREATED, "owned_by": "openai"}
            for mid in _OPENAI_MODELS]})
    return ErrorReply(404, message=f"fake upstream: no route for {rec.method} {rec.path}")


# What api.openai.com refuses on /chat/completions, by model family: reasoning models (o1, o3,
# o4-mini, gpt-5 and later, not the gpt-5-chat aliases) take max_completion_tokens only and no
# sampling values but the defaults; other models take no reasoning_effort.
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_REASONING_EFFORTS = {"minimal", "low", "medium", "high"}
_SAMPLING_DEFAULTS = {"temperature": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0}


def is_reasoning_model(model: str) -> bool:
    m = (model or "").lower()
    return m.startswith(_REASONING_PREFIXES) and "-chat" not in m


def openai_refusal(body: dict) -> ErrorReply | None:
    """The 400 api.openai.com gives a chat request its model does not accept, else None."""
    def refuse(param, message, code):
        return ErrorReply(400, {"error": {"message": message, "type": "invalid_request_error",
                                          "param": param, "code": code}})
    if not isinstance(body, dict):
        return None
    if not is_reasoning_model(body.get("model")):
        if body.get("reasoning_effort") is not None:
            return refuse("reasoning_effort", "Unrecognized request argument supplied: reasoning_effort",
                          "unsupported_parameter")
        return None
    if "max_tokens" in body:
        return refuse("max_tokens", "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                    "Use 'max_completion_tokens' instead.", "unsupported_parameter")
    for name, default in _SAMPLING_DEFAULTS.items():
        if body.get(name) is not None and body[name] != default:
            return refuse(name, f"Unsupported value: '{name}' does not support {body[name]} with this model. "
                                f"Only the default ({default}) value is supported.", "unsupported_value")
    for name in ("logprobs", "top_logprobs", "logit_bias"):
        if body.get(name):
            return refuse(name, f"Unsupported parameter: '{name}' is not supported with this model.",
                          "unsupported_parameter")
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in _REASONING_EFFORTS:
        return refuse("reasoning_effort", f"Unsupported value: 'reasoning_effort' does not support {effort!r} "
                                          "with this model. Supported values are: 'minimal', 'low', 'medium', "
                                          "and 'high'.", "unsupported_value")
    return None


def _dialect_of(rec: RecordedRequest, flavor: str | None) -> str:
    route = _route(rec.path)
    if route in ("messages", "count_tokens"):
        return "anthropic"
    if route in ("chat", "responses"):
        return "openai"
    if flavor in ("anthropic", "openai"):
        return flavor
    if "anthropic-version" in rec.headers or "x-api-key" in rec.headers:
        return "anthropic"
    return "openai"


# --------------------------------------------------------------------------------------
# the server


class FakeUpstream:
    """Scriptable fake upstream on http://127.0.0.1:<random port>.

    flavor: "anthropic" | "openai" | None — only decides the shape of ambiguous answers
    (GET /v1/models, error bodies for unknown paths); the Messages / Chat / Responses
    paths always answer in their own API."""

    def __init__(self, flavor: str | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 auto_request_id: bool = True, enforce_rules: bool = True):
        self.flavor = flavor
        # Messages requests the real API refuses for the model's generation get its 400
        # (support/anthropic_rules.py); the scripted reply, if any, is left for the next request
        self.enforce_rules = enforce_rules
        self.host = host
        self._port = port
        self.auto_request_id = auto_request_id
        self.requests: list[RecordedRequest] = []
        self._queue: list[tuple[str | None, Reply]] = []
        self._default: Reply | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stopping = False
        self._req_counter = itertools.count(1)

    # lifecycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FakeUpstream not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "FakeUpstream":
        if self.running:
            return self
        self._stopping = False
        self._started.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, name=f"FakeUpstream-{id(self):x}",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("FakeUpstream did not start within 10 s")
        if self._start_error is not None:
            raise RuntimeError("FakeUpstream failed to start") from self._start_error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # pragma: no cover - surfaced by start()
            self._start_error = e
            self._started.set()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._cleanup())
            finally:
                loop.close()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5,
                               handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        await site.start()
        self._runner = runner
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self._port = sock.getsockname()[1]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        if not self.running or self._loop is None:
            return
        self._stopping = True
        loop = self._loop
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]
        self._thread = None
        self._loop = None

    def __enter__(self) -> "FakeUpstream":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # scripting ------------------------------------------------------------------------

    def enqueue(self, *replies: Any, path: str | None = None) -> "FakeUpstream":
        """Queue replies, consumed one per request in order. ``path`` restricts an entry
        to requests whose path ends with it (e.g. "/v1/messages"); entries without a
        path match any request. Accepts Reply objects, callables, dicts (JSON) and
        str/bytes (SSE body)."""
        with self._lock:
            for r in replies:
                self._queue.append((path, _coerce_reply(r)))
        return self

    add = enqueue  # alias

    def set_default(self, reply: Any | None) -> None:
        """Reply used when the queue has nothing for a request (None → built-in default).
        Unlike queued replies it is reused for every request."""
        with self._lock:
            self._default = None if reply is None else _coerce_reply(reply)

    @property
    def pending(self) -> int:
        """Number of scripted replies not consumed yet."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget recorded requests, scripted replies and the default override."""
        with self._lock:
            self.requests.clear()
            self._queue.clear()
            self._default = None

    # inspection -----------------------------------------------------------------------

    @property
    def last(self) -> RecordedRequest:
        with self._lock:
            if not self.requests:
                raise AssertionError("FakeUpstream received no request")
            return self.requests[-1]

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.rstrip("/").endswith(path_suffix)]

    def wait_for_requests(self, n: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests were recorded (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"FakeUpstream: expected {n} request(s), got {len(self.requests)}")
                self._cond.wait(left)
            return list(self.requests)

    async def async_wait_for_requests(self, n: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        return await asyncio.get_running_loop().run_in_executor(
            None, self.wait_for_requests, n, timeout)

    # internals ------------------------------------------------------------------------

    def _dialect(self, rec: RecordedRequest) -> str:
        return _dialect_of(rec, self.flavor)

    def _auto_headers(self, rec: RecordedRequest) -> dict[str, str]:
        if not self.auto_request_id:
            return {}
        n = rec.index + 1
        if self._dialect(rec) == "anthropic":
            return {"request-id": f"req_fake{n:06d}"}
        return {"x-request-id": f"req_fake{n:06d}"}

    def _take(self, rec: RecordedRequest) -> Reply | None:
        path = rec.path.rstrip("/")
        for i, (p, reply) in enumerate(self._queue):
            if p is None or path.endswith(p.rstrip("/")):
                del self._queue[i]
                return reply
        return self._default

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        parsed = None
        if body:
            try:
                parsed = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                parsed = None
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            json=parsed,
            peer=request.transport.get_extra_info("peername") if request.transport else None,
        )
        if self.enforce_rules and request.method == "POST" and _route(request.path) in ("messages", "count_tokens"):
            rec.refused = anthropic_rules.refusal(parsed)
        with self._cond:
            rec.index = len(self.requests)
            self.requests.append(rec)
            # the real APIs refuse such a request before anything scripted could answer it
            if rec.refused:
                reply = ErrorReply(400, anthropic_error_body(400, rec.refused))
            else:
                refused = openai_refusal(parsed) if _route(rec.path) == "chat" and request.method == "POST" else None
                reply = refused or self._take(rec)
            self._cond.notify_all()
        if reply is None:
            reply = default_reply_for(rec, self.flavor)
        try:
            return await reply.respond(request, rec, self)
        finally:
            rec.done.set()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
