"""Recorded OpenAI Chat Completions streams (tests/fixtures/openai-chat-*.sse, and an
OpenAI-compatible server's) replayed through the messages-to-chat stream spec.

Every output event is validated against anthropic/stream-event, the event order is checked against
the Anthropic grammar (WIRE.md A.4), the anthropic SDK's own accumulator must build the final
message, and the whole output is snapshotted. Framing must not matter: the same bytes fed one at a
time give the same output."""
from __future__ import annotations

import json

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from engine import functions, schemas
from engine.catalog import Catalog
from engine.stream import StreamTranslator
from support.fake_upstream import FIXTURES_DIR, parse_sse, sse_events

FIXTURES = sorted(p.name for p in FIXTURES_DIR.glob("openai-*.sse"))
REQ = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": True,
       "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture(scope="module")
def spec():
    return Catalog.load().get("messages-to-chat/stream")


@pytest.fixture(autouse=True)
def deterministic_ids(monkeypatch):
    monkeypatch.setattr(functions, "random_bytes", lambda n: bytes(range(n)))


def replay(spec, data: bytes, chunk: int | None = None, req=REQ) -> bytes:
    t = StreamTranslator(spec, req=req, cfg={"default_max_tokens": 4096}, model="gpt-4o")
    out = t.encode(t.start())
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        out += t.feed(data[i:i + step])
    return out + t.finish()


def events_of(out: bytes) -> list[dict]:
    events = []
    for ev in parse_sse(out):
        payload = json.loads(ev["data"])
        assert ev["event"] == payload["type"], "the event: line names the payload type"
        issue = schemas.first_error("anthropic/stream-event", payload)
        assert issue is None, f"{payload}: {issue}"
        events.append(payload)
    return events


def check_grammar(events: list[dict]):
    """message_start; per block start, deltas, stop with indexes counting up, one block open at a
    time; then message_delta and message_stop, or an error event that ends the stream."""
    kinds = [e["type"] for e in events if e["type"] != "ping"]
    assert kinds[0] == "message_start" and kinds.count("message_start") == 1
    open_index, next_index = None, 0
    for e in events[1:]:
        t = e["type"]
        if t == "content_block_start":
            assert open_index is None and e["index"] == next_index
            open_index, next_index = e["index"], next_index + 1
        elif t == "content_block_delta":
            assert e["index"] == open_index
            block = e["delta"]["type"]
            assert block in ("text_delta", "input_json_delta", "thinking_delta")
        elif t == "content_block_stop":
            assert e["index"] == open_index
            open_index = None
        elif t in ("message_delta", "error"):
            assert open_index is None or t == "error"
    if kinds[-1] == "error":
        assert "message_stop" not in kinds
    else:
        assert kinds[-2:] == ["message_delta", "message_stop"]


def final_message(events: list[dict]):
    snapshot, bufs = None, {}
    for e in events:
        if e["type"] in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=e, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


@pytest.mark.parametrize("name", FIXTURES)
def test_replay_recorded_openai_stream(name, spec, snapshot):
    data = (FIXTURES_DIR / name).read_bytes()
    out = replay(spec, data)
    events = events_of(out)
    check_grammar(events)
    assert replay(spec, data, chunk=1) == out, "byte-at-a-time framing gives the same output"
    msg = final_message(events)
    assert msg.stop_reason in ("end_turn", "tool_use", "max_tokens", "refusal")
    assert out.decode() == snapshot


def test_parallel_tool_calls_become_two_tool_use_blocks(spec):
    events = events_of(replay(spec, (FIXTURES_DIR / "openai-chat-parallel-tool-calls.sse").read_bytes()))
    msg = final_message(events)
    assert msg.stop_reason == "tool_use"
    assert [(b.type, b.name) for b in msg.content] == [("tool_use", "GetWeatherArgs"), ("tool_use", "get_stock_price")]
    assert msg.content[0].input == {"city": "Edinburgh", "country": "GB", "units": "c"}
    # fragments are forwarded as they arrive, never held to the end
    fragments = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert len(fragments) > 10 and all(len(f) < 12 for f in fragments)


