"""Codex CLI 0.94 (wire_api="chat") completing a shell tool round trip through the gateway
against a fake Anthropic upstream. Runs when the binary is installed (.ci/run installs it)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from clients import find
from support.fake_upstream import anthropic_text_stream, anthropic_tool_stream, sse_reply

CODEX = find("CODEX_094_BIN", "codex-0.94", "codex", on_path=False)
pytestmark = pytest.mark.skipif(CODEX is None, reason="Codex CLI 0.94 not installed: "
                                "npm install --prefix .tools/codex-0.94 @openai/codex@0.94.0")


def test_codex_094_shell_round_trip(gateway, fake_anthropic_session, tmp_path):
    up = fake_anthropic_session
    up.enqueue(sse_reply(anthropic_tool_stream(
        [("toolu_codex1", "shell", ['{"command": ["bash", "-lc", ', '"echo hi-from-codex"]}'])],
        text="Running it.")))
    up.enqueue(sse_reply(anthropic_text_stream(["The command printed ", "hi-from-codex."])))
    home = tmp_path / "codex-home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    provider = (f'model_providers.gw={{name="gw",base_url="{gateway.url}/v1",env_key="GW_KEY",'
                f'wire_api="chat"}}')
    env = {**os.environ, "CODEX_HOME": str(home), "GW_KEY": "client-key", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [CODEX, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
         "-c", "model_provider=gw", "-c", provider, "-m", "claude-sonnet-4-5", "Run echo hi-from-codex"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hi-from-codex." in proc.stdout + proc.stderr
    requests = up.requests_to("/v1/messages")
    assert len(requests) == 2, [r.json for r in requests]
    first, second = requests[0].json, requests[1].json
    assert any(t["name"] == "shell" for t in first["tools"])
    assert isinstance(first["system"], list) and first["system"]
    last = second["messages"][-1]
    assert last["role"] == "user" and last["content"][0]["type"] == "tool_result"
    assert last["content"][0]["tool_use_id"] == "toolu_codex1"
    result = last["content"][0]["content"]
    text = result if isinstance(result, str) else json.dumps(result)
    assert "hi-from-codex" in text
    assistant = second["messages"][-2]
    assert assistant["role"] == "assistant"
    assert any(b["type"] == "tool_use" and b["input"] == {"command": ["bash", "-lc", "echo hi-from-codex"]}
               for b in assistant["content"])
