"""Model profiles (engine/profiles.py, mappings/profiles/models.yaml) and the `drops:` section of
request specs with its x-gateway-dropped header."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from engine import config as config_mod
from engine.catalog import MAPPINGS_DIR, Catalog, compile_dir
from engine.profiles import PROFILES_FILE, ProfileError, Profiles, shipped

from conftest import gateway_env


@pytest.mark.parametrize("model, fields", [
    ("claude-opus-4-7", {"provider": "anthropic", "thinking": "adaptive", "sampling": False, "prefill": False,
                         "thinking_hidden": True, "structured_output": True, "cache_min_tokens": 4096}),
    ("claude-mythos-preview", {"thinking": "adaptive", "sampling": False}),
    ("claude-sonnet-5", {"thinking": "adaptive", "sampling": False, "prefill": False}),   # like: opus-4-7
    ("claude-opus-4-6", {"thinking": "adaptive_or_budget", "sampling": True, "prefill": True}),
    ("claude-sonnet-4-5-20250929", {"thinking": "budget", "efforts": [], "structured_output": True,
                                    "max_tokens_max": 64000}),
    ("claude-3-5-haiku-latest", {"thinking": "none", "max_tokens_max": 8192}),
    ("claude-3-7-sonnet-latest", {"thinking": "budget"}),
    ("gpt-5", {"provider": "openai", "reasoning": True, "sampling": False,
               "reasoning_efforts": ["minimal", "low", "medium", "high"]}),
    ("gpt-5.1-codex", {"reasoning": True, "reasoning_efforts": ["none", "low", "medium", "high", "xhigh"]}),
    ("gpt-5-chat-latest", {"reasoning": False, "sampling": True}),
    ("o3-mini", {"reasoning": True, "sampling": False}),
    ("gpt-4o-mini", {"reasoning": False, "sampling": True, "max_tokens_max": 16384}),
    ("gpt-4.1", {"reasoning": False, "structured_output": True}),
])
def test_shipped_profiles(model, fields):
    profile = shipped().get(model)
    assert {k: profile[k] for k in fields} == fields


def test_an_unknown_model_gets_the_defaults_and_every_field():
    profile = shipped().get("some-local-model")
    assert profile["match"] is None and profile["thinking"] == "budget" and profile["sampling"] is True
    assert set(shipped().get("claude-opus-4-7")) == set(profile)


def test_user_file_comes_first_and_like_starts_from_another_profile(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("apiVersion: engine.mapping/v1\nkind: ModelProfiles\nprofiles:\n"
                    "  - match: claude-sonnet-4-5*\n    max_tokens_default: 8000\n    like: claude-sonnet-4-5\n"
                    "  - match: my-proxy-*\n    like: claude-opus-4-7\n    cache_min_tokens: 1024\n")
    table = Profiles.load(str(user))
    sonnet = table.get("claude-sonnet-4-5")
    assert sonnet["max_tokens_default"] == 8000 and sonnet["max_tokens_max"] == 64000
    assert sonnet["thinking"] == "budget" and sonnet["structured_output"] is True
    proxy = table.get("my-proxy-large")
    assert proxy["thinking"] == "adaptive" and proxy["sampling"] is False and proxy["cache_min_tokens"] == 1024
    assert table.get("claude-opus-4-7") == shipped().get("claude-opus-4-7")


@pytest.mark.parametrize("text, where", [
    ("apiVersion: engine.mapping/v1\nkind: ModelProfiles\nprofiles:\n  - match: x\n    thinking: sometimes\n",
     ":5:"),
    ("apiVersion: engine.mapping/v1\nkind: ModelProfiles\nprofiles:\n  - match: x\n    samplng: true\n", ":4:"),
    ("apiVersion: engine.mapping/v1\nkind: ModelProfiles\nprofiles:\n  - match: x\n    like: nothing-known\n",
     "like: 'nothing-known'"),
])
def test_a_bad_profile_file_is_refused_naming_where(tmp_path, text, where):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ProfileError) as e:
        Profiles.load(str(bad))
    assert str(bad) in str(e.value) and where in str(e.value)


def test_the_config_key_checks_the_file(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("apiVersion: engine.mapping/v1\nkind: ModelProfiles\nprofiles: []\n")
    cfg = config_mod.load({}, env={"TOKLIGENCE_MODEL_PROFILES_FILE": str(good)})
    assert cfg.model_profiles_file == str(good)
    with pytest.raises(config_mod.ConfigError, match="model_profiles_file"):
        config_mod.load({"set": [f"model_profiles_file={tmp_path / 'missing.yaml'}"]}, env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: engine.mapping/v1\nkind: ModelProfiles\nprofiles: [{match: x, thinking: 3}]\n")
    with pytest.raises(config_mod.ConfigError, match="thinking"):
        config_mod.load({}, env={"TOKLIGENCE_MODEL_PROFILES_FILE": str(bad)})


def test_engine_check_checks_profile_tables_and_does_not_take_them_for_specs(tmp_path):
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, root)
    specs, errors = compile_dir(root)
    assert not errors and not any(name.startswith("profiles") for name, _ in specs)
    (root / "profiles" / "models.yaml").write_text(
        PROFILES_FILE.read_text().replace("thinking: adaptive\n", "thinking: always\n", 1))
    _, errors = compile_dir(root)
    assert len(errors) == 1 and "thinking" in str(errors[0]) and "models.yaml" in str(errors[0])


# ---------------------------------------------------------------- drops and x-gateway-dropped

_DROP = ("drops:\n"
         "  - when: \"!(profile.sampling) && src.{field} != `null`\"\n"
         "    param: {field}\n"
         "    reason: \"the target model refuses sampling parameters\"\n")


def _catalog_with_drops(tmp_path) -> Catalog:
    """The shipped specs, each translated request spec declaring a drop of one sampling field."""
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, root)
    for pair, field in (("chat-to-messages", "temperature"), ("responses-to-messages", "temperature"),
                        ("messages-to-chat", "top_k")):
        for path in (root / pair / "request").glob("*.yaml"):
            text = path.read_text()
            path.write_text(text.replace("\ntemplate:\n", "\n" + _DROP.format(field=field) + "template:\n", 1))
    return Catalog.load(root)


def test_drops_are_compiled_and_reported_in_order(tmp_path):
    spec = _catalog_with_drops(tmp_path).get("chat-to-messages/request")
    assert len(spec.drops) == 1
    scope = spec.scope(src={"model": "m", "messages": [], "temperature": 0.2}, cfg={"default_max_tokens": 10},
                       model="claude-opus-4-7", profile=shipped().get("claude-opus-4-7"))
    assert spec.dropped(scope) == [("temperature", "the target model refuses sampling parameters")]
    scope["profile"] = shipped().get("claude-sonnet-4-5")
    assert spec.dropped(scope) == []


async def test_the_dropped_header_on_every_translated_endpoint(tmp_path, fake_anthropic, fake_openai, caplog):
    cfg = config_mod.load({}, env={**gateway_env(fake_anthropic, fake_openai, tmp_path),
                                   "TOKLIGENCE_ROUTES": "claude*=>anthropic,gpt*=>openai",
                                   "TOKLIGENCE_MODEL_ALIASES": "claude-via-gpt=>gpt-5"})
    from engine.server.app import create_app
    app = create_app(cfg, _catalog_with_drops(tmp_path))
    server = TestServer(app)
    await server.start_server()
    caplog.set_level(logging.DEBUG, logger="engine")
    calls = [
        ("/v1/chat/completions", {"model": "claude-opus-4-7", "temperature": 0.3,
                                  "messages": [{"role": "user", "content": "hi"}]}, "temperature"),
        ("/v1/responses", {"model": "claude-opus-4-7", "temperature": 0.3, "input": "hi"}, "temperature"),
        ("/v1/messages", {"model": "claude-via-gpt", "max_tokens": 50, "top_k": 5,
                          "messages": [{"role": "user", "content": "hi"}]}, "top_k"),
    ]
    try:
        async with aiohttp.ClientSession() as s:
            for path, body, field in calls:
                for stream in (False, True):
                    async with s.post(server.make_url(path), json={**body, "stream": stream}) as r:
                        text = await r.text()
                        assert r.status == 200, text
                        assert r.headers.get("x-gateway-dropped") == field, (path, stream)
                        assert ("data:" in text) == stream
                # a model whose profile accepts the field: nothing dropped, no header
                kept = {**body, "model": "claude-sonnet-4-5" if body["model"].startswith("claude-opus") else "gpt-4o"}
                async with s.post(server.make_url(path), json=kept) as r:
                    assert r.status == 200 and "x-gateway-dropped" not in r.headers
    finally:
        await server.close()
    lines = [r.getMessage() for r in caplog.records if "not sent to" in r.getMessage()]
    assert len(lines) == 6 and all("sampling parameters" in m for m in lines), lines
    assert any("not sent to claude-opus-4-7: temperature" in m for m in lines)
    assert any("not sent to gpt-5: top_k" in m for m in lines)
    assert json.loads(fake_anthropic.requests[0].body)["model"] == "claude-opus-4-7"
