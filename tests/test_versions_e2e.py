"""A new spec version as an overlay, served next to the old one through the openai SDK; an
exchange recorded by `engine serve --record`, replayed, and `engine diff` showing exactly what the
new version changes; unknown upstream values reaching the specs' defaults."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from engine import schemas
from engine.catalog import MAPPINGS_DIR
from engine.cases import CASES_DIR
from support.fake_upstream import (anthropic_message, anthropic_stream_events, anthropic_text_stream, json_reply,
                                   parse_sse, sse_events, sse_reply)
from support.gateway import REPO_ROOT

OVERLAY = Path(__file__).parent / "fixtures" / "overlays" / "compaction"
ROUTES = "claude-new*=>anthropic@2026-01-15,claude*=>anthropic,gpt*=>openai"


@pytest.fixture
def mappings(tmp_path) -> Path:
    """The shipped specs plus the compaction overlay (one ~10-line file per spec it changes)."""
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, root)
    shutil.copytree(OVERLAY / "mappings", root, dirs_exist_ok=True)
    return root


def engine(*args):
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)


def sdk(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=20)


def ask(client, model: str, stream: bool) -> str | None:
    msgs = [{"role": "user", "content": "Summarize the thread."}]
    if not stream:
        return client.chat.completions.create(model=model, messages=msgs).choices[0].finish_reason
    finishes = [c.choices[0].finish_reason for c in client.chat.completions.create(model=model, messages=msgs, stream=True)
                if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1, finishes
    return finishes[0]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_old_and_new_version_side_by_side_per_route_and_per_pair(make_gateway, fake_anthropic, mappings, stream):
    # one process: the pair pinned to the old version, one route pinned to the new one
    gw = make_gateway({"TOKLIGENCE_MAPPINGS_DIR": str(mappings), "TOKLIGENCE_ROUTES": ROUTES,
                       "TOKLIGENCE_MAPPING_VERSIONS": "chat-to-messages=2025-06-01"})
    client = sdk(gw)
    reply = (lambda: sse_reply(anthropic_text_stream(["The thread", " so far"], stop_reason="compaction"))) if stream \
        else (lambda: json_reply(anthropic_message("The thread so far", stop_reason="compaction")))
    fake_anthropic.enqueue(reply(), reply())
    assert ask(client, "claude-sonnet-4-5", stream) == "stop"       # pair pin: 2025-06-01 (the default 'stop')
    assert ask(client, "claude-new-1", stream) == "length"          # route pin: 2026-01-15
    # and per pair: the same specs with the pair pinned to the new version
    gw2 = make_gateway({"TOKLIGENCE_MAPPINGS_DIR": str(mappings),
                        "TOKLIGENCE_MAPPING_VERSIONS": "chat-to-messages=2026-01-15"})
    fake_anthropic.enqueue(reply())
    assert ask(sdk(gw2), "claude-sonnet-4-5", stream) == "length"
    # what went upstream is the same for both versions (the request spec has no file of 2026-01-15)
    bodies = [r.json for r in fake_anthropic.requests_to("/v1/messages")]
    assert len(bodies) == 3 and bodies[0]["messages"] == bodies[1]["messages"] == bodies[2]["messages"]


def test_record_replay_and_diff(make_gateway, fake_anthropic, mappings, tmp_path):
    rec = tmp_path / "recorded"
    gw = make_gateway({"TOKLIGENCE_MAPPINGS_DIR": str(mappings), "TOKLIGENCE_ROUTES": ROUTES,
                       "TOKLIGENCE_MAPPING_VERSIONS": "chat-to-messages=2026-01-15",
                       "TOKLIGENCE_API_KEYS": "gw-client-secret", "TOKLIGENCE_AUTH_DISABLED": "false"},
                      args=["--record", str(rec)])
    events = anthropic_stream_events([{"type": "text", "text": ["Compacted", " answer"]}], "compaction")
    fake_anthropic.enqueue(sse_reply(sse_events(events)), json_reply(anthropic_message("Short", stop_reason="end_turn")))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="gw-client-secret", max_retries=0, timeout=20)
    assert ask(client, "claude-sonnet-4-5", True) == "length"  # the pair pinned to the compaction version
    assert ask(client, "claude-sonnet-4-5", False) == "stop"
    gw.stop()

    streams = sorted(rec.glob("anthropic-rec-*.sse"))
    bodies = sorted(rec.glob("anthropic-message-rec-*.json"))
    assert len(streams) == 1 and len(bodies) == 1, sorted(p.name for p in rec.rglob("*"))
    # the answer as the upstream sent it, in the layout the snapshot tests and engine replay read
    assert streams[0].read_bytes() == sse_events(events).encode()
    assert [json.loads(e["data"]) for e in parse_sse(streams[0].read_bytes())] == events
    for ev in events:
        assert schemas.first_error("anthropic/stream-event", ev) is None
    assert json.loads(bodies[0].read_text())["content"][0]["text"] == "Short"
    exchange = json.loads((rec / "requests" / (streams[0].stem + ".json")).read_text())
    assert exchange["pair"] == "chat-to-messages" and exchange["status"] == 200
    assert exchange["specs"]["stream"] == "chat-to-messages/stream@2026-01-15"
    assert exchange["client"]["body"]["stream"] is True and exchange["upstream"]["body"]["stream"] is True
    # the whole client request, though the stream let go of the conversation once it was sent
    assert exchange["client"]["body"]["messages"] == [{"role": "user", "content": "Summarize the thread."}]
    assert exchange["upstream"]["url"].endswith("/v1/messages")
    assert exchange["upstream"]["headers"]["x-api-key"] == "[redacted]"
    assert exchange["client"]["headers"]["authorization"] == "[redacted]"
    everything = "".join(p.read_text() for p in rec.rglob("*") if p.is_file())
    assert "sk-ant-upstream-secret" not in everything and "gw-client-secret" not in everything

    # replay: the recorded client request is used; the version is chosen with --spec
    old = engine("replay", str(streams[0]), "--mappings", str(mappings), "--spec", "chat-to-messages/stream@2025-06-01")
    new = engine("replay", str(streams[0]), "--mappings", str(mappings), "--spec", "chat-to-messages/stream@2026-01-15")
    assert old.returncode == 0 and new.returncode == 0, old.stderr + new.stderr
    assert '"finish_reason":"stop"' in old.stdout and '"finish_reason":"length"' in new.stdout
    assert '"content":"Compacted"' in new.stdout
    body = engine("replay", str(bodies[0]), "--mappings", str(mappings))
    assert body.returncode == 0 and json.loads(body.stdout)["choices"][0]["message"]["content"] == "Short", body.stderr

    # diff: every case (with the overlay's own case) and every fixture, recorded ones included
    cases = tmp_path / "cases"
    shutil.copytree(CASES_DIR, cases)
    shutil.copytree(OVERLAY / "cases", cases, dirs_exist_ok=True)
    d = engine("diff", "chat-to-messages", "2025-06-01", "2026-01-15", "--mappings", str(mappings),
               "--cases", str(cases), "--fixtures", str(rec))
    assert d.returncode == 0, d.stderr
    changed = [line for line in d.stdout.splitlines() if line.startswith("changed")]
    assert [line.split("  (")[0] for line in changed] == [
        "changed  case response/stop-reason-compaction", f"changed  fixture {streams[0].name}"], d.stdout
    assert 'choices[0].finish_reason: "stop" -> "length"' in d.stdout
    assert "request   2025-06-01 -> 2025-06-01  (same spec)" in d.stdout
    assert "; 2 changed" in d.stdout


def test_diff_refuses_a_version_the_pair_does_not_have(mappings):
    d = engine("diff", "chat-to-messages", "2025-06-01", "2099-01-01", "--mappings", str(mappings))
    assert d.returncode == 2 and "versions: 2025-06-01, 2026-01-15" in d.stderr and "Traceback" not in d.stderr


# ---------------------------------------------------------------- upstream values added later

UNKNOWN_STREAM = [
    {"type": "message_start", "message": {"id": "msg_new", "type": "message", "role": "assistant",
                                          "model": "claude-sonnet-4-5", "content": [], "stop_reason": None,
                                          "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "sparkle_delta", "sparkle": "*"}},
    {"type": "message_annotation", "annotation": {"kind": "new"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "compaction", "stop_sequence": None},
     "usage": {"output_tokens": 3}},
    {"type": "message_stop"},
]


def test_unknown_stop_reason_delta_and_event_types_pass_the_schemas_and_reach_the_defaults(gateway,
                                                                                          fake_anthropic_session):
    for ev in UNKNOWN_STREAM:
        assert schemas.first_error("anthropic/stream-event", ev) is None, ev
    body = anthropic_message("Hello there", stop_reason="compaction")
    assert schemas.first_error("anthropic/messages.response", body) is None
    fake_anthropic_session.enqueue(sse_reply(sse_events(UNKNOWN_STREAM)), json_reply(body))
    client = sdk(gateway)
    chunks = list(client.chat.completions.create(model="claude-sonnet-4-5", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    r = client.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == "Hello there"


def test_client_request_schemas_stay_strict(gateway):
    with pytest.raises(openai.BadRequestError) as e:
        sdk(gateway).chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "robot", "content": "hi"}])
    assert "messages[0].role" in str(e.value)


def test_record_a_passthrough_exchange(make_gateway, fake_anthropic, tmp_path):
    import anthropic

    rec = tmp_path / "recorded"
    gw = make_gateway(args=["--record", str(rec)])
    events = anthropic_stream_events([{"type": "text", "text": ["Passed", " through"]}], "end_turn")
    fake_anthropic.enqueue(sse_reply(sse_events(events)))
    client = anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0, timeout=20)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "hi"}]) as s:
        assert s.get_final_text() == "Passed through"
    gw.stop()
    streams = sorted(rec.glob("anthropic-rec-*.sse"))
    assert len(streams) == 1 and streams[0].read_bytes() == sse_events(events).encode()
    exchange = json.loads((rec / "requests" / (streams[0].stem + ".json")).read_text())
    assert "pair" not in exchange and exchange["upstream"]["body"]["model"] == "claude-sonnet-4-5"
    assert exchange["upstream"]["headers"]["x-api-key"] == "[redacted]"
    assert "sk-ant-upstream-secret" not in "".join(p.read_text() for p in rec.rglob("*") if p.is_file())
    # the recorded Anthropic stream replays through a translating pair as any fixture does
    r = engine("replay", str(streams[0]))
    assert r.returncode == 0 and '"content":"Passed"' in r.stdout, r.stderr
