"""Codex CLI 0.169 (`wire_api="responses"`) through the gateway against a fake Anthropic upstream.

Runs when Codex 0.169 is found: $CODEX_BIN, else .tools/codex-0.169 (which .ci/run installs).
Install one with `npm install @openai/codex@0.169.0` (in the repo, or anywhere with CODEX_BIN set);
node_modules is never part of the repository. Codex runs non-interactively (`codex exec`), with a
temporary CODEX_HOME, no sandbox and no approvals, pointed at the gateway by a model provider of
its own; nothing leaves loopback.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from clients import find
from conftest import PINNED_2025
from support.fake_upstream import anthropic_stream_events, anthropic_text_stream, anthropic_tool_stream, \
    sse_events, sse_reply

REPO = Path(__file__).resolve().parent.parent


CODEX = find("CODEX_BIN", "codex-0.169", "codex", on_path=False)
pytestmark = pytest.mark.skipif(
    CODEX is None, reason="Codex CLI 0.169 not installed: "
                          "npm install --prefix .tools/codex-0.169 @openai/codex@0.169.0 (or set CODEX_BIN)")


# Codex's tools on the newest specs (the default, what users get) and on 2025-06-01 (still selectable)
VERSIONS = pytest.mark.parametrize("versions", [None, PINNED_2025], ids=["newest", "2025-06-01"])


def run_codex(gateway_url: str, prompt: str, *config: str, timeout: float = 120,
              work: str | None = None) -> subprocess.CompletedProcess:
    home = tempfile.mkdtemp(prefix="codex-home-")
    keep_work = work is not None
    work = work or tempfile.mkdtemp(prefix="codex-work-")
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
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)


def test_codex_version(tmp_path):
    # a home of its own, like every other run here: Codex keeps temp files under CODEX_HOME even for this
    env = {**os.environ, "CODEX_HOME": str(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([CODEX, "--version"], capture_output=True, text=True, timeout=60, env=env)
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
    assert "exec_command" in names and "multi_agent_v1" not in names
    # the sub-agent tools under their flat names, Codex's web_search as Anthropic's web search
    assert "multi_agent_v1__spawn_agent" in names
    # (on the newest specs, the last tool also carries the gateway's cache breakpoint)
    assert {"type": "web_search_20250305", "name": "web_search"} in [
        {k: v for k, v in t.items() if k != "cache_control"} for t in first["tools"]]
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


# A model catalog entry that gives claude-sonnet-4-5 Codex's freeform apply_patch tool (Codex offers
# it only to models whose metadata asks for it).
CATALOG = {"models": [{
    "slug": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "description": "via the gateway",
    "apply_patch_tool_type": "freeform", "shell_type": "shell_command", "visibility": "list",
    "supported_in_api": True, "priority": 1, "supports_reasoning_summaries": True, "support_verbosity": False,
    "default_verbosity": None, "truncation_policy": {"mode": "bytes", "limit": 10000},
    "supports_parallel_tool_calls": True, "context_window": 200000, "default_reasoning_level": "medium",
    "supported_reasoning_levels": [{"effort": "low", "description": "low"}, {"effort": "medium", "description": "medium"}],
    "input_modalities": ["text", "image"], "base_instructions": "You are Codex, a coding agent.",
    "upgrade": None, "model_messages": None, "experimental_supported_tools": []}]}
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from apply_patch\n*** End Patch\n"
SUBTASK = "SUBTASK: say hi-from-the-sub-agent"


def _results(body) -> dict:
    """tool_use name -> the text of its tool_result, over the whole conversation."""
    names = {b["id"]: b["name"] for m in body["messages"] if m["role"] == "assistant"
             for b in m["content"] if b["type"] == "tool_use"}
    out = {}
    for m in body["messages"]:
        for b in m["content"] if m["role"] == "user" else ():
            if b["type"] == "tool_result":
                c = b["content"]
                out[names.get(b["tool_use_id"])] = c if isinstance(c, str) else json.dumps(c)
    return out


def _session(rec):
    """The fake model of a session: exec_command, then apply_patch, then a sub-agent, then the
    answer; the sub-agent's own conversation (its first user turn is the task) just answers."""
    body = rec.json
    last_user = [b.get("text", "") for m in body["messages"] if m["role"] == "user"
                 for b in m["content"] if b["type"] == "text"]
    if last_user and SUBTASK in last_user[-1]:
        return sse_reply(anthropic_text_stream(["hi-from-the-sub-agent"]))
    done = _results(body)
    if "exec_command" not in done:
        return sse_reply(anthropic_tool_stream([("toolu_exec1", "exec_command", {"cmd": "echo exec-ran-ok"})]))
    if "apply_patch" not in done:
        return sse_reply(anthropic_tool_stream([("toolu_patch1", "apply_patch", {"input": PATCH})]))
    if "multi_agent_v1__spawn_agent" not in done:
        return sse_reply(anthropic_tool_stream([("toolu_spawn1", "multi_agent_v1__spawn_agent", {"message": SUBTASK})]))
    return sse_reply(anthropic_text_stream(["All three tools ", "worked."]))


