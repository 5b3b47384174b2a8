"""engine/server/translate.py's reading and writing helpers: the request body reader (load_json:
the same answers as json.loads on bytes, in every encoding json.loads detects, with the
gateway's own refusals on top) and where a stream's first read is split (early_cut)."""
from __future__ import annotations

import json

import pytest

from engine.server.api_errors import ApiError
from engine.server.translate import _encoding, load_json

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
TEXTS = ['{"a": "\u00e9\u4e2d"}', "{}", '{"k": 1.5, "n": [1, {"x": null}]}', ' {"a":1}', '{"b":"\U0001f600"}']


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("text", TEXTS)
def test_every_encoding_json_detects_reads_the_same(encoding, text):
    raw = text.encode(encoding)
    assert _encoding(raw) == json.detect_encoding(raw)
    assert load_json(raw) == json.loads(raw)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe{", b"{\x00}", b"[1]", b'"x"', b'{"a": NaN}',
                                 b'{"a": 1e400}', b"\xc3\x28", b'{"a": "\\ud800"}', b'{"a": Infinity}',
                                 b'{"a": 1} x', b"[" * 2000 + b"]" * 2000])
def test_what_json_refuses_or_is_not_an_object_is_a_400(raw):
    with pytest.raises(ApiError) as e:
        load_json(raw)
    assert e.value.status == 400


def test_early_cut_splits_after_the_first_events_only_when_more_follow():
    from engine.server.translate import early_cut
    events = [f"event: e{i}\ndata: {{\"i\":{i}}}\n\n".encode() for i in range(12)]
    burst = b"".join(events)
    cut, seen = early_cut(burst, 8)
    assert (burst[:cut], burst[cut:], seen) == (b"".join(events[:8]), b"".join(events[8:]), 8)
    assert early_cut(b"".join(events[:8]), 8) == (0, 8)  # nothing after the eighth: one write is enough
    assert early_cut(b"".join(events[:5]) + b"event: partial", 8) == (0, 5)
    assert early_cut(burst, 2) == (len(events[0]) + len(events[1]), 2)
    assert early_cut(burst.replace(b"\n", b"\r\n"), 8) == (0, 0)  # CRLF streams are not split (no harm)


async def test_the_rest_of_a_burst_is_translated_a_turn_of_the_loop_after_its_first_events(
        fake_anthropic, fake_openai, tmp_path, monkeypatch):
    """A read holding a whole burst: its first 8 events are translated and written, then other
    tasks run (other streams' first tokens, new requests), then the rest is translated."""
    import asyncio

    import aiohttp
    from aiohttp.test_utils import TestServer

    from engine import config as config_mod
    from engine.catalog import Catalog
    from engine.server.app import create_app
    from engine.stream import StreamTranslator
    from conftest import gateway_env
    from support.fake_upstream import anthropic_text_stream, sse_reply

    log = []
    feed = StreamTranslator.feed
    monkeypatch.setattr(StreamTranslator, "feed", lambda self, chunk: (log.append(chunk.count(b"\n\n")),
                                                                        feed(self, chunk))[1])
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["w"] * 40)))  # the events in one write
    app = create_app(config_mod.load({}, env=gateway_env(fake_anthropic, fake_openai, tmp_path)), Catalog.load())
    server = TestServer(app)
    await server.start_server()
    ticking = True

    async def ticker():
        while ticking:
            log.append("tick")
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(server.make_url("/v1/chat/completions"), json={
                    "model": "claude-x", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}) as r:
                body = await r.read()
    finally:
        ticking = False
        await task
        await server.close()
    assert body.count(b'"content":"w"') == 40
    feeds = [(i, n) for i, n in enumerate(log) if n != "tick"]
    first = next(k for k, (_, n) in enumerate(feeds) if n == 8)
    (at, _), (then, rest) = feeds[first], feeds[first + 1]
    assert rest > 30 and "tick" in log[at + 1:then]
