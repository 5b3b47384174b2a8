"""`event_loop`: `engine serve` on uvloop by default, on asyncio's loop when asked; both serve the
same answers. A missing uvloop asked for by name stops the start with a config error."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import openai
import pytest

from support.fake_upstream import fixture, json_reply, sse_reply
from support.gateway import REPO_ROOT, free_port

from engine import config
from engine.cli import event_loop_factory

MODEL = "claude-sonnet-4-5"


def _round_trip(gw, upstream):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=20)
    upstream.enqueue(json_reply(json.loads(fixture("anthropic-message-text.json"))))
    whole = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    upstream.enqueue(sse_reply(fixture("anthropic-text-cache-usage-ping.sse"), chunk_size=37))
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True) if c.choices]
    return whole.choices[0].message.content, "".join(parts)


@pytest.mark.parametrize("setting,loop", [(None, "uvloop"), ("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_serve_runs_on_the_chosen_loop(make_gateway, fake_anthropic, setting, loop):
    gw = make_gateway(env_overrides={"TOKLIGENCE_EVENT_LOOP": setting})
    assert f"event loop: {loop}" in gw.output()
    text, streamed = _round_trip(gw, fake_anthropic)
    assert text and streamed and "Hello" in streamed + text


def test_both_loops_give_the_same_answers(make_gateway, fake_anthropic):
    answers = [_round_trip(make_gateway(env_overrides={"TOKLIGENCE_EVENT_LOOP": loop}), fake_anthropic)
               for loop in ("asyncio", "uvloop")]
    assert answers[0] == answers[1]


def test_the_setting_is_checked():
    assert config.load({"set": ["event_loop=asyncio"]}, env={}).event_loop == "asyncio"
    assert config.load({}, env={"TOKLIGENCE_EVENT_LOOP": "UVLOOP"}).event_loop == "uvloop"
    with pytest.raises(config.ConfigError, match="event_loop.*expected one of auto, uvloop, asyncio"):
        config.load({}, env={"TOKLIGENCE_EVENT_LOOP": "trio"})


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch):
    import asyncio
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(ImportError):
        event_loop_factory("uvloop")


def test_serve_refuses_uvloop_by_name_when_it_is_missing(tmp_path):
    # a sitecustomize that hides uvloop from the child process
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['uvloop'] = None\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKLIGENCE_")}
    env.update({"PYTHONPATH": str(tmp_path), "TOKLIGENCE_EVENT_LOOP": "uvloop"})
    r = subprocess.run([sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", str(free_port())],
                       capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "event_loop=uvloop, but uvloop is not installed" in r.stderr
    assert "Traceback" not in r.stderr
