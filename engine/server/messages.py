"""POST /v1/messages and /v1/messages/count_tokens (also under /anthropic): the Anthropic Messages
API, for the anthropic SDKs and Claude Code.

A model routed to anthropic is passed through untouched (passthrough.anthropic_passthrough). A
model routed to an OpenAI-compatible provider (directly, or through `model_aliases` such as
`claude-*=>gpt-4o`) is translated by the messages-to-chat mapping specs to Chat Completions.

count_tokens on a translated route: Chat Completions has no such endpoint, so the gateway answers
with a local estimate (`estimate_tokens`: about four characters per token of the text the model
reads, tool definitions included, plus a flat 1,600 per image), marked by the response header
`x-gateway-token-count: estimate`. Claude Code only uses the count to size its context display
and compaction, for which an estimate serves; an exact count needs the upstream's tokenizer.
"""
from __future__ import annotations

import json
import math

from aiohttp import web

from . import passthrough, translate
from .context import (CONFIG, UPSTREAMS, add_pair, add_route, limits, pair_for, read_body, resolve, spec_scope,
                      upstream_auth)
from .api_errors import ApiError

# client bodies checked besides the pair's request_schema (created with the app)
MORE_SCHEMAS = ("anthropic/count_tokens.request",)


PAIR = "messages-to-chat"
SPEC_CFG = web.AppKey("messages_spec_cfg", dict)


def _load(app, raw: bytes, schema_id: str) -> dict:
    """The JSON object, with a model; full schema validation is left to the translated path (a
    passed-through request is the upstream's to judge)."""
    body = translate.load_json(raw, *limits(app))
    if not isinstance(body.get("model"), str) or not body["model"]:
        translate.validate(body, schema_id)
    return body


def _scope(app, target: str, request: web.Request) -> dict:
    scope = spec_scope(app, target, request)
    scope["cfg"] = app[SPEC_CFG]
    return scope


def _upstream(app, provider: str):
    up = app[UPSTREAMS].get(provider)
    if up is None:
        raise ApiError(500, f"no upstream is configured for provider {provider!r}", type="api_error")
    return up


async def messages(request: web.Request):
    app = request.app
    raw = await read_body(request)
    body = _load(app, raw, "anthropic/messages.request")
    provider, target, mode = resolve(app, body["model"], "anthropic", request)
    if mode == "passthrough":
        return await passthrough.anthropic_passthrough(request, "/v1/messages", raw, body, target)
    del raw  # a stream may stay open for minutes: the decoded body is all it needs
    translate.validate(body, "anthropic/messages.request")
    pair = pair_for(app, PAIR, target)
    return await translate.run(request, pair, _upstream(app, provider), body, _scope(app, target, request),
                               upstream_auth(app, provider, request))


async def count_tokens(request: web.Request):
    app = request.app
    raw = await read_body(request)
    body = _load(app, raw, "anthropic/count_tokens.request")
    provider, target, mode = resolve(app, body["model"], "anthropic", request)
    if mode == "passthrough":
        return await passthrough.anthropic_passthrough(request, "/v1/messages/count_tokens", raw, body, target)
    translate.validate(body, "anthropic/count_tokens.request")
    return web.json_response({"input_tokens": estimate_tokens(body)},
                             headers={"x-gateway-token-count": "estimate"})


# ---------------------------------------------------------------- the estimate

_IMAGE_TOKENS = 1600       # Anthropic's cost of a full-size image (about 1.15 megapixels)
_CHARS_PER_TOKEN = 4.0
_PER_MESSAGE = 4           # role and separators


_SKIP = frozenset({"type", "role", "cache_control", "id", "tool_use_id", "signature", "citations"})


def _chars(node) -> float:
    """Characters the model reads in a content tree. An image counts as _IMAGE_TOKENS tokens, a
    base64 PDF by size (a third of its base64 length: about 750 tokens per 10 KB page); ids,
    signatures and cache_control not at all."""
    if isinstance(node, str):
        return len(node)
    if isinstance(node, list):
        return sum(_chars(x) for x in node)
    if not isinstance(node, dict):
        return 0
    kind = node.get("type")
    if kind == "image":
        return _IMAGE_TOKENS * _CHARS_PER_TOKEN
    if kind == "document":
        source = node.get("source") or {}
        if source.get("type") == "base64":
            return len(source.get("data") or "") / 3
        if source.get("type") == "text":
            return len(source.get("data") or "") + len(node.get("title") or "")
        return _chars(source.get("content")) + len(node.get("title") or "")
    total = 0.0
    for key, value in node.items():
        if key in _SKIP:
            continue
        if key == "input":
            total += len(json.dumps(value, ensure_ascii=False))
        else:
            total += _chars(value)
    return total


def estimate_tokens(body: dict) -> int:
    """An approximate input token count of a Messages request (system, messages, tools)."""
    chars = _chars(body.get("system"))
    messages = body.get("messages") or []
    chars += _chars(messages)
    tools = body.get("tools") or []
    if tools:
        chars += len(json.dumps([{k: v for k, v in t.items() if k != "cache_control"} for t in tools],
                                ensure_ascii=False))
    return max(1, math.ceil(chars / _CHARS_PER_TOKEN) + _PER_MESSAGE * len(messages))


# ---------------------------------------------------------------- routes

def setup(app: web.Application, decl):
    """The routes of the messages-to-chat pair's declaration (mappings/messages-to-chat/pair.yaml),
    and count_tokens beside them."""
    cfg = app[CONFIG]
    app[SPEC_CFG] = {**app["spec_cfg"], "max_tokens_cap": cfg.max_tokens_cap}
    add_pair(app, decl.name)
    for method, path in decl.endpoints:
        add_route(app, method, path, messages, api=decl.error_shape)
    for prefix in ("", "/anthropic"):
        add_route(app, "POST", prefix + "/v1/messages/count_tokens", count_tokens, api=decl.error_shape)