@VERSIONS
def test_codex_session_with_exec_apply_patch_and_a_sub_agent(make_gateway, fake_anthropic, tmp_path, versions):
    gw = make_gateway({"TOKLIGENCE_MAPPING_VERSIONS": versions})
    fake_anthropic.set_default(_session)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(CATALOG))
    work = tmp_path / "work"
    work.mkdir()
    done = run_codex(gw.url, "Run a command, add hello.txt, and ask a helper to say hi",
                     f'model_catalog_json="{catalog}"', work=str(work), timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr + gw.output()[-4000:]
    assert "All three tools worked." in done.stdout

    # apply_patch (a custom, freeform tool) reached Codex as a custom_tool_call and ran
    assert (work / "hello.txt").read_text() == "hello from apply_patch\n"
    bodies = [r.json for r in fake_anthropic.requests_to("/v1/messages")]
    parent = [b for b in bodies if not any(SUBTASK in json.dumps(m) for m in b["messages"][:1])]
    final = max(parent, key=lambda b: len(b["messages"]))
    tools = {t["name"]: t for t in final["tools"]}
    assert tools["apply_patch"]["input_schema"]["required"] == ["input"]
    assert "grammar" in tools["apply_patch"]["description"]
    results = _results(final)
    assert "exec-ran-ok" in results["exec_command"]
    assert "hello.txt" in results["apply_patch"]
    # the sub-agent call went back to Codex as spawn_agent in namespace multi_agent_v1, which it
    # routed to its agent manager: the output is the new agent's id (an unknown call would come
    # back as an error text)
    spawned = results["multi_agent_v1__spawn_agent"]
    assert json.loads(spawned)["agent_id"], spawned
    history = [b for m in final["messages"] if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"]
    assert [b["name"] for b in history] == ["exec_command", "apply_patch", "multi_agent_v1__spawn_agent"]
    assert history[1]["input"] == {"input": PATCH}


@VERSIONS
def test_codex_web_search_through_anthropic(make_gateway, fake_anthropic, versions):
    """Codex's web_search tool is Anthropic's web search: the search the model ran comes back as a
    web_search_call item, which Codex takes as such, and the answer after it is printed."""
    gw = make_gateway({"TOKLIGENCE_MAPPING_VERSIONS": versions})
    fake_anthropic.enqueue(sse_reply(sse_events(anthropic_stream_events([
        {"type": "server_tool_use", "id": "srvtoolu_01W", "name": "web_search",
         "partial_json": ['{"query": "rust 2024 edition"}']},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01W",
         "content": [{"type": "web_search_result", "url": "https://example.com/rust", "title": "Rust 2024",
                      "encrypted_content": "EqQ", "page_age": None}]},
        {"type": "text", "text": ["Rust 2024 ", "is stable."]},
    ]))))
    done = run_codex(gw.url, "Search the web: is the Rust 2024 edition stable?")
    assert done.returncode == 0, done.stdout + done.stderr + gw.output()[-4000:]
    assert "Rust 2024 is stable." in done.stdout
    first = fake_anthropic.requests_to("/v1/messages")[0].json
    # (on the newest specs, the last tool also carries the gateway's cache breakpoint)
    assert {"type": "web_search_20250305", "name": "web_search"} in [
        {k: v for k, v in t.items() if k != "cache_control"} for t in first["tools"]]
