"""What an open stream holds. A stream stays open for minutes, so a gateway with a thousand of them
open holds a thousand times whatever each keeps. Each keeps, of the request it translates, the
members its response and stream specs read (translate.let_go): not the conversation so far. It
must not keep the client's raw body (aiohttp keeps what `request.read()` returns, for the life
of the request), the upstream body once the upstream answered it, or its own copy of kept tools
text echoed into a Responses stream; and once it ends, nothing of it stays.

The captured Codex and Claude Code requests are sent with their tools made bulky (the tools are
most of a first request, and are kept once for all requests), or with a long conversation (most
of every later request), several streams at once, and what the gateway's code allocated and
still holds while they are open is counted with tracemalloc. A Responses request to be stored
keeps its conversation for the record, once."""
from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from conftest import gateway_env
from engine import config as config_mod
from engine.bench.runner import add_turns
from engine.catalog import Catalog
from engine.server import translate
from engine.server.app import create_app
from engine.server.members import Memo
from engine.server.shutdown import OPEN
from support.fake_upstream import anthropic_text_stream, openai_chat_stream, sse_reply

CLIENTS = Path(__file__).parent / "fixtures" / "clients"
STREAMS = 6
CAPTURES = {  # capture -> (path, model the default routes translate)
    "codex-0.169-responses-req1.json": ("/v1/responses", "claude-sonnet-4-5"),
    "codex-0.94-chat-req1.json": ("/v1/chat/completions", "claude-sonnet-4-5"),
    "claude-code-2.1.332-messages-gpt5-req1.json": ("/v1/messages", "gpt-4o"),
}


def _bulky(name: str, model: str, part: str) -> bytes:
    """The capture, streamed, with each tool's description 18 KB longer (`tools`), or after 60
    turns of about 2.5 KB each (`history`: the conversation so far, as every later request of a
    session sends it)."""
    body = json.loads((CLIENTS / name).read_text())["body"]
    if part == "tools":
        for tool in body["tools"]:
            fn = tool.get("function", tool)
            fn["description"] = (fn.get("description") or "") + " Details." * 2000
    else:
        add_turns(body, 60)
    body.update(model=model, stream=True)
    if "responses" in name:
        body["store"] = part == "stored history"
    return json.dumps(body, ensure_ascii=False).encode()


def _held_by_engine(snapshot) -> int:
    """Bytes still allocated with a frame of the gateway's code on the stack."""
    engine = snapshot.filter_traces([tracemalloc.Filter(True, "*/engine/*", all_frames=True)])
    return sum(s.size for s in engine.statistics("filename"))


async def _until_none_open(app):
    for _ in range(100):  # the handler ends just after its client read the last byte
        if not app[OPEN]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(app[OPEN])} streams still registered as open")


@pytest.mark.parametrize("capture,part", [(c, p) for c in sorted(CAPTURES) for p in ("tools", "history")]
                         + [("codex-0.169-responses-req1.json", "stored history")])
async def test_an_open_stream_holds_no_copy_of_the_request(capture, part, fake_anthropic, fake_openai, tmp_path,
                                                           monkeypatch):
    path, model = CAPTURES[capture]
    raw = _bulky(capture, model, part)
    upstream = fake_openai if model.startswith("gpt") else fake_anthropic
    chunks = ["word "] * 60
    text = openai_chat_stream(chunks) if upstream is fake_openai else anthropic_text_stream(chunks)
    upstream.set_default(sse_reply(text, chunk_size=64, delay=0.02))  # open a few seconds each
    monkeypatch.setattr(translate, "MEMO", Memo())
    app = create_app(config_mod.load({}, env=gateway_env(fake_anthropic, fake_openai, tmp_path)), Catalog.load())
    server = TestServer(app)
    await server.start_server()
    tracemalloc.start(40)
    try:
        async with aiohttp.ClientSession() as s:
            async def open_stream(first: asyncio.Event, done: asyncio.Event):
                async with s.post(server.make_url(path), data=raw, headers={"content-type": "application/json"}) as r:
                    assert r.status == 200, await r.text()
                    await r.content.readany()
                    first.set()
                    await done.wait()
                    rest = await r.read()
                    assert rest.rstrip().endswith((b"[DONE]", b"}")), rest[-200:]

            done = asyncio.Event()
            done.set()
            await open_stream(asyncio.Event(), done)  # the tools are kept from here on, as in a session
            await _until_none_open(app)
            before = tracemalloc.take_snapshot()
            firsts = [asyncio.Event() for _ in range(STREAMS)]
            done = asyncio.Event()
            tasks = [asyncio.ensure_future(open_stream(f, done)) for f in firsts]
            await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 10)
            during = tracemalloc.take_snapshot()
            assert len(app[OPEN]) == STREAMS  # the gateway is still streaming each of them
            done.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
            await _until_none_open(app)
    finally:
        tracemalloc.stop()
        await server.close()
    per_stream = (_held_by_engine(during) - _held_by_engine(before)) / STREAMS
    if part == "stored history":
        # the store keeps the conversation (the record's `input`), decoded: about one copy of it,
        # and not the client's own `input`, the other vars or what was sent beside it
        assert per_stream < len(raw) * 1.35, (capture, len(raw), per_stream)
    else:
        # one copy of the body would be len(raw) bytes; what a stream of it may hold is a small part
        assert per_stream < len(raw) / 4, (capture, len(raw), per_stream)
