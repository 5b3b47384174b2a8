"""The fake Anthropic upstream refuses what the real API refuses for each model generation
(support/anthropic_rules.py, from ../shared/CURRENT-API.md), with the API's 400."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from support.anthropic_rules import generation, refusal

U = [{"role": "user", "content": "Hi"}]


def body(model, **kw):
    return {"model": model, "max_tokens": 32000, "messages": U, **kw}


@pytest.mark.parametrize("model, gen", [
    ("claude-opus-4-7", "adaptive_only"), ("claude-opus-5", "adaptive_only"), ("claude-mythos-preview", "adaptive_only"),
    ("claude-fable-5", "adaptive_only"), ("claude-opus-4-6", "4.6"), ("claude-sonnet-4-6", "4.6"),
    ("claude-sonnet-4-5-20250929", "4.5"), ("claude-opus-4-5", "4.5"), ("claude-3-7-sonnet-latest", "4.5"),
])
def test_generations(model, gen):
    assert generation(model) == gen


@pytest.mark.parametrize("model, fields, words", [
    # adaptive-only: sampling, budget or disabled thinking, prefill
    ("claude-opus-4-7", {"temperature": 1}, "`temperature` is deprecated"),
    ("claude-opus-4-7", {"top_p": 0.9}, "`top_p` is deprecated"),
    ("claude-opus-4-7", {"top_k": 5}, "`top_k` is deprecated"),
    ("claude-opus-4-7", {"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking.type.enabled"),
    ("claude-opus-4-7", {"thinking": {"type": "disabled"}}, "thinking.type.disabled"),
    ("claude-opus-4-7", {"messages": U + [{"role": "assistant", "content": "{"}]}, "prefill"),
    ("claude-opus-4-7", {"output_config": {"effort": "extreme"}}, "output_config.effort"),
    # 4.6: no xhigh effort
    ("claude-opus-4-6", {"output_config": {"effort": "xhigh"}}, "output_config.effort"),
    # 4.5 and older: budget only, its rules
    ("claude-sonnet-4-5", {"thinking": {"type": "adaptive"}}, "adaptive"),
    ("claude-sonnet-4-5", {"output_config": {"effort": "high"}}, "output_config.effort"),
    ("claude-sonnet-4-5", {"temperature": 0.5, "top_p": 0.9}, "cannot both be specified"),
    ("claude-sonnet-4-5", {"thinking": {"type": "enabled", "budget_tokens": 512}}, "greater than or equal to 1024"),
    ("claude-sonnet-4-5", {"max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 2000}},
     "must be greater than"),
    ("claude-sonnet-4-5", {"temperature": 0.5, "thinking": {"type": "enabled", "budget_tokens": 2000}},
     "only be set to 1"),
    # every generation: prefill or forced tool choice with thinking; more than 4 breakpoints
    ("claude-sonnet-4-5", {"thinking": {"type": "enabled", "budget_tokens": 2000},
                           "messages": U + [{"role": "assistant", "content": "{"}]}, "prefill"),
    ("claude-sonnet-4-5", {"thinking": {"type": "enabled", "budget_tokens": 2000}, "tool_choice": {"type": "any"}},
     "tool_choice forces"),
    ("claude-opus-4-6", {"thinking": {"type": "adaptive"}, "tool_choice": {"type": "tool", "name": "f"}},
     "tool_choice forces"),
    ("claude-sonnet-4-5", {"system": [{"type": "text", "text": str(i), "cache_control": {"type": "ephemeral"}}
                                      for i in range(5)]}, "maximum of 4"),
])
def test_refused(model, fields, words):
    message = refusal(body(model, **fields))
    assert message is not None and words in message, message


@pytest.mark.parametrize("model, fields", [
    ("claude-opus-4-7", {"thinking": {"type": "adaptive", "display": "summarized"},
                         "output_config": {"effort": "xhigh", "format": {"type": "json_schema", "schema": {}}}}),
    ("claude-opus-4-6", {"thinking": {"type": "enabled", "budget_tokens": 2048}, "temperature": 1}),
    ("claude-opus-4-6", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}, "top_p": 0.95}),
    ("claude-sonnet-4-5", {"thinking": {"type": "enabled", "budget_tokens": 2048}, "top_p": 0.95}),
    ("claude-sonnet-4-5", {"messages": U + [{"role": "assistant", "content": "{"}]}),
    ("claude-sonnet-4-5", {"temperature": 0.2, "tool_choice": {"type": "any"}}),
    ("claude-opus-4-7", {"tool_choice": {"type": "any"}}),
])
def test_accepted(model, fields):
    assert refusal(body(model, **fields)) is None


def test_the_fake_answers_the_refusal_and_keeps_the_scripted_reply(fake_anthropic):
    fake_anthropic.enqueue({"scripted": True})

    def post(payload):
        req = urllib.request.Request(fake_anthropic.url + "/v1/messages", data=json.dumps(payload).encode(),
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, answer = post(body("claude-opus-4-7", temperature=0.5))
    assert status == 400 and answer["type"] == "error"
    assert answer["error"] == {"type": "invalid_request_error", "message": "`temperature` is deprecated for this model."}
    assert fake_anthropic.requests[0].refused
    assert post(body("claude-opus-4-7")) == (200, {"scripted": True})
    assert fake_anthropic.requests[1].refused is None
