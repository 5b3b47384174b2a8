"""Codex CLI 0.169 (`wire_api="responses"`) through the gateway against a fake Anthropic upstream.

Runs when Codex 0.169 is found: $CODEX_BIN, else .tools/codex-0.169 (which .ci/run installs).
Install one with `npm install @openai/codex@0.169.0` (in the repo, or anywhere with CODEX_BIN set);
node_modules is never part of the repository. Codex runs non-interactively (`codex exec`), with a
temporary CODEX_HOME, no sandbox and no approvals, pointed at the gateway by a model provider of
its own; nothing leaves loopback.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from clients import find
from support.fake_upstream import anthropic_text_stream, anthropic_tool_stream, sse_reply

REPO = Path(__file__).resolve().parent.parent


CODEX = find("CODEX_BIN", "codex-0.169", "codex", on_path=False)
pytestmark = pytest.mark.skipif(
    CODEX is None, reason="Codex CLI 0.169 not installed: "
                          "npm install --prefix .tools/codex-0.169 @openai/codex@0.169.0 (or set CODEX_BIN)")


def run_codex(gateway_url: str, prompt: str, *config: str, timeout: float = 120) -> subprocess.CompletedProcess:
    home = tempfile.mkdtemp(prefix="codex-home-")
    work = tempfile.mkdtemp(prefix="codex-work-")
    provider = f'model_providers.gw={{name="gw",base_url="{gateway_url}/v1",env_key="GW_KEY",wire_api="responses"}}'
    cmd = [CODEX, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
           "-c", "model_provider=gw", "-c", provider, "-m", "claude-sonnet-4-5"]
    for c in config:
        cmd += ["-c", c]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update({"CODEX_HOME": home, "HOME": home, "GW_KEY": "client-key", "NO_COLOR": "1"})
    try:
        return subprocess.run(cmd + [prompt], cwd=work, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def test_codex_version():
    out = subprocess.run([CODEX, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "0.169" in out.stdout, out.stdout + out.stderr


def test_codex_shell_round_trip(make_gateway, fake_anthropic):
    gw = make_gateway()
    # turn 1: Claude thinks, says a word and calls Codex's shell tool, with the command as argv
    # where Codex's exec_command wants one string; turn 2: it reads the output and answers
    fake_anthropic.enqueue(sse_reply(anthropic_tool_stream(
        [("toolu_codex_1", "exec_command", {"cmd": ["bash", "-lc", "echo hi-from-the-gateway-test"]})],
        text="Running it.", thinking="I should run the command.", signature="EqQBCodexSignature==")))
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["The command printed ", "hi-from-the-gateway-test."])))
    done = run_codex(gw.url, "Run echo hi-from-the-gateway-test", 'model_reasoning_effort="low"')
    assert done.returncode == 0, done.stdout + done.stderr + gw.output()[-4000:]
    assert "The command printed hi-from-the-gateway-test." in done.stdout

    first, second = [r.json for r in fake_anthropic.requests_to("/v1/messages")]
    # what Codex sent, as Anthropic received it: developer items in system, its function tools only
    assert first["system"] and first["stream"] is True
    names = [t["name"] for t in first["tools"]]
    assert "exec_command" in names and "web_search" not in names and "multi_agent_v1" not in names
    assert first["thinking"]["type"] == "enabled"
    # turn 2: Codex replayed everything (store:false): the thinking block by its encrypted_content,
    # the tool call by its call_id, and the real output of the command it ran
    assistant, results = second["messages"][-2], second["messages"][-1]
    assert [b["type"] for b in assistant["content"]] == ["thinking", "text", "tool_use"]
    assert assistant["content"][0] == {"type": "thinking", "thinking": "I should run the command.",
                                       "signature": "EqQBCodexSignature=="}
    assert assistant["content"][2]["id"] == "toolu_codex_1"
    assert results["content"][0]["type"] == "tool_result" and results["content"][0]["tool_use_id"] == "toolu_codex_1"
    assert "hi-from-the-gateway-test" in results["content"][0]["content"]
    assert "exited with code 0" in results["content"][0]["content"]


def test_codex_retries_a_failed_stream_without_keeping_half_an_answer(make_gateway, fake_anthropic):
    gw = make_gateway()
    # the upstream is overloaded mid-answer: error event -> `error` + response.failed (server_error),
    # which Codex retries; the partial text was never a done item, so the retry does not carry it
    overloaded = (REPO / "tests" / "fixtures" / "anthropic-error-mid-stream.sse").read_text()
    fake_anthropic.enqueue(sse_reply(overloaded))
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["Recovered ", "answer."])))
    done = run_codex(gw.url, "Say something")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Recovered answer." in done.stdout
    first, second = [r.json for r in fake_anthropic.requests_to("/v1/messages")]
    assert second["messages"] == first["messages"]
    assert [m["role"] for m in second["messages"]] == ["user"]
