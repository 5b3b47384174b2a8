"""The endpoint of a declared API pair without a built-in module (pair.yaml without `handler`):
the client's body checked against the declared request schema, the model routed, the pair's
specs around one call to the declared upstream path. Adding such a pair needs no Python."""
from __future__ import annotations

from aiohttp import web

from . import translate
from .api_errors import ApiError
from .context import UPSTREAMS, add_pair, add_route, limits, pair_for, read_body, resolve, spec_scope, upstream_auth


def endpoint(decl):
    async def translated(request: web.Request):
        app = request.app
        body = translate.parse_body(await read_body(request), decl.request_schema, *limits(app))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "model: a model name is required", param="model", code="invalid_request")
        provider, target, mode = resolve(app, model, decl.client_api, request)
        if provider != decl.provider or mode == "passthrough":
            raise ApiError(400, f"the model '{model}' is routed to {provider}; {request.path} translates to "
                                f"{decl.provider} only (API pair {decl.name})", param="model",
                           code="unsupported_route")
        pair = pair_for(app, decl.name, target)
        return await translate.run(request, pair, app[UPSTREAMS][provider], body,
                                   spec_scope(app, target, request), upstream_auth(app, provider, request))
    return translated


def setup(app: web.Application, decl):
    add_pair(app, decl.name)
    handler = endpoint(decl)
    for method, path in decl.endpoints:
        add_route(app, method, path, handler, api=decl.error_shape)
