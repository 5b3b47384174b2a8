"""What the real Anthropic Messages API refuses, per model generation (../shared/CURRENT-API.md):
the fake upstream answers these requests with the same 400 the API gives.

This is the upstream's own knowledge, written independently of the gateway's model profiles, so
a wrong profile shows up as a refused request in the tests.
"""
from __future__ import annotations

import re

ADAPTIVE_ONLY = re.compile(r"claude-(opus-4-7|opus-5|mythos-|fable-)", re.I)
GEN_46 = re.compile(r"claude-(opus|sonnet)-4-6", re.I)
EFFORTS = {"adaptive_only": {"low", "medium", "high", "xhigh", "max"}, "4.6": {"low", "medium", "high", "max"}}
SAMPLING = ("temperature", "top_p", "top_k")
MAX_BREAKPOINTS = 4


def generation(model: str) -> str:
    """adaptive_only | 4.6 | 4.5 (4.5 and older)."""
    if ADAPTIVE_ONLY.match(model or ""):
        return "adaptive_only"
    if GEN_46.match(model or ""):
        return "4.6"
    return "4.5"


def _breakpoints(body: dict) -> int:
    count = 0
    for tool in _list(body.get("tools")):
        count += isinstance(tool, dict) and "cache_control" in tool
    system = body.get("system")
    for block in system if isinstance(system, list) else ():
        count += isinstance(block, dict) and "cache_control" in block
    for message in _list(body.get("messages")):
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            count += isinstance(block, dict) and "cache_control" in block
    return count


def _list(value) -> list:
    return value if isinstance(value, list) else []


def refusal(body) -> str | None:
    """The message of the 400 the API answers to this Messages request, or None. A body of the
    wrong shape is left to whatever the fake was scripted to answer (the tests of malformed input
    are about the gateway, not about these rules)."""
    if not isinstance(body, dict) or not isinstance(body.get("model", ""), str):
        return None
    gen = generation(body.get("model") or "")
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    kind = thinking.get("type")
    output_config = body.get("output_config") if isinstance(body.get("output_config"), dict) else {}
    effort = output_config.get("effort")
    messages = _list(body.get("messages"))
    if _breakpoints(body) > MAX_BREAKPOINTS:
        return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {_breakpoints(body)}."
    if gen == "adaptive_only":
        if kind in ("enabled", "disabled"):
            return (f'thinking.type.{kind}: "thinking.type.{kind}" is not supported for this model. '
                    'Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.')
        for name in SAMPLING:
            if name in body:
                return f"`{name}` is deprecated for this model."
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            return ("This model does not support assistant message prefill. "
                    "The conversation must end with a user message.")
    if gen == "4.5":
        if kind == "adaptive":
            return 'thinking.type.adaptive: "adaptive" thinking is not supported for this model. Use "enabled" with budget_tokens.'
        if effort is not None:
            return "output_config.effort: Extra inputs are not permitted"
        if "temperature" in body and "top_p" in body:
            return "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    if effort is not None and (not isinstance(effort, str) or effort not in EFFORTS[gen]):
        return f"output_config.effort: Input should be {', '.join(sorted(EFFORTS[gen]))}"
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if not isinstance(body.get("max_tokens"), int) or budget >= body["max_tokens"]:
            return "`max_tokens` must be greater than `thinking.budget_tokens`."
        if "temperature" in body and body["temperature"] != 1:
            return "`temperature` may only be set to 1 when thinking is enabled."
        if "top_k" in body:
            return "`top_k` is not supported when thinking is enabled."
        if "top_p" in body and not (isinstance(body["top_p"], (int, float)) and 0.95 <= body["top_p"] <= 1):
            return "`top_p` must be between 0.95 and 1 when thinking is enabled."
    if kind in ("enabled", "adaptive"):
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            return "Assistant message prefill is not supported when thinking is enabled."
        choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
        if choice.get("type") in ("any", "tool"):
            return "Thinking may not be enabled when tool_choice forces tool use."
    return None
