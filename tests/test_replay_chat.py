"""Every recorded Anthropic stream and body through the chat-to-messages specs.

The output is snapshotted (snapshots/test_replay_chat/) and validated event by event against
the OpenAI chunk schema; each input event is validated against the Anthropic event schema."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import functions, schemas
from engine.sse import SSEDecoder
from engine.stream import StreamTranslator

FIXTURES = Path(__file__).parent / "fixtures"
STREAMS = sorted(p.name for p in FIXTURES.glob("anthropic-*.sse"))
BODIES = ["anthropic-message-text.json", "anthropic-message-parallel-tool-use.json"]
REQ = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}], "stream": True,
       "stream_options": {"include_usage": True}}


@pytest.fixture(autouse=True)
def deterministic(monkeypatch, fixed_clock):
    monkeypatch.setattr(functions, "random_bytes", lambda n: bytes(n))


def events_of(raw: bytes) -> list:
    dec = SSEDecoder()
    return [json.loads(d) for _, d in dec.feed(raw) + dec.flush()]


def replay(spec, raw: bytes, req=REQ, chunk=None) -> bytes:
    t = StreamTranslator(spec, req=req, cfg={"default_max_tokens": 4096}, model="claude-sonnet-4-5")
    out = t.encode(t.start())
    step = chunk or len(raw)
    for i in range(0, len(raw), step):
        out += t.feed(raw[i:i + step])
    return out + t.finish()


@pytest.mark.parametrize("name", STREAMS)
def test_stream_fixture(name, catalog, snapshot):
    raw = (FIXTURES / name).read_bytes()
    for ev in events_of(raw):
        assert schemas.first_error("anthropic/stream-event", ev) is None, (ev, schemas.first_error("anthropic/stream-event", ev))
    spec = catalog.get("chat-to-messages/stream")
    out = replay(spec, raw)
    # framing does not depend on how the upstream split its bytes
    assert replay(spec, raw, chunk=7) == out
    text = out.decode()
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks)
    payloads = [b[6:] for b in blocks]
    chunks = [json.loads(p) for p in payloads if p != "[DONE]"]
    for c in chunks:
        sid = "openai/error" if "error" in c else "openai/chat.chunk"
        assert schemas.first_error(sid, c) is None, (c, schemas.first_error(sid, c))
    normal = [c for c in chunks if "error" not in c]
    assert len({c["id"] for c in normal}) <= 1
    if normal:
        assert normal[0]["choices"][0]["delta"].get("role") == "assistant"
    if payloads and payloads[-1] == "[DONE]":
        finishes = [c["choices"][0]["finish_reason"] for c in normal if c["choices"] and c["choices"][0]["finish_reason"]]
        assert len(finishes) == 1
        assert normal[-1]["choices"] == [] and "usage" in normal[-1]
    else:
        assert "error" in chunks[-1]  # an incomplete stream ends with an error the SDK raises
    assert text == snapshot


def test_tool_call_indexes_count_calls_not_blocks(catalog):
    out = replay(catalog.get("chat-to-messages/stream"), (FIXTURES / "anthropic-text-then-tool-use.sse").read_bytes())
    chunks = [json.loads(b[6:]) for b in out.decode().split("\n\n") if b and b != "data: [DONE]"]
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert {tc["index"] for tc in calls} == {0}  # Anthropic block index 1 becomes call index 0
    assert sum(1 for tc in calls if "id" in tc) == 1


def test_max_tokens_mid_tool_use_finishes_with_length(catalog):
    out = replay(catalog.get("chat-to-messages/stream"), (FIXTURES / "anthropic-max-tokens-mid-tool-use.sse").read_bytes())
    assert '"finish_reason":"length"' in out.decode() and out.decode().endswith("data: [DONE]\n\n")


@pytest.mark.parametrize("name", BODIES)
def test_body_fixture(name, catalog, snapshot):
    body = json.loads((FIXTURES / name).read_text())
    assert schemas.first_error("anthropic/messages.response", body) is None
    out = catalog.get("chat-to-messages/response").apply(src=body, req={}, cfg={}, model="m")
    assert schemas.first_error("openai/chat.response", out) is None, schemas.first_error("openai/chat.response", out)
    assert out == snapshot


@pytest.mark.parametrize("name", ["anthropic-tool-no-args-pings.sse", "anthropic-tool-use-only.sse",
                                  "anthropic-text-then-tool-use.sse"])
def test_streamed_tool_arguments_join_to_json(name, catalog):
    """The client joins each call's argument fragments and parses them: a tool without input
    must still give JSON ("{}"), and a call with input must not get a stray "{}" appended."""
    out = replay(catalog.get("chat-to-messages/stream"), (FIXTURES / name).read_bytes())
    chunks = [json.loads(b[6:]) for b in out.decode().split("\n\n") if b and b != "data: [DONE]"]
    joined: dict[int, str] = {}
    for c in chunks:
        for tc in (c["choices"][0]["delta"].get("tool_calls", []) if c["choices"] else []):
            joined[tc["index"]] = joined.get(tc["index"], "") + tc["function"].get("arguments", "")
    assert joined
    for text in joined.values():
        assert isinstance(json.loads(text), dict)
    if name == "anthropic-tool-no-args-pings.sse":
        assert joined == {0: "{}"}


def test_web_search_server_tool_is_not_a_client_tool_call(catalog):
    """Anthropic's web search (web_search_options) streams its query as input_json_delta of a
    server_tool_use block: that is not a tool call of the client's; the answer text is."""
    from support.fake_upstream import anthropic_stream_events, sse_events
    raw = sse_events(anthropic_stream_events([
        {"type": "server_tool_use", "id": "srvtoolu_01W", "name": "web_search", "partial_json": ['{"query": "x"}']},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01W", "content": []},
        {"type": "text", "text": ["Found ", "it."]}])).encode()
    out = replay(catalog.get("chat-to-messages/stream"), raw)
    chunks = [json.loads(b[6:]) for b in out.decode().split("\n\n") if b and b != "data: [DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert not any("tool_calls" in d for d in deltas)
    assert "".join(d.get("content", "") for d in deltas) == "Found it."
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == ["stop"]
