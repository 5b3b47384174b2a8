"""The real Codex CLIs (0.169 on the Responses wire, 0.94 on the chat wire) through the gateway's
newest specs against a fake Anthropic upstream that refuses what the real API refuses for each
model generation (support/anthropic_rules.py): a `claude-opus-4-7`-style model (adaptive thinking
only, no sampling parameters, no prefill) and a `claude-sonnet-4-5`-style one (budget thinking),
with reasoning on and off, a shell tool round trip, and streamed structured output
(`codex exec --output-schema`). Runs when the binaries are installed (.ci/run installs them)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from clients import find
from support.fake_upstream import anthropic_text_stream, anthropic_tool_stream, sse_reply

CODEX_169 = find("CODEX_BIN", "codex-0.169", "codex", on_path=False)
CODEX_094 = find("CODEX_094_BIN", "codex-0.94", "codex", on_path=False)
MODELS = ["claude-opus-4-7", "claude-sonnet-4-5"]
SCHEMA = {"type": "object", "properties": {"files": {"type": "array", "items": {"type": "string"}}},
          "required": ["files"], "additionalProperties": False}

needs_169 = pytest.mark.skipif(CODEX_169 is None, reason="Codex CLI 0.169 not installed: "
                               "npm install --prefix .tools/codex-0.169 @openai/codex@0.169.0")
needs_094 = pytest.mark.skipif(CODEX_094 is None, reason="Codex CLI 0.94 not installed: "
                               "npm install --prefix .tools/codex-0.94 @openai/codex@0.94.0")


@pytest.fixture
def gw(make_gateway):
    return make_gateway({"TOKLIGENCE_MAPPING_VERSIONS": None})  # the newest specs: the default


def run_codex(binary: str, wire: str, gateway_url: str, model: str, prompt: str, *config: str,
              args: tuple = ()) -> subprocess.CompletedProcess:
    home = tempfile.mkdtemp(prefix="codex-home-")
    work = tempfile.mkdtemp(prefix="codex-work-")
    provider = f'model_providers.gw={{name="gw",base_url="{gateway_url}/v1",env_key="GW_KEY",wire_api="{wire}"}}'
    cmd = [binary, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
           "-c", "model_provider=gw", "-c", provider, "-m", model, *args]
    for c in config:
        cmd += ["-c", c]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update({"CODEX_HOME": home, "HOME": home, "GW_KEY": "client-key", "NO_COLOR": "1"})
    try:
        return subprocess.run(cmd + [prompt], cwd=work, env=env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def breakpoints(body: dict) -> int:
    blocks = list(body.get("tools") or []) + list(body.get("system") or [])
    for m in body["messages"]:
        blocks += m["content"] if isinstance(m["content"], list) else []
    return sum("cache_control" in b for b in blocks)


def without_marks(value):
    """The request as the cache sees its prefix: breakpoint markers aside."""
    if isinstance(value, dict):
        return {k: without_marks(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [without_marks(v) for v in value]
    return value


def assert_shape(body: dict, model: str, reasoning: bool):
    """What a request for this model must look like on the newest specs."""
    assert body["model"] == model and body["stream"] is True
    assert not {"temperature", "top_p", "top_k"} & set(body) or model != "claude-opus-4-7"
    if not reasoning:
        assert "thinking" not in body
    elif model == "claude-opus-4-7":
        assert body["thinking"]["type"] == "adaptive" and body["output_config"]["effort"] == "high"
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}
        assert "effort" not in body.get("output_config", {})
    # Codex sends no output limit: the profile's default, not 4096
    assert body["max_tokens"] >= 32000
    # prompt caching: tools, system and the conversation so far, within Anthropic's 4
    assert "cache_control" in body["tools"][-1] and "cache_control" in body["system"][-1]
    assert "cache_control" in body["messages"][-1]["content"][-1]
    assert breakpoints(body) <= 4


@needs_169
@pytest.mark.parametrize("reasoning", [True, False], ids=["reasoning", "no-reasoning"])
@pytest.mark.parametrize("model", MODELS)
def test_codex_169_shell_round_trip(gw, fake_anthropic, model, reasoning):
    thinking = {"thinking": "" if model == "claude-opus-4-7" else "Run it.", "signature": "EqQBCodexSig=="} \
        if reasoning else {}
    fake_anthropic.enqueue(sse_reply(anthropic_tool_stream(
        [("toolu_cur_1", "exec_command", {"cmd": "echo hi-from-current"})], text="Running it.", model=model,
        **thinking)))
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["It printed ", "hi-from-current."], model=model)))
    config = ['model_reasoning_effort="high"'] if reasoning else []
    done = run_codex(CODEX_169, "responses", gw.url, model, "Run echo hi-from-current", *config)
    sent = fake_anthropic.requests_to("/v1/messages")
    assert not [r.refused for r in sent if r.refused], [r.refused for r in sent]
    assert done.returncode == 0, done.stdout + done.stderr[-3000:] + gw.output()[-3000:]
    assert "It printed hi-from-current." in done.stdout
    first, second = [r.json for r in sent]
    assert_shape(first, model, reasoning)
    assert_shape(second, model, reasoning)
    if reasoning and model == "claude-opus-4-7":
        assert first["thinking"]["display"] == "summarized"  # Codex asks for a reasoning summary
    # turn 2 replays turn 1: the cached prefix (tools, system, first turn) is byte for byte the same
    assert json.dumps(second["tools"]) == json.dumps(first["tools"])
    assert json.dumps(second["system"]) == json.dumps(first["system"])
    assert without_marks(second["messages"][0]) == without_marks(first["messages"][0])
    assistant = second["messages"][-2]
    if reasoning:
        assert assistant["content"][0]["type"] == "thinking"
        assert assistant["content"][0]["signature"] == "EqQBCodexSig=="
    assert assistant["content"][-1]["id"] == "toolu_cur_1"
    assert "hi-from-current" in json.dumps(second["messages"][-1])


@needs_169
@pytest.mark.parametrize("reasoning", [True, False], ids=["reasoning", "no-reasoning"])
@pytest.mark.parametrize("model", MODELS)
def test_codex_169_output_schema_streamed(gw, fake_anthropic, tmp_path, model, reasoning):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    answer = '{"files": ["a.txt", "b.txt"]}'
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream([answer[:9], answer[9:20], answer[20:]], model=model)))
    config = ['model_reasoning_effort="high"'] if reasoning else []
    done = run_codex(CODEX_169, "responses", gw.url, model, "List the files as JSON", *config,
                     args=("--output-schema", str(schema)))
    sent = fake_anthropic.requests_to("/v1/messages")
    assert not [r.refused for r in sent if r.refused], [r.refused for r in sent]
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert answer in done.stdout
    body = sent[0].json
    # native structured output, beside Codex's tools and the thinking: no json_response tool
    assert body["output_config"]["format"] == {"type": "json_schema", "schema": SCHEMA}
    assert "json_response" not in [t["name"] for t in body["tools"]]
    assert body.get("tool_choice", {}).get("type") in (None, "auto")
    assert_shape(body, model, reasoning)


@needs_094
@pytest.mark.parametrize("model", MODELS)
def test_codex_094_shell_round_trip(gw, fake_anthropic, model):
    """Codex 0.94 sends no reasoning_effort on the chat wire for these model names, even with
    model_reasoning_effort set (the request has no thinking); the reasoning round trip on the chat
    wire is exercised with the openai SDK (test_current_models_e2e.py)."""
    fake_anthropic.enqueue(sse_reply(anthropic_tool_stream(
        [("toolu_chat_1", "shell", {"command": ["bash", "-lc", "echo hi-from-chat"]})], text="Running it.",
        model=model)))
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["It printed ", "hi-from-chat."], model=model)))
    done = run_codex(CODEX_094, "chat", gw.url, model, "Run echo hi-from-chat", 'model_reasoning_effort="high"')
    sent = fake_anthropic.requests_to("/v1/messages")
    assert not [r.refused for r in sent if r.refused], [r.refused for r in sent]
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "hi-from-chat." in done.stdout + done.stderr
    first, second = [r.json for r in sent]
    for body in (first, second):
        assert_shape(body, model, reasoning=False)
    assert json.dumps(second["tools"]) == json.dumps(first["tools"])
    assert json.dumps(second["system"]) == json.dumps(first["system"])
    assert without_marks(second["messages"][0]) == without_marks(first["messages"][0])
    assert second["messages"][-1]["content"][0]["tool_use_id"] == "toolu_chat_1"
    assert "hi-from-chat" in json.dumps(second["messages"][-1])
