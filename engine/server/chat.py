"""POST /v1/chat/completions: OpenAI Chat Completions, translated to Anthropic or passed through."""
from __future__ import annotations

from aiohttp import web

from . import passthrough, translate
from .context import (UPSTREAMS, add_pair, add_route, limits, pair_for, read_body, resolve, spec_scope,
                      upstream_auth)


async def chat_completions(request: web.Request):
    app = request.app
    raw = await read_body(request)
    body = translate.parse_body(raw, "openai/chat.request", *limits(app))
    provider, target, mode = resolve(app, body["model"], "openai", request)
    if mode == "passthrough":
        # an alias may have given the upstream another model name
        return await passthrough.forward(request, app[UPSTREAMS][provider], "/chat/completions",
                                         passthrough.with_model(raw, body, target),
                                         upstream_auth(app, provider, request))
    del raw  # a stream may stay open for minutes: the decoded body is all it needs
    pair = pair_for(app, "chat-to-messages", target)
    auth = upstream_auth(app, provider, request)
    return await translate.run(request, pair, app[UPSTREAMS][provider], body,
                               spec_scope(app, target, request), auth)


def setup(app: web.Application, decl):
    """The routes of the chat-to-messages pair's declaration (mappings/chat-to-messages/pair.yaml)."""
    add_pair(app, decl.name)
    for method, path in decl.endpoints:
        add_route(app, method, path, chat_completions, api=decl.error_shape)
