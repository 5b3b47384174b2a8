"""App factory: routes (each guarded: request id, errors, access line), upstream connection pools and
the compiled specs."""
from __future__ import annotations

import time

from aiohttp import web

from .. import schemas
from ..catalog import MAPPINGS_DIR, Catalog, PinError
from ..profiles import Profiles
from . import chat, declared, messages, ops, responses, shutdown, translate
from .context import (CATALOG, CONFIG, HEALTH_CHECKS, PAIRS, PROFILES, RESOLVED, UPSTREAMS, RouteMemo, add_route,
                      guarded)
from .api_errors import ApiError
from .counters import MemoCollector
from .upstream import RetryPolicy, Upstream, secret_bytes

# endpoint modules for client APIs that do more than one translated call (pair.yaml `handler`)
BUILT_IN = {"chat": chat, "messages": messages, "responses": responses}


async def _unmatched(request: web.Request):
    """No route for this path (404), or none for this method (405, with Allow): the catch-all
    route, last, so these answers get the request id, the API's error shape and the access line."""
    ops.note(request, route="unmatched")
    allowed: set = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise ApiError(405, "Method Not Allowed", headers={"Allow": ", ".join(sorted(allowed))})
    raise ApiError(404, "Not Found")


# ---------------------------------------------------------------- handlers

async def health(request):
    """{"status": "ok"}, or a 503 {"status": "degraded", <part>: <why>} when a part the gateway
    needs (the response store) is failing."""
    problems = {}
    for name, check in request.app[HEALTH_CHECKS]:
        why = await check(request.app)
        if why:
            problems[name] = why
    if problems:
        return web.json_response({"status": "degraded", **problems}, status=503)
    return web.json_response({"status": "ok"})


async def models(request):
    cfg = request.app[CONFIG]
    now = int(time.time())
    data = [{"id": r.pattern, "object": "model", "created": now, "owned_by": r.provider}
            for r in cfg.routes]
    return web.json_response({"object": "list", "data": data})


# ---------------------------------------------------------------- factory

def create_app(cfg, catalog: Catalog | None = None) -> web.Application:
    """Raises PinError when a route or mapping_versions pins a version the specs do not have."""
    catalog = catalog or Catalog.load(getattr(cfg, "mappings_dir", "") or MAPPINGS_DIR,
                                      serving=(getattr(cfg, "mapping_versions", None), cfg.routes))
    problems = catalog.pin_errors(cfg.routes, getattr(cfg, "mapping_versions", None))
    if problems:
        raise PinError(problems)
    app = web.Application(client_max_size=cfg.max_body_bytes)
    app[CONFIG] = cfg
    app[CATALOG] = catalog
    translate.size_memos((cfg.history_memo_conversations, cfg.history_memo_max_bytes),
                         (cfg.tools_memo_texts, cfg.tools_memo_max_bytes), cfg.memo_admit_one_in,
                         cfg.memo_idle_seconds)
    if getattr(cfg, "record_dir", ""):
        from .record import RECORDER, Recorder
        app[RECORDER] = Recorder(cfg.record_dir)
    app[PAIRS] = {}
    app[HEALTH_CHECKS] = []
    app[RESOLVED] = RouteMemo()
    app[PROFILES] = Profiles.load(cfg.model_profiles_file)
    app["spec_cfg"] = {"default_max_tokens": cfg.default_max_tokens, "prompt_cache": cfg.prompt_cache,
                       "prompt_cache_ttl": cfg.prompt_cache_ttl}
    app[UPSTREAMS] = {
        "anthropic": Upstream("anthropic", cfg.anthropic_base_url, {"content-type": "application/json"},
                              cfg.upstream_connect_timeout, cfg.upstream_idle_timeout,
                              cfg.upstream_max_decompressed_bytes),
        "openai": Upstream("openai", cfg.openai_base_url, {"content-type": "application/json"},
                           cfg.upstream_connect_timeout, cfg.upstream_idle_timeout,
                           cfg.upstream_max_decompressed_bytes),
    }

    policy = RetryPolicy(max_retries=cfg.upstream_max_retries,
                         first_byte_timeout=cfg.upstream_first_byte_timeout,
                         read_timeout=cfg.upstream_idle_timeout or cfg.upstream_first_byte_timeout,
                         max_error_bytes=cfg.upstream_max_error_bytes)
    secrets = tuple(k for k in (cfg.anthropic_api_key, cfg.openai_api_key) if k)
    tls_contexts: dict = {}
    for up in app[UPSTREAMS].values():
        up.policy = policy
        up.secrets = secrets
        up.secret_keys = secret_bytes(secrets)
        up.max_body = cfg.upstream_max_body_bytes
        up.max_event = cfg.upstream_max_event_bytes
        up.configure_egress(cfg, tls_contexts)

    async def sessions(app):
        for up in app[UPSTREAMS].values():
            await up.open()
        yield
        for up in app[UPSTREAMS].values():
            await up.close()

    app.cleanup_ctx.append(sessions)
    shutdown.setup(app, cfg.shutdown_grace_seconds)
    # the validators of every client body an endpoint checks, built now, not by the first request
    # that needs one (and frozen with the rest); the other schemas build on first use, if any
    for decl in catalog.declared.values():
        for schema_id in (decl.request_schema, *getattr(BUILT_IN.get(decl.handler), "MORE_SCHEMAS", ())):
            schemas.is_valid(schema_id)
    ops.setup(app, cfg, app[UPSTREAMS])
    app[ops.METRICS].registry.register(MemoCollector(lambda: (("history", translate.HISTORY),
                                                              ("tools", translate.MEMO))))
    add_route(app, "GET", "/metrics", ops.metrics_handler)
    add_route(app, "GET", "/health", health)
    add_route(app, "GET", "/v1/models", models)
    # every declared API pair (mappings/<pair>/pair.yaml): its built-in endpoint module, else
    # the generic translated endpoint
    for decl in catalog.declared.values():
        BUILT_IN.get(decl.handler, declared).setup(app, decl)
    # [\s\S]: a path may hold a decoded line break, which "." would not match
    app.router.add_route("*", r"/{tail:[\s\S]*}", guarded(_unmatched))
    return app
