"""Claude Code itself through the gateway, on an OpenAI-compatible model: a Bash tool round trip.

Runs only where the `claude` binary is installed: on PATH, in <repo>/node_modules/.bin, or named by
CLAUDE_CODE_BIN. Install it with `npm install @anthropic-ai/claude-code` (the native binary ships
in the package). Claude Code is pointed at the gateway as in tests/fixtures/clients/README.md:
ANTHROPIC_BASE_URL, a dummy ANTHROPIC_API_KEY, no non-essential traffic, HOME and
CLAUDE_CONFIG_DIR in a temporary folder. The gateway aliases claude* to gpt-4o, served by a fake
OpenAI upstream that asks for `echo hi-from-gateway` through the Bash tool, then answers with the
tool's output. The same round trip runs with `--model gpt-5`, an OpenAI model by name (no alias),
against a fake upstream that refuses what api.openai.com refuses for reasoning models."""
from __future__ import annotations

import os
import subprocess

import pytest

from clients import find
from conftest import gateway_env
from support.fake_upstream import json_reply, openai_chat_completion, openai_chat_stream, sse_reply
from support.gateway import GatewayProcess


CLAUDE = find("CLAUDE_CODE_BIN", "claude-code", "claude")
pytestmark = pytest.mark.skipif(
    CLAUDE is None, reason="Claude Code is not installed: "
                           "npm install --prefix .tools/claude-code @anthropic-ai/claude-code (or set CLAUDE_CODE_BIN)")

MARKER = "hi-from-gateway"


def _answer(rec):
    """The fake model: call Bash once, then report what the tool returned."""
    body = rec.json or {}
    stream = bool(body.get("stream"))
    tool_results = [m for m in body.get("messages") or [] if m.get("role") == "tool"]
    if tool_results:
        text = f"The command printed: {tool_results[-1]['content']}"
        return sse_reply(openai_chat_stream([text])) if stream else json_reply(openai_chat_completion(text))
    if any(t.get("function", {}).get("name") == "Bash" for t in body.get("tools") or []):
        args = ['{"command": "echo hi-from', '-gateway", "description": "Print a greeting"}']
        if stream:
            return sse_reply(openai_chat_stream(None, tool_calls=[("call_bash1", "Bash", args)]), chunk_size=40)
        return json_reply(openai_chat_completion(None, tool_calls=[("call_bash1", "Bash", "".join(args))]))
    return sse_reply(openai_chat_stream(["ok"])) if stream else json_reply(openai_chat_completion("ok"))


