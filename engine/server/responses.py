"""OpenAI Responses API: POST /v1/responses (stream and not), GET and DELETE /v1/responses/{id},
POST /v1/responses/{id}/submit_tool_outputs; translated to Anthropic or passed through to OpenAI.

Every translation is a spec of the `responses-to-messages` pair (request, response, stream, error,
submit); this module only moves data between them, the upstream and the response store:

* previous_response_id loads the stored record {input, output, instructions, request} and hands it
  to the specs as `prev`; the request spec puts that conversation before the new input.
* the request spec's `vars.items` is the whole conversation before this response and
  `vars.tools_in` / `vars.instructions` what applied; the response spec's `vars.items` (or the
  stream spec's `state.items`) every output item, encrypted_content included; `state.final` (or
  the response body) the response object the client saw. Those make the next record.
* the record is written before the client receives the final event, so a client that chains the
  next request at once finds it. store:false writes nothing.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging

from aiohttp import web

from ..functions import TranslationError, new_id
from ..jsontext import dumpb
from . import ops, passthrough, translate
from .context import (CONFIG, HEALTH_CHECKS, UPSTREAMS, add_pair, add_route, limits, pair_for, read_body, resolve,
                      spec_scope, upstream_auth)
from .api_errors import ApiError

log = logging.getLogger("engine.responses")

# client bodies checked besides the pair's request_schema (created with the app)
MORE_SCHEMAS = ("openai/responses.submit_tool_outputs",)


PAIR = "responses-to-messages"
STORE = web.AppKey("response_store", object)
_NOT_STORED = ("input", "previous_response_id", "stream")
_STORED_VARS = ("items", "tools_in", "instructions")  # what a record keeps of the request spec's vars


# ---------------------------------------------------------------- store

async def _store_ctx(app: web.Application):
    from ..store.factory import open_store
    cfg = app[CONFIG]
    app[STORE] = open_store(cfg.session_store, cfg.data_dir, cfg.response_ttl_seconds,
                            timeout=cfg.store_timeout, settings=cfg)
    yield
    await app[STORE].close()


async def _store_health(app) -> str | None:
    """For /health: None when the store answers within store_timeout, else why not."""
    try:
        await _bounded(app, app[STORE].ping())
    except Exception as e:
        return f"unavailable: {e}"
    return None


async def _bounded(app, op):
    """A store operation within store_timeout: a hung backend (a paused Redis, a stuck disk)
    costs a request that long at most."""
    from ..store import StoreError
    t = app[CONFIG].store_timeout
    try:
        async with asyncio.timeout(t):
            return await op
    except TimeoutError:
        raise StoreError(f"no answer within {t:g}s (store_timeout)") from None


ANONYMOUS = "anonymous"


def tenant(request: web.Request) -> str:
    """Who owns what this request stores: the SHA-256 of its gateway key, or the one anonymous
    tenant when the gateway takes no keys."""
    if request.app[ops.KEYRING] is None:
        return ANONYMOUS
    key = ops.presented_key(request) or ""
    return hashlib.sha256(key.encode()).hexdigest()


async def _load(app, response_id: str, param: str | None = None, owner: str | None = None) -> dict:
    """The stored record, or the 404 OpenAI answers for an unknown (or expired) id, or for one
    another tenant stored (its existence is not revealed). Records stored without an owner are
    everyone's."""
    try:
        record = await _bounded(app, app[STORE].get(response_id))
    except Exception as e:  # StoreError, or the backend's own
        log.error("response store: get %s failed: %s", response_id, e)
        raise ApiError(503, f"the response store is unavailable: {e}", type="server_error",
                       code="store_unavailable") from None
    if record is not None and owner is not None and record.get("owner", owner) != owner:
        record = None
    if record is None:
        if param == "previous_response_id":
            raise ApiError(404, f"Previous response with id '{response_id}' not found.", param=param,
                           code="previous_response_not_found")
        raise ApiError(404, f"No response found with id '{response_id}'.", param=param, code="not_found")
    return record


async def _save(app, record: dict) -> None:
    """Stores the record, or raises StoreFailed: a response asked to be stored that was not is
    an error for the client, not an id that later 404s."""
    try:
        await _bounded(app, app[STORE].put(record["id"], record))
    except Exception as e:
        log.error("response store: put %s failed: %s", record["id"], e)
        raise translate.StoreFailed(f"the response could not be stored ({e}); send store: false to get "
                                    "answers without storing them") from None


def _record(response_id: str, body: dict, req_vars: dict, response: dict, items: list, owner: str) -> dict:
    request = {k: v for k, v in body.items() if k not in _NOT_STORED}
    if req_vars.get("tools_in"):
        request["tools"] = req_vars["tools_in"]
    return {"id": response_id, "owner": owner, "response": response, "input": req_vars.get("items") or [],
            "output": items or [], "instructions": req_vars.get("instructions"), "request": request}


# ---------------------------------------------------------------- handlers

