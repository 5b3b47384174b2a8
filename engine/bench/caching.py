"""`engine bench --cache`: a multi-turn Codex session replayed through the gateway against a fake
Anthropic upstream that caches prompt prefixes and bills input tokens as the real API does; the
billed input tokens with prompt_cache=auto beside prompt_cache=off. A counting replay, not a timing
one: the figures are the same on any machine.

The session: Codex 0.169's first request (tests/fixtures/clients/codex-0.169-responses-req1.json,
its elided prose filled back to its recorded length), then turn after turn the whole history again,
as Codex sends it (store: false): the output items the gateway answered (reasoning with
encrypted_content, the function call), then the command's output, then the next request.

The fake upstream's cache (as Anthropic documents it):
- a `cache_control` breakpoint caches the prefix up to and including its block; the prefix is
  tools, then system, then messages, compared byte for byte (breakpoint markers aside);
- a request reads the longest cached prefix that ends at one of its breakpoints or at one of the
  20 blocks before each;
- a prefix shorter than the model's minimum (`cache_min_tokens` of its profile) is not cached;
- input is billed 1x, cache reads 0.1x, cache writes 1.25x (5-minute TTL) or 2x (1 hour).
Tokens are counted as four characters of the block's JSON each (as count_tokens estimates on
translated routes); a real tokenizer shifts every figure alike.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clients"
FIRST_REQUEST = "codex-0.169-responses-req1.json"
LOOKBACK = 20
READ, WRITE = 0.1, {"5m": 1.25, "1h": 2.0}
_ELIDED = re.compile(r"<(\d+) characters of client-supplied text>")
_FILLER = "The agent reads the repository, runs commands and edits files as the user asks. "


def _fill(match: re.Match) -> str:
    n = int(match.group(1))
    return (_FILLER * (n // len(_FILLER) + 1))[:n]


def first_request(fixtures: Path = FIXTURES) -> dict:
    """Codex's first request, its elided prose filled back to the recorded length."""
    body = json.loads((fixtures / FIRST_REQUEST).read_text())["body"]
    return json.loads(_ELIDED.sub(lambda m: _fill(m), json.dumps(body)))


def tokens(value) -> int:
    return math.ceil(len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) / 4)


