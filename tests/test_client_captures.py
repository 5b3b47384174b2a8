"""Every captured client request (tests/fixtures/clients) through the request spec of its pair,
as the gateway would send it: the output is what the upstream accepts, and every tool and every
field the client sent is accounted for (sent, or named by the spec's drops for x-gateway-dropped)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import schemas
from engine.profiles import shipped
from support.fake_upstream import openai_refusal

CLIENTS = Path(__file__).parent / "fixtures" / "clients"
CFG = {"default_max_tokens": 4096, "max_tokens_cap": 0, "prompt_cache": "off", "prompt_cache_ttl": "5m"}


def translate(catalog, pair: str, body: dict, model: str):
    spec = catalog.get(f"{pair}/request")
    scope = spec.scope(src=body, req={}, cfg=CFG, model=model, profile=shipped().get(model), prev=None)
    assert spec.check(scope) is None, spec.check(scope)
    assert schemas.first_error(spec.source, body) is None
    out = spec.template(scope)
    assert schemas.first_error(spec.target, out) is None, schemas.first_error(spec.target, out)
    return out, [p for p, _ in spec.dropped(scope)]


@pytest.mark.parametrize("name", sorted(p.name for p in CLIENTS.glob("codex-0.1[67]*-responses-*.json")))
def test_codex_responses_capture_every_tool_offered_or_named(catalog, name):
    body = json.loads((CLIENTS / name).read_text())["body"]
    out, dropped = translate(catalog, "responses-to-messages", body, "claude-sonnet-4-5")
    sent = {t["name"] for t in out["tools"]}
    for tool in body["tools"]:
        if tool["type"] == "function":
            assert tool["name"] in sent
        elif tool["type"] == "namespace":
            assert {f"{tool['name']}__{f['name']}" for f in tool["tools"]} <= sent
        elif tool["type"] == "web_search":
            assert {"type": "web_search_20250305", "name": "web_search"} in out["tools"]
        else:
            assert tool["type"] in dropped, tool["type"]
    # Codex's fields with no Anthropic counterpart are named, not lost in silence
    assert "prompt_cache_key" in dropped and "client_metadata" in dropped


@pytest.mark.parametrize("name", sorted(p.name for p in CLIENTS.glob("claude-code-*-gpt5-req1.json")))
def test_claude_code_on_gpt5_capture_is_what_gpt5_accepts(catalog, name):
    body = json.loads((CLIENTS / name).read_text())["body"]
    out, dropped = translate(catalog, "messages-to-chat", body, "gpt-5")
    assert openai_refusal(out) is None  # what api.openai.com refuses for reasoning models
    roles = [m["role"] for m in out["messages"]]
    assert roles[0] == "system" and roles.count("system") == 2  # `system`, then the one inside messages
    assert out["reasoning_effort"] == "high" and out["max_completion_tokens"] == body["max_tokens"]
    assert {t["function"]["name"] for t in out["tools"]} == {t["name"] for t in body["tools"]}
    assert "context_management" in dropped and "cache_control" in dropped


@pytest.mark.parametrize("name", sorted(p.name for p in CLIENTS.glob("codex-0.94-chat-*.json")))
def test_codex_chat_capture_translates_whole(catalog, name):
    body = json.loads((CLIENTS / name).read_text())["body"]
    out, dropped = translate(catalog, "chat-to-messages", body, "claude-sonnet-4-5")
    assert [t["name"] for t in out["tools"]] == [t["function"]["name"] for t in body["tools"]]
    assert dropped == []
