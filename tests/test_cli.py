"""`engine check | translate | replay`, and what `engine serve` says at start and without a key."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def engine(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_check_passes_on_the_project_specs():
    r = engine("check")
    assert r.returncode == 0, r.stderr
    assert "ok  chat-to-messages/stream@2025-06-01" in r.stdout


def test_check_reports_every_error_with_a_caret_and_exits_1(tmp_path):
    head = 'apiVersion: engine.mapping/v1\nkind: RequestMapping\nmetadata: {name: t/request, version: "2025-01-01", changes: [x]}\n'
    (tmp_path / "one.yaml").write_text(head + 'template:\n  a: "src.[["\n  b: {use: nope}\n')
    (tmp_path / "two.yaml").write_text(head.replace("t/request", "t/other") + "template: {c: {each: x, mapp: y}}\n")
    r = engine("check", "--mappings", str(tmp_path))
    assert r.returncode == 1
    err = r.stderr
    assert "one.yaml:5:" in err and "template.a: invalid JMESPath expression" in err
    assert "no block named 'nope'" in err
    assert "two.yaml:4:" in err and "mapp" in err
    assert "`x` is not a name in scope" in err
    assert "4 error(s)" in err
    assert "^" in err


def test_translate_applies_a_request_spec_to_a_captured_request():
    r = engine("translate", "--spec", "chat-to-messages/request@2025-06-01",
               str(FIXTURES / "clients" / "codex-0.94-chat-req2.json"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "gpt-4o" and out["max_tokens"] == 4096
    assert out["messages"][-1]["content"][0]["type"] == "tool_result"


def test_translate_reports_a_rejected_request(tmp_path):
    f = tmp_path / "req.json"
    f.write_text(json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}))
    r = engine("translate", "--spec", "chat-to-messages/request", str(f))
    assert r.returncode == 1 and json.loads(r.stdout)["rejected"]["param"] == "n"


def test_replay_prints_the_translated_stream_and_timing():
    r = engine("replay", str(FIXTURES / "anthropic-text.sse"), "--time", "--repeat", "50")
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("data: [DONE]")
    assert "µs/event through chat-to-messages/stream@" in r.stderr
    assert "json decode/encode alone" in r.stderr


def test_serve_logs_address_and_routes_and_explains_a_missing_key(make_gateway):
    gw = make_gateway(env_overrides={"TOKLIGENCE_ANTHROPIC_API_KEY": None})
    log = gw.output()
    assert f"listening on http://127.0.0.1:{gw.port}" in log
    assert "routes: claude*=>anthropic, gpt*=>openai" in log
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "x"}])
    assert "anthropic_api_key" in info.value.body["message"]
    assert "TOKLIGENCE_ANTHROPIC_API_KEY" in info.value.body["message"]