def _unmarked(block):
    return {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block


@dataclass
class CachingUpstream:
    """Counts and bills what Anthropic would: one entry per cached prefix, by its hash."""
    min_tokens: int
    ttl_price: dict = field(default_factory=lambda: dict(WRITE))
    cache: set = field(default_factory=set)
    turns: list = field(default_factory=list)

    def bill(self, body: dict) -> dict:
        blocks = list(body.get("tools") or [])
        system = body.get("system")
        blocks += system if isinstance(system, list) else ([{"type": "text", "text": system}] if system else [])
        for m in body.get("messages") or []:
            content = m.get("content")
            blocks += content if isinstance(content, list) else [{"type": "text", "text": content}]
        # prefix hashes and lengths at every block boundary
        digest = hashlib.sha256()
        hashes, lengths, total = [], [], 0
        for b in blocks:
            digest.update(json.dumps(_unmarked(b), sort_keys=True).encode())
            hashes.append(digest.copy().hexdigest())
            total += tokens(_unmarked(b))
            lengths.append(total)
        marks = [i for i, b in enumerate(blocks) if isinstance(b, dict) and "cache_control" in b]
        read = 0
        for i in marks:
            for j in range(i, max(-1, i - LOOKBACK - 1), -1):
                if hashes[j] in self.cache:
                    read = max(read, lengths[j])
                    break
        written, price = 0, 0.0
        for i in marks:
            if lengths[i] >= self.min_tokens and lengths[i] > read and hashes[i] not in self.cache:
                self.cache.add(hashes[i])
                ttl = blocks[i]["cache_control"].get("ttl", "5m")
                grown = lengths[i] - max(read, written)
                if grown > 0:
                    price += grown * self.ttl_price[ttl]
                    written = lengths[i]
        uncached = total - max(read, written)
        usage = {"input_tokens": uncached, "cache_read_input_tokens": read,
                 "cache_creation_input_tokens": max(0, written - read) if written else 0}
        billed = uncached + read * READ + price
        self.turns.append({"total": total, "read": read, "written": usage["cache_creation_input_tokens"],
                           "uncached": uncached, "billed": billed, "breakpoints": len(marks)})
        return usage


def _reply(usage: dict, turn: int, last: bool, model: str) -> bytes:
    """The SSE answer of one turn: a thinking block and an exec_command call, or the final text."""
    if last:
        blocks = [("text", {"type": "text", "text": ""}, [{"type": "text_delta", "text": "All done."}])]
    else:
        blocks = [("thinking", {"type": "thinking", "thinking": "", "signature": ""},
                   [{"type": "thinking_delta", "thinking": f"Step {turn}: run the next command."},
                    {"type": "signature_delta", "signature": f"EqSig{turn:04d}=="}]),
                  ("tool_use", {"type": "tool_use", "id": f"toolu_replay_{turn:03d}", "name": "exec_command",
                                "input": {}},
                   [{"type": "input_json_delta", "partial_json": json.dumps({"cmd": f"sed -n {turn}p src/main.py"})}])]
    events = [{"type": "message_start", "message": {
        "id": f"msg_replay_{turn:03d}", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}}]
    for i, (_, start, deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": i, "content_block": start})
        events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": i})
    events.append({"type": "message_delta", "delta": {"stop_reason": "end_turn" if last else "tool_use",
                                                       "stop_sequence": None}, "usage": {"output_tokens": 40}})
    events.append({"type": "message_stop"})
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def _tool_output(turn: int) -> str:
    """A command's output of a few hundred tokens, different every turn."""
    return "\n".join(f"{turn * 40 + n:5d}  def handler_{turn}_{n}(request): return respond(request, {n})"
                     for n in range(40))


async def replay(model: str, prompt_cache: str, turns: int = 12, ttl: str = "5m",
                 fixtures: Path = FIXTURES) -> dict:
    """One session through `engine serve`'s app in this process; the upstream's bill per turn."""
    from aiohttp.test_utils import TestServer

    from engine import config as config_mod
    from engine.profiles import shipped
    from engine.server.app import create_app

    upstream = CachingUpstream(min_tokens=shipped().get(model)["cache_min_tokens"])
    state = {"turn": 0}

    async def messages(request: web.Request):
        body = await request.json()
        usage = upstream.bill(body)
        state["turn"] += 1
        return web.Response(body=_reply(usage, state["turn"], state["turn"] >= turns, model),
                            content_type="text/event-stream")

    up_app = web.Application(client_max_size=64 * 1024 * 1024)
    up_app.router.add_post("/v1/messages", messages)
    up = TestServer(up_app)
    await up.start_server()
    cfg = config_mod.load({"set": [f"prompt_cache={prompt_cache}", f"prompt_cache_ttl={ttl}",
                                   "anthropic_api_key=sk-replay", f"anthropic_base_url={up.make_url('')}".rstrip("/"),
                                   "session_store=sqlite", "log_level=warn"]}, env={})
    gw = TestServer(create_app(cfg))
    await gw.start_server()
    body = first_request(fixtures)
    # as Codex sends it with model_reasoning_effort set (codex-0.171-responses-reasoning-req1.json)
    body.update(model=model, reasoning={"effort": "high", "summary": "auto"})
    reported = []
    try:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            for turn in range(1, turns + 1):
                async with session.post(gw.make_url("/v1/responses"), json=body) as r:
                    text = await r.text()
                    if r.status != 200:
                        raise RuntimeError(f"turn {turn}: {r.status} {text[:500]}")
                final = _completed(text)
                reported.append(final["usage"]["input_tokens_details"]["cached_tokens"])
                if turn == turns:
                    break
                # Codex's next request: the whole history again, the output items, the command's output
                calls = [i for i in final["output"] if i["type"] == "function_call"]
                body = {**body, "input": body["input"] + final["output"] + [
                    {"type": "function_call_output", "call_id": c["call_id"], "output": _tool_output(turn)}
                    for c in calls]}
    finally:
        await gw.close()
        await up.close()
    return {"model": model, "prompt_cache": prompt_cache, "ttl": ttl, "turns": upstream.turns,
            "reported_cached": reported, "min_tokens": upstream.min_tokens}


def _completed(sse: str) -> dict:
    for block in sse.split("\n\n"):
        if "response.completed" in block:
            return json.loads(block.split("data: ", 1)[1])["response"]
    raise RuntimeError("the stream ended without response.completed")


def run(models=("claude-opus-4-7", "claude-sonnet-4-5"), turns: int = 12, data_dir: str | None = None) -> list[dict]:
    import os
    import tempfile

    old = os.getcwd()
    tmp = data_dir or tempfile.mkdtemp(prefix="bench-cache-")
    os.chdir(tmp)  # the response store's ./data
    try:
        out = []
        for model in models:
            for mode, ttl in (("off", "5m"), ("auto", "5m"), ("auto", "1h")):
                out.append(asyncio.run(replay(model, mode, turns, ttl)))
        return out
    finally:
        os.chdir(old)


def render(results: list[dict]) -> str:
    lines = ["Prompt caching: a Codex session replayed turn by turn (input tokens billed as Anthropic bills them:",
             "cache reads 0.1x, 5-minute writes 1.25x, 1-hour writes 2x; 4 characters a token)", "",
             f"{'model':18} {'prompt_cache':13} {'turns':>5} {'input tokens':>13} {'cache reads':>12} "
             f"{'cache writes':>13} {'billed input':>13} {'vs off':>7}"]
    off = {}
    for r in results:
        total = sum(t["total"] for t in r["turns"])
        billed = sum(t["billed"] for t in r["turns"])
        if r["prompt_cache"] == "off":
            off[r["model"]] = billed
        base = off.get(r["model"]) or billed
        label = r["prompt_cache"] if r["prompt_cache"] == "off" else f"auto ({r['ttl']})"
        lines.append(f"{r['model']:18} {label:13} {len(r['turns']):5d} {total:13,d} "
                     f"{sum(t['read'] for t in r['turns']):12,d} {sum(t['written'] for t in r['turns']):13,d} "
                     f"{billed:13,.0f} {billed / base:7.2f}")
    lines.append("")
    lines.append("minimum cacheable prefix from each model's profile: "
                 + ", ".join(sorted({f"{r['model']} {r['min_tokens']}" for r in results})))
    return "\n".join(lines)


def main(turns: int = 12) -> int:
    print(render(run(turns=turns)))
    return 0