def _run_claude(gw, tmp_path, model):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(ANTHROPIC_BASE_URL=gw.url, ANTHROPIC_API_KEY="sk-ant-client-dummy",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
               HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    proc = subprocess.run([CLAUDE, "-p", f"Run echo {MARKER}", "--allowedTools", "Bash", "--model", model],
                          env=env, cwd=home, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\ngateway:\n{gw.output()}"
    return proc


@pytest.fixture
def plain_gateway(fake_anthropic, fake_openai, tmp_path):
    """No aliases: Claude Code asks for a model by name (gpt* to the OpenAI upstream, claude* to Anthropic)."""
    env = gateway_env(fake_anthropic, fake_openai, tmp_path / "data")
    (tmp_path / "data").mkdir()
    gw = GatewayProcess(env)
    gw.start()
    yield gw
    gw.close()


def test_claude_code_on_gpt5_by_name(plain_gateway, fake_openai, fake_anthropic, tmp_path):
    fake_openai.set_default(_answer)
    proc = _run_claude(plain_gateway, tmp_path, "gpt-5")
    assert f"The command printed: {MARKER}" in proc.stdout

    assert fake_anthropic.requests == []
    chats = fake_openai.requests_to("/chat/completions")
    assert chats and all(r.json["model"] == "gpt-5" for r in chats)
    first = next(r.json for r in chats if any(t["function"]["name"] == "Bash" for t in r.json.get("tools") or []))
    # Claude Code's system message inside messages is a system message upstream, in its place
    roles = [m["role"] for m in first["messages"]]
    assert roles[0] == "system" and "system" in roles[1:]
    # a reasoning model: its effort from output_config.effort, no max_tokens, no sampling values
    assert first["reasoning_effort"] == "high" and first["max_completion_tokens"] == 32000
    for r in chats:
        assert "max_tokens" not in r.json and "temperature" not in r.json and "top_p" not in r.json
    final = next(r.json for r in chats if any(m["role"] == "tool" for m in r.json["messages"]))
    tool = next(m for m in final["messages"] if m["role"] == "tool")
    assert tool["tool_call_id"] == "call_bash1" and MARKER in tool["content"]


@pytest.fixture
def cc_gateway(fake_anthropic, fake_openai, tmp_path):
    env = gateway_env(fake_anthropic, fake_openai, tmp_path / "data")
    (tmp_path / "data").mkdir()
    env["TOKLIGENCE_MODEL_ALIASES"] = "claude*=>gpt-4o"
    gw = GatewayProcess(env)
    gw.start()
    yield gw
    gw.close()


def test_claude_code_bash_round_trip(cc_gateway, fake_openai, fake_anthropic, tmp_path):
    fake_openai.set_default(_answer)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(ANTHROPIC_BASE_URL=cc_gateway.url, ANTHROPIC_API_KEY="sk-ant-client-dummy",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
               HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"))
    proc = subprocess.run([CLAUDE, "-p", f"Run echo {MARKER}", "--allowedTools", "Bash",
                           "--model", "claude-sonnet-4-5"],
                          env=env, cwd=home, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\ngateway:\n{cc_gateway.output()}"
    assert f"The command printed: {MARKER}" in proc.stdout

    assert fake_anthropic.requests == []  # everything went to the OpenAI-compatible upstream
    chats = fake_openai.requests_to("/chat/completions")
    first = next(r.json for r in chats if any(t["function"]["name"] == "Bash" for t in r.json.get("tools") or []))
    assert first["model"] == "gpt-4o" and first["stream"] is True
    assert first["stream_options"] == {"include_usage": True}
    assert first["messages"][0]["role"] == "system"
    final = next(r.json for r in chats if any(m["role"] == "tool" for m in r.json["messages"]))
    roles = [m["role"] for m in final["messages"]]
    i = roles.index("tool")
    assistant, tool = final["messages"][i - 1], final["messages"][i]
    assert assistant["role"] == "assistant"
    assert [(c["id"], c["function"]["name"]) for c in assistant["tool_calls"]] == [("call_bash1", "Bash")]
    assert tool["tool_call_id"] == "call_bash1" and MARKER in tool["content"]


def _claude_answer(rec):
    """The fake Claude model: call Bash once, then report what the tool returned."""
    from support.fake_upstream import anthropic_text_stream, anthropic_tool_stream
    body = rec.json or {}
    results = [b for m in body.get("messages") or [] if m.get("role") == "user" and isinstance(m.get("content"), list)
               for b in m["content"] if b.get("type") == "tool_result"]
    if results:
        content = results[-1]["content"]
        text = content if isinstance(content, str) else "".join(c.get("text", "") for c in content)
        return sse_reply(anthropic_text_stream([f"The command printed: {text.strip()}"]))
    if any(t.get("name") == "Bash" for t in body.get("tools") or []):
        return sse_reply(anthropic_tool_stream([("toolu_bash1", "Bash", {"command": f"echo {MARKER}",
                                                                          "description": "Print a greeting"})]))
    return sse_reply(anthropic_text_stream(["ok"]))


def test_claude_code_on_a_claude_model_passes_through(plain_gateway, fake_openai, fake_anthropic, tmp_path):
    """On a Claude model the request is Anthropic's own: passed through untouched, system messages
    and all, and the same Bash round trip works."""
    fake_anthropic.set_default(_claude_answer)
    proc = _run_claude(plain_gateway, tmp_path, "claude-opus-4-7")
    assert f"The command printed: {MARKER}" in proc.stdout
    assert fake_openai.requests == []
    sent = [r for r in fake_anthropic.requests_to("/v1/messages") if any(
        t.get("name") == "Bash" for t in (r.json or {}).get("tools") or [])]
    assert sent and sent[0].json["model"] == "claude-opus-4-7"
    assert sent[0].query.get("beta") == "true"  # Claude Code's own query string, untouched
    assert sent[0].headers["x-api-key"] != "sk-ant-client-dummy"  # the gateway's key, not the client's
