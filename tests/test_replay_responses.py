"""Recorded Anthropic streams replayed through the responses-to-messages stream spec.

* every output event is valid against schemas/openai/responses.event.json, sequence numbers run
  0, 1, 2 ... and the stream ends with exactly one terminal event;
* the output of each fixture is snapshotted (snapshots/test_replay_responses/);
* the recorded api.openai.com Responses streams (tests/fixtures/responses-*.sse) are valid against
  the same schema, and every key a recorded event (or response object, or output item) always has,
  ours has too: the recordings fix the shape the gateway must emit;
* the recorded Anthropic message bodies go through the response spec and are valid Response objects.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import schemas
from engine.stream import StreamTranslator
from support.fake_upstream import parse_sse

FIXTURES = Path(__file__).parent / "fixtures"
ANTHROPIC_STREAMS = sorted(FIXTURES.glob("anthropic-*.sse"))
ANTHROPIC_BODIES = [p for p in sorted(FIXTURES.glob("anthropic-message-*.json"))]
RECORDED = sorted(FIXTURES.glob("responses-*.sse"))
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
# keys the gateway leaves out on purpose: obfuscation padding, and the error event, which follows
# the documented flat {code, message, param} shape rather than the nested recorded one
IGNORED_KEYS = {"obfuscation"}

REQ = {"model": "claude-sonnet-4-5", "stream": True, "include": ["reasoning.encrypted_content"],
       "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]}


@pytest.fixture(autouse=True)
def _frozen(fixed_clock):
    pass


def replay(spec, raw: bytes, req=REQ, chunk: int = 0) -> list[dict]:
    t = StreamTranslator(spec, req=req, cfg={"default_max_tokens": 4096}, model="claude-sonnet-4-5",
                         id_base="test0000", response_id="resp_test0000")
    out = t.encode(t.start())
    step = chunk or len(raw) or 1
    for i in range(0, len(raw), step):
        out += t.feed(raw[i:i + step])
    out += t.finish()
    events = []
    for ev in parse_sse(out):
        data = json.loads(ev["data"])
        assert ev["event"] == data["type"]
        events.append(data)
    return events


def recorded_events(path: Path) -> list[dict]:
    return [json.loads(ev["data"]) for ev in parse_sse(path.read_bytes()) if ev["data"]]


@pytest.mark.parametrize("path", ANTHROPIC_STREAMS, ids=lambda p: p.name)
def test_replay_is_valid_and_snapshotted(path, catalog, snapshot):
    spec = catalog.get("responses-to-messages/stream")
    events = replay(spec, path.read_bytes())
    for ev in events:
        err = schemas.first_error("openai/responses.event", ev)
        assert err is None, (ev["type"], err)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in TERMINAL and sum(e["type"] in TERMINAL for e in events) == 1
    # output_index counts every item; added and done pair up (a failure leaves the open item open);
    # the final output lists the done items
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == list(range(len(added)))
    assert done == added if events[-1]["type"] != "response.failed" else done == added[:len(done)]
    final = events[-1]["response"]
    assert [i["id"] for i in final["output"]] == \
        [e["item"]["id"] for e in events if e["type"] == "response.output_item.done"]
    # the same bytes cut into small pieces give the same events
    assert replay(spec, path.read_bytes(), chunk=7) == events
    assert events == snapshot


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_recorded_responses_streams_fit_the_schema(path):
    events = recorded_events(path)
    assert events
    for ev in events:
        assert schemas.first_error("openai/responses.event", ev) is None, ev["type"]
        if "response" in ev:
            assert schemas.first_error("openai/responses.response", ev["response"]) is None


def _always_present(events: list[dict]) -> dict[str, set]:
    """kind -> the keys every recorded instance of that kind has (kinds: event types,
    RESPONSE, ITEM:<type>, PART:<type>)."""
    seen: dict[str, set] = {}

    def note(kind, obj):
        keys = set(obj) - IGNORED_KEYS
        seen[kind] = keys if kind not in seen else seen[kind] & keys

    for ev in events:
        if ev["type"] == "error":
            continue
        note(ev["type"], ev)
        if isinstance(ev.get("response"), dict):
            note("RESPONSE", ev["response"])
        if isinstance(ev.get("item"), dict):
            note("ITEM:" + ev["item"]["type"], ev["item"])
        if isinstance(ev.get("part"), dict):
            note("PART:" + ev["part"]["type"], ev["part"])
    return seen


def test_emitted_events_have_every_key_the_recorded_ones_always_have(catalog):
    recorded = _always_present([e for p in RECORDED for e in recorded_events(p)])
    # recorded by a Copilot proxy or newer servers only, not part of the API's object
    for k in ("copilot_usage", "completed_at", "moderation", "tool_usage", "frequency_penalty",
              "presence_penalty", "phase", "content"):
        for kind in recorded:
            recorded[kind].discard(k)
    spec = catalog.get("responses-to-messages/stream")
    ours = _always_present([e for p in ANTHROPIC_STREAMS for e in replay(spec, p.read_bytes())])
    compared = 0
    for kind, keys in recorded.items():
        if kind in ours:
            compared += 1
            assert keys <= ours[kind], (kind, sorted(keys - ours[kind]))
    assert compared >= 15


@pytest.mark.parametrize("path", ANTHROPIC_BODIES, ids=lambda p: p.name)
def test_anthropic_bodies_become_valid_responses(path, catalog, snapshot):
    spec = catalog.get("responses-to-messages/response")
    src = json.loads(path.read_text())
    sc = spec.scope(src=src, req=REQ, cfg={}, model="claude-sonnet-4-5", id_base="test0000",
                    response_id="resp_test0000")
    out = spec.template(sc)
    assert schemas.first_error("openai/responses.response", out) is None
    assert out["id"] == "resp_test0000" and out["status"] == "completed"
    assert out == snapshot