def test_usage_comes_in_message_delta(spec):
    events = events_of(replay(spec, (FIXTURES_DIR / "openai-chat-text-include-usage.sse").read_bytes()))
    start, delta = events[0], [e for e in events if e["type"] == "message_delta"][0]
    assert start["message"]["usage"]["input_tokens"] == 0
    assert delta["usage"]["output_tokens"] > 0 and delta["usage"]["input_tokens"] > 0


def _chunks(*deltas, finish="stop", usage=None, done=True, extra_choice=None) -> bytes:
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    if finish:
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish, **(extra_choice or {})}]})
    if usage:
        events.append({**base, "choices": [], "usage": usage})
    return sse_events(events, event_lines=False, done=done).encode()


SYNTHETIC = {
    "reasoning-then-text-then-tool": _chunks(
        {"role": "assistant", "content": ""}, {"reasoning_content": "Think"}, {"reasoning": "ing."},
        {"content": "Calling."},
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\": \"ls\"}"}}]},
        finish="tool_calls", usage={"prompt_tokens": 100, "completion_tokens": 20,
                                    "prompt_tokens_details": {"cached_tokens": 64}}),
    "tool-call-no-arguments-no-index": _chunks(
        {"tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "now", "arguments": ""}}]},
        {"tool_calls": [{"id": "call_b", "type": "function", "function": {"name": "today", "arguments": "{}"}}]},
        finish="stop"),
    "stop-sequence-named-by-vllm": _chunks({"content": "one two"}, finish="stop", extra_choice={"stop_reason": "END"}),
    "length": _chunks({"content": "cut"}, finish="length"),
    "content-filter": _chunks({"content": "I"}, finish="content_filter"),
    "no-done-after-finish": _chunks({"content": "fine"}, usage={"prompt_tokens": 3, "completion_tokens": 1}, done=False),
    "ends-before-finish": _chunks({"content": "cut"}, finish=None, done=False),
    "error-payload-mid-stream": _chunks({"content": "partial"}, finish=None, done=False)
    + b'data: {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}\n\n',
    "empty-answer": _chunks({"role": "assistant", "content": ""}),
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_replay_synthetic_stream(name, spec, snapshot):
    req = {**REQ, "stop_sequences": ["END"]}
    out = replay(spec, SYNTHETIC[name], req=req)
    events = events_of(out)
    check_grammar(events)
    assert replay(spec, SYNTHETIC[name], chunk=3, req=req) == out
    assert out.decode() == snapshot


def test_synthetic_outcomes(spec):
    def final(name):
        events = events_of(replay(spec, SYNTHETIC[name], req={**REQ, "stop_sequences": ["END"]}))
        return events, (final_message(events) if events[-1]["type"] != "error" else None)

    events, msg = final("reasoning-then-text-then-tool")
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use"]
    assert msg.content[0].thinking == "Thinking." and msg.content[2].input == {"command": "ls"}
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (36, 64, 20)
    _, msg = final("tool-call-no-arguments-no-index")
    assert [(b.id, b.input) for b in msg.content] == [("call_a", {}), ("call_b", {})]
    assert msg.stop_reason == "tool_use"
    _, msg = final("stop-sequence-named-by-vllm")
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "END")
    assert final("length")[1].stop_reason == "max_tokens"
    assert final("content-filter")[1].stop_reason == "refusal"
    assert final("no-done-after-finish")[1].content[0].text == "fine"
    events, _ = final("ends-before-finish")
    assert events[-1] == {"type": "error", "error": {
        "type": "api_error", "message": "the upstream stream ended before a finish_reason; the answer is incomplete"}}
    events, _ = final("error-payload-mid-stream")
    assert events[-1] == {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}
    events, msg = final("empty-answer")
    assert msg.content == [] and msg.stop_reason == "end_turn"


def test_transport_failure_becomes_an_error_event(spec):
    t = StreamTranslator(spec, req=REQ, cfg={}, model="gpt-4o")
    t.start()
    t.feed(_chunks({"content": "par"}, finish=None, done=False))
    out = events_of(t.encode(t.fail("the upstream connection failed mid-stream: ClientPayloadError")))
    assert out == [{"type": "error", "error": {
        "type": "api_error", "message": "the upstream connection failed mid-stream: ClientPayloadError"}}]
    assert t.finish() == b""
