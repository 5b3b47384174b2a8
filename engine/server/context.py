"""What the endpoint modules (chat.py, messages.py, responses.py, passthrough.py, ops.py) use of
the application, below app.py so that none of them imports the module that registers them: the
app keys, the guarded route, model resolution, upstream auth, the API pairs and their versions."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..catalog import Catalog
from ..functions import new_id
from ..profiles import Profiles
from . import ops, translate
from .api_errors import ApiError, api_of, render

log = logging.getLogger("engine")

CONFIG = web.AppKey("config", object)
CATALOG = web.AppKey("catalog", Catalog)
UPSTREAMS = web.AppKey("upstreams", dict)
PAIRS = web.AppKey("pairs", dict)
PROFILES = web.AppKey("profiles", Profiles)


HEALTH_CHECKS = web.AppKey("health_checks", list)


def guarded(handler, api: str | None = None):
    """`handler` with what every request gets: request id, gateway key, errors in the caller's
    API shape, then the access log line and the metrics. Every route is registered through it
    (add_route), so aiohttp runs no middleware chain: its chain and the current-app wrapper it
    adds cost ~4 µs a request. Errors take the shape of `api` (openai | anthropic), else the one
    the path says (api_errors.api_of)."""
    async def guarded_handler(request: web.Request):
        start = time.monotonic()
        rid = request.headers.get("x-request-id") or new_id("req_")
        request["request_id"] = rid
        request["started"] = start
        request["log"] = {}
        # read by every translated answer (translate.answer_headers): present, as a missing key
        # costs request.get a KeyError raised and caught
        request["dropped"] = None
        status = 499  # the client went away before an answer
        try:
            try:
                ops.check_key(request)
                resp = await handler(request)
            except ApiError as e:
                resp = render(api or api_of(request.path), e, rid)
            except web.HTTPException as e:
                if e.status < 400:
                    raise
                resp = render(api or api_of(request.path), ApiError(e.status, e.reason or "error"), rid)
            except (HttpProcessingError, RequestPayloadError) as e:
                # a body aiohttp could not read: e.g. labelled gzip but not gzip
                resp = render(api or api_of(request.path), ApiError(400, f"the request body could not be read: {e}"), rid)
            except ConnectionResetError:
                # the client went away mid-answer (aiohttp's "cannot write to closing transport"):
                # not a gateway fault. The connection is closed, so aiohttp's write of what is
                # returned fails quietly, and the access line says 499.
                if request.transport is not None:
                    request.transport.close()
                return request.get("stream_response") or web.Response(status=499)
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.path)
                started = request.get("stream_response")
                if started is not None and started.prepared:
                    # the answer is already on the wire: a second response would corrupt the
                    # connection, so end it; the client sees a broken stream, not a wrong answer
                    if request.transport is not None:
                        request.transport.close()
                    return started
                resp = render(api or api_of(request.path), ApiError(500, "internal gateway error; see the gateway log",
                                                             type="server_error"), rid)
            if not resp.prepared:
                resp.headers["x-request-id"] = rid
            status = resp.status
            return resp
        finally:
            # the metrics and the access line after the answer is written (aiohttp writes what
            # is returned before this task yields): the client does not wait for them
            asyncio.get_running_loop().call_soon(ops.record, request, status, time.monotonic() - start)
    return guarded_handler


def add_route(app: web.Application, method: str, path: str, handler, api: str | None = None):
    """A route whose handler runs guarded (a GET answers HEAD too, as aiohttp's add_get does);
    `api`: the shape of its errors, when the path does not say it."""
    if method == "GET":
        app.router.add_get(path, guarded(handler, api))
    else:
        app.router.add_route(method, path, guarded(handler, api))


# a route decision depends only on the frozen config and the model name: made once per name.
# Clients choose the names, so the memo keeps only names that matched a route and is bounded in
# entries and in bytes of names: past either cap it starts over.
RESOLVED = web.AppKey("resolved", dict)
_RESOLVED_MAX = 4096
_RESOLVED_MAX_BYTES = 1024 * 1024
# the longest model name accepted: real ones are under 100 characters
MAX_MODEL_NAME = 256


def resolve(app, model: str, client_api: str, request: web.Request | None = None):
    """(provider, upstream model, mode) for a requested model; ApiError 404 when no route matches."""
    memo = app[RESOLVED]
    hit = memo.get((model, client_api))
    if hit is None:
        if len(model) > MAX_MODEL_NAME:
            raise ApiError(400, f"model: a model name is at most {MAX_MODEL_NAME} characters; this one has "
                                f"{len(model)}", param="model", code="invalid_model")
        hit = _resolve(app[CONFIG], model, client_api)
        if hit[2] is None:  # refusals are not kept: a flood of unknown names costs no memory
            _remember(memo, (model, client_api), hit, len(model))
    answer, facts, refusal = hit
    if request is not None:
        ops.note_all(request, facts)
    if refusal is not None:
        raise ApiError(**refusal)
    return answer


def _resolve(cfg, model: str, client_api: str) -> tuple:
    """((provider, target, mode), access-log facts, ApiError arguments or None)."""
    target = cfg.alias(model)
    route = cfg.route_for(target)
    facts = {"model": model, "model_label": route.pattern if route else "unrouted",
             "provider": route.provider if route else None}
    if route is None:
        return None, facts, dict(
            status=404, message=f"The model '{model}' does not exist on this gateway: no route matches it "
                                f"(routes: {cfg.describe_routes()}).", param="model", code="model_not_found")
    mode = route.mode
    if mode in (None, "auto"):
        mode = {"auto": None, "passthrough": "passthrough", "translation": "translate"}.get(cfg.work_mode)
    if mode is None:
        mode = "passthrough" if route.provider == client_api else "translate"
    if mode == "passthrough" and route.provider != client_api:
        return None, facts, dict(
            status=400, message=f"work_mode passthrough cannot serve model '{model}' (provider {route.provider}) "
                                f"on a {client_api} endpoint", param="model", code="passthrough_only")
    if mode == "translate" and route.provider == client_api:
        mode = "passthrough"
    facts["mode"] = mode
    return (route.provider, target, mode), facts, None


def client_upstream_key(app, request: web.Request | None) -> str | None:
    """With forward_client_keys, the caller's own provider key: `x-upstream-api-key`, or, when the
    gateway takes no keys of its own (auth_disabled), the key the client sent as usual."""
    cfg = app[CONFIG]
    if request is None or not cfg.forward_client_keys:
        return None
    return request.headers.get("x-upstream-api-key") or (ops.presented_key(request) if cfg.auth_disabled else None)


def upstream_auth(app, provider: str, request: web.Request | None = None) -> dict:
    cfg = app[CONFIG]
    own = client_upstream_key(app, request)
    if provider == "anthropic":
        key = own or cfg.anthropic_api_key
        if not key:
            raise ApiError(500, "No Anthropic API key is set on the gateway: set anthropic_api_key in the "
                                "config file or TOKLIGENCE_ANTHROPIC_API_KEY in its environment.",
                           code="upstream_key_missing", type="server_error")
        return {"x-api-key": key, "anthropic-version": cfg.anthropic_version}
    key = own or cfg.openai_api_key
    if not key:
        raise ApiError(500, "No OpenAI API key is set on the gateway: set openai_api_key in the config file "
                            "or TOKLIGENCE_OPENAI_API_KEY in its environment.",
                       code="upstream_key_missing", type="server_error")
    return {"authorization": f"Bearer {key}"}


async def read_body(request: web.Request) -> bytes:
    """The request body, read as aiohttp's `request.read()` reads it (413 past max_body_bytes,
    counted on what is read, chunked bodies too) but not kept on the request: a translated
    stream holds the decoded body it needs, and aiohttp's copy would stay beside it for as long
    as the stream is open (12 KB for a Codex turn, 19 KB for a Claude Code one)."""
    limit = request.app[CONFIG].max_body_bytes
    content = request.content
    content.set_read_chunk_size(limit)  # a compressed body inflates in large pieces, as read() has it
    chunks = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def limits(app) -> tuple[int, int]:
    """(max JSON depth, max messages) for request bodies."""
    cfg = app[CONFIG]
    return cfg.max_json_depth, cfg.max_messages


def spec_scope(app, model: str, request: web.Request) -> dict:
    cfg = app[CONFIG]
    return {"model": model, "profile": app[PROFILES].get(model), "cfg": app["spec_cfg"],
            "keepalive_seconds": cfg.keepalive_seconds}


def add_pair(app, name: str) -> translate.Pair:
    """Registers an API pair as its declaration (mappings/<pair>/pair.yaml) says, with the specs
    of the configured version (mapping_versions), and compiles-in the versions that routes pin
    (`claude-3*=>anthropic@2025-06-01`)."""
    cfg = app[CONFIG]
    versions = getattr(cfg, "mapping_versions", None) or {}
    decl = app[CATALOG].declared[name]
    pair = translate.Pair(name=name, specs=app[CATALOG].pair(name, versions), upstream_path=decl.upstream_path,
                          keepalive=decl.keepalive)
    app[PAIRS][name] = pair
    for route in cfg.routes:
        if route.version and (name, route.version) not in app[PAIRS]:
            # each spec at its newest file at or before the pinned version (create_app checked it)
            specs = app[CATALOG].pair(name, {name: route.version})
            app[PAIRS][(name, route.version)] = dataclasses.replace(pair, specs=specs)
    return pair


def pair_for(app, name: str, model: str) -> translate.Pair:
    """The pair's specs in the version the model's route pins, else the configured one."""
    memo = app[RESOLVED]
    pair = memo.get((name, model, "pair"))
    if pair is None:
        route = app[CONFIG].route_for(model)
        pair = app[PAIRS].get((name, route.version)) if route is not None and route.version else None
        pair = _remember(memo, (name, model, "pair"), pair or app[PAIRS][name], len(model))
    return pair


class RouteMemo(dict):
    """The route memo, with the bytes of the names it keeps."""
    __slots__ = ("size",)

    def __init__(self):
        super().__init__()
        self.size = 0


def _remember(memo: RouteMemo, key, value, size: int):
    if len(memo) >= _RESOLVED_MAX or memo.size + size > _RESOLVED_MAX_BYTES:
        memo.clear()
        memo.size = 0
    memo[key] = value
    memo.size += size
    return value