async def create_response(request: web.Request):
    app = request.app
    raw = await read_body(request)
    body = translate.parse_body(raw, "openai/responses.request", *limits(app))
    provider, target, mode = resolve(app, body["model"], "openai", request)
    if mode == "passthrough":
        return await passthrough.responses_passthrough(request, raw, body, target)
    del raw  # a stream may stay open for minutes: the decoded body is all it needs
    return await _translated(request, body, provider, target)


async def get_response(request: web.Request):
    record = await _load(request.app, request.match_info["id"], owner=tenant(request))
    return web.Response(body=dumpb(record["response"]), content_type="application/json")


async def delete_response(request: web.Request):
    rid = request.match_info["id"]
    await _load(request.app, rid, owner=tenant(request))  # another tenant's id: 404, nothing deleted
    try:
        deleted = await _bounded(request.app, request.app[STORE].delete(rid))
    except Exception as e:
        raise ApiError(503, f"the response store is unavailable: {e}", type="server_error",
                       code="store_unavailable") from None
    if not deleted:
        raise ApiError(404, f"No response found with id '{rid}'.", code="not_found")
    return web.json_response({"id": rid, "object": "response.deleted", "deleted": True})


async def submit_tool_outputs(request: web.Request):
    """Continues a stored response that stopped for tool calls: the outputs become the input of a
    new response chained to it by previous_response_id (the submit spec builds that request)."""
    app = request.app
    rid = request.match_info["id"]
    sub = translate.parse_body(await read_body(request) or b"{}", "openai/responses.submit_tool_outputs",
                               *limits(app))
    record = await _load(app, rid, owner=tenant(request))
    model = (record.get("request") or {}).get("model") or ""
    provider, target, mode = resolve(app, model, "openai", request)
    if mode == "passthrough":
        raise ApiError(400, f"response '{rid}' was made for model '{model}', which this gateway now passes "
                            "through to OpenAI: submit the tool outputs there.", code="passthrough_only")
    spec = pair_for(app, PAIR, target).specs["submit"]
    body = _apply(spec, src=sub, req=record)
    return await _translated(request, body, provider, target, prev=record)


def setup(app: web.Application, decl):
    """The routes of the responses-to-messages pair's declaration
    (mappings/responses-to-messages/pair.yaml), and the stored responses' routes beside them."""
    add_pair(app, decl.name)
    app.cleanup_ctx.append(_store_ctx)
    app[HEALTH_CHECKS].append(("store", _store_health))
    for method, path in decl.endpoints:
        add_route(app, method, path, create_response, api=decl.error_shape)
    for prefix in ("/v1", ""):
        add_route(app, "GET", prefix + "/responses/{id}", get_response)
        add_route(app, "DELETE", prefix + "/responses/{id}", delete_response)
        add_route(app, "POST", prefix + "/responses/{id}/submit_tool_outputs", submit_tool_outputs)


# ---------------------------------------------------------------- the translated path

def _apply(spec, **scope):
    """check + template of a request-kind spec; returns the output (vars stay in the scope)."""
    out, _ = _apply_vars(spec, **scope)
    return out


def _apply_vars(spec, request=None, **scope):
    return translate.apply_request(spec, request, **scope)


async def _translated(request: web.Request, body: dict, provider: str, target: str, prev: dict | None = None):
    app = request.app
    pair = pair_for(app, PAIR, target)
    owner = tenant(request)
    if prev is None and body.get("previous_response_id"):
        prev = await _load(app, body["previous_response_id"], "previous_response_id", owner)
    auth = upstream_auth(app, provider, request)
    id_base = new_id("")
    response_id = "resp_" + id_base
    scope = {**spec_scope(app, target, request), "prev": prev, "id_base": id_base, "response_id": response_id}
    out_body, req_vars = _apply_vars(pair.specs["request"], request, src=body, **scope)
    upstream = app[UPSTREAMS][provider]
    if body.get("store") is False:
        # written straight to JSON text (translate.call), as other pairs' answers are. Only `call`
        # holds what was made of the request, and lets it go once sent: a stream stays open for
        # minutes, and the conversation so far is most of a request
        reply = translate.call(request, pair, upstream, body, out_body, scope, auth)
        del out_body, req_vars
        return await reply

    async def on_result(result, sc):
        try:
            await _save(app, _record(response_id, body, req_vars, result, sc["vars"].get("items"), owner))
        except translate.StoreFailed as e:
            raise ApiError(503, str(e), type="server_error", code="store_unavailable") from None

    saved = []

    async def on_write(translator):
        # saved before the final event reaches the client, so a client chaining the next
        # request at once finds this one
        final = translator.state.get("final")
        if not saved and final is not None:
            saved.append(True)
            await _save(app, _record(response_id, body, req_vars, final, translator.state.get("items"), owner))

    # the record holds the conversation as `items`: the client's `input`, the other vars and
    # what was sent are let go once sent, as on the paths that store nothing
    reply = translate.call(request, pair, upstream, body, out_body, scope, auth, on_result=on_result,
                           on_write=on_write, keep=frozenset(body).difference(_NOT_STORED))
    req_vars = {k: req_vars[k] for k in _STORED_VARS if k in req_vars}
    del out_body
    return await reply
