"""The floor: a hand-written translating gateway, Chat Completions to Anthropic Messages only.

What a plain-Python gateway that translates pays at least, measured beside the byte proxy
(proxy.py) and `engine serve` in the same run. It is an aiohttp server on uvloop doing the work
no translating gateway can skip: the client's body decoded (msgspec) and checked against the
schema the gateway checks (openai/chat.request, jsonschema-rs), the Messages body written out in
Python and encoded, sent upstream; the answer decoded and written back as Chat Completions, or
each stream event decoded and re-encoded as a chunk, the chunks of one read in one write.
Nothing else: no routing, gateway keys, logging, metrics, retries, upstream-event checks,
translated upstream errors or mapping specs. So byte proxy -> floor is what translating costs at
the least, and floor -> engine what the spec interpreter and the gateway's features add.

It translates what the bench's requests hold (system and developer text, user and assistant
text, tool calls and their results, function tools, tool_choice, the sampling fields) and
answers no other path. Upstream, `--client engine` (what the bench runs) sends through the
gateway's own client (engine/server/httpclient.py), as `engine serve` does; the default,
`--client aiohttp`, through a pooled ClientSession, as the byte proxy does. Run alone:
``python -m engine.bench.floor --port 9300 --upstream http://127.0.0.1:9100 --client engine``.
"""
from __future__ import annotations

import argparse
import sys
import time

import msgspec
from aiohttp import web

from .proxy import _loop, pooled_session
from .upstream import raise_nofile

UPSTREAM = web.AppKey("upstream", object)  # an aiohttp ClientSession or the gateway's HttpClient
DEFAULT_MAX_TOKENS = 4096
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "refusal": "content_filter"}
_decode = msgspec.json.decode
_encode = msgspec.json.encode


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or () if isinstance(p, dict))


def _blocks(content) -> list:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [{"type": "text", "text": p["text"]} for p in content or () if p.get("type") == "text"]


def messages_request(body: dict, api_key: str) -> tuple[dict, dict]:
    """(Messages body, headers) for a Chat Completions body."""
    system, out = [], []

    def put(role: str, blocks: list):
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for m in body["messages"]:
        role = m["role"]
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
        elif role == "user":
            put("user", _blocks(m.get("content")))
        elif role == "assistant":
            blocks = _blocks(m.get("content"))
            for call in m.get("tool_calls") or ():
                fn = call["function"]
                blocks.append({"type": "tool_use", "id": call["id"], "name": fn["name"],
                               "input": _decode(fn["arguments"]) if fn.get("arguments") else {}})
            put("assistant", blocks)
        elif role == "tool":
            put("user", [{"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": _text(m.get("content"))}])
    req = {"model": body["model"], "messages": out,
           "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS}
    if system:
        req["system"] = "\n\n".join(system)
    for k in ("temperature", "top_p"):
        if body.get(k) is not None:
            req[k] = body[k]
    stop = body.get("stop")
    if stop:
        req["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    tools = [t.get("function") or t for t in body.get("tools") or () if t.get("type") == "function"]
    if tools:
        req["tools"] = [{"name": f["name"], "description": f.get("description", ""),
                         "input_schema": f.get("parameters") or {"type": "object"}} for f in tools]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        req["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
    elif choice in ("auto", "required", "none"):
        req["tool_choice"] = {"type": {"required": "any"}.get(choice, choice)}
    if body.get("stream"):
        req["stream"] = True
    return req, {"content-type": "application/json", "x-api-key": api_key, "anthropic-version": "2023-06-01"}


def _usage(u: dict) -> dict:
    i, o = u.get("input_tokens", 0), u.get("output_tokens", 0)
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def chat_answer(msg: dict) -> dict:
    """The Chat Completions answer for a Messages answer."""
    text, calls = [], []
    for b in msg.get("content") or ():
        if b["type"] == "text":
            text.append(b["text"])
        elif b["type"] == "tool_use":
            calls.append({"id": b["id"], "type": "function",
                          "function": {"name": b["name"], "arguments": _encode(b["input"]).decode()}})
    message = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    return {"id": msg["id"], "object": "chat.completion", "created": int(time.time()), "model": msg["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": _FINISH.get(msg.get("stop_reason"), "stop")}],
            "usage": _usage(msg.get("usage") or {})}


class Chunks:
    """One stream's Anthropic events to Chat Completions chunks, as SSE bytes."""

    def __init__(self, include_usage: bool):
        self.buf = b""
        self.id = self.model = ""
        self.created = int(time.time())
        self.tools: dict = {}  # content block index -> tool call index
        self.usage: dict = {}
        self.finish = "stop"
        self.include_usage = include_usage

    def frame(self, choices: list, **more) -> bytes:
        return b"data: " + _encode({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                    "model": self.model, "choices": choices, **more}) + b"\n\n"

    def chunk(self, delta: dict, finish=None) -> bytes:
        return self.frame([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    def feed(self, data: bytes) -> bytes:
        frames = (self.buf + data).split(b"\n\n")
        self.buf = frames.pop()
        return b"".join(self.event(f) for f in frames)

    def event(self, frame: bytes) -> bytes:
        at = frame.find(b"data:")
        if at < 0:
            return b""
        ev = _decode(frame[at + 5:])
        kind = ev["type"]
        if kind == "content_block_delta":
            d = ev["delta"]
            if d["type"] == "text_delta":
                return self.chunk({"content": d["text"]})
            if d["type"] == "input_json_delta":
                return self.chunk({"tool_calls": [{"index": self.tools[ev["index"]],
                                                   "function": {"arguments": d["partial_json"]}}]})
            return b""
        if kind == "message_start":
            m = ev["message"]
            self.id, self.model = m["id"], m["model"]
            self.usage = dict(m.get("usage") or {})
            return self.chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            b = ev["content_block"]
            if b["type"] != "tool_use":
                return b""
            k = self.tools[ev["index"]] = len(self.tools)
            return self.chunk({"tool_calls": [{"index": k, "id": b["id"], "type": "function",
                                               "function": {"name": b["name"], "arguments": ""}}]})
        if kind == "message_delta":
            self.usage.update(ev.get("usage") or {})
            self.finish = _FINISH.get(ev["delta"].get("stop_reason"), "stop")
            return b""
        if kind == "message_stop":
            end = self.chunk({}, self.finish)
            if self.include_usage:
                end += self.frame([], usage=_usage(self.usage))
            return end + b"data: [DONE]\n\n"
        return b""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                        "code": None}}, status=status)


def create_app(upstream: str, api_key: str = "bench", client: str = "aiohttp") -> web.Application:
    """`client`: aiohttp (a pooled ClientSession, as the byte proxy) or engine (the gateway's
    own upstream client, engine/server/httpclient.py)."""
    from ..schemas import is_valid
    from ..server.httpclient import HttpClient
    # the gateway's client takes a path under the base URL it was made for; a session, a URL
    url = "/v1/messages" if client == "engine" else upstream.rstrip("/") + "/v1/messages"
    valid = is_valid("openai/chat.request")

    async def chat(request: web.Request) -> web.StreamResponse:
        try:
            body = _decode(await request.read())
        except msgspec.DecodeError as e:
            return _error(400, f"the body is not JSON: {e}")
        if type(body) is not dict or not valid(body):
            return _error(400, "the body is not a Chat Completions request")
        req, headers = messages_request(body, api_key)
        async with request.app[UPSTREAM].post(url, data=_encode(req), headers=headers) as resp:
            if resp.status != 200:
                return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")
            if not body.get("stream"):
                return web.Response(body=_encode(chat_answer(_decode(await resp.read()))),
                                    content_type="application/json")
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await out.prepare(request)
            chunks = Chunks(bool((body.get("stream_options") or {}).get("include_usage")))
            async for data in resp.content.iter_any():
                piece = chunks.feed(data)
                if piece:
                    await out.write(piece)
            await out.write_eof()
            return out

    async def session(app):
        app[UPSTREAM] = HttpClient(upstream) if client == "engine" else pooled_session()
        yield
        await app[UPSTREAM].close()

    app = web.Application(client_max_size=20 * 1024 * 1024)
    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench.floor", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="the fake Anthropic upstream's base URL")
    p.add_argument("--api-key", default="bench")
    p.add_argument("--client", choices=("aiohttp", "engine"), default="aiohttp")
    args = p.parse_args(argv)
    raise_nofile()
    web.run_app(create_app(args.upstream, args.api_key, args.client), host=args.host, port=args.port, print=None,
                access_log=None, backlog=4096, shutdown_timeout=1.0, loop=_loop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
