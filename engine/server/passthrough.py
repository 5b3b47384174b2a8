"""Forward a request untouched to the provider whose API the client speaks; bytes both ways.

    forward(request, upstream, path, raw, auth_headers)   the generic forwarder (any provider)
    anthropic_passthrough(request, path, raw, body=None)  Anthropic Messages / count_tokens
    responses_passthrough(request, raw, body=None)        OpenAI Responses (POST /v1/responses)

What is kept: the body bytes, the query string exactly as the client wrote it, every request
header except the hop-by-hop ones and the client's credentials (authorization, x-api-key), which
are replaced by the gateway's configured key; the client's anthropic-version and anthropic-beta
headers (a repeated header stays repeated); accept-encoding, so a compressed answer is one the
client asked for and is passed on compressed, as is. The upstream's status, headers (but hop-by-hop
ones and set-cookie) and body bytes go back the same way, streamed as they arrive.

The one change made to a body: when a model alias rewrote the model (`model_aliases`), the body
is re-encoded with the upstream's model name, since the upstream does not know the alias.
"""
from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from . import ops
from .context import UPSTREAMS, upstream_auth
from .api_errors import ApiError, api_of
from .record import RECORDER
from .shutdown import OPEN, SHUTDOWN_MESSAGE
from .upstream import (UPSTREAM_ID_HEADER, BadUpstreamStatus, StreamMask, UpstreamUnreachable, keys_for,
                       open_with_retries, read_error_body, redact, sent_keys)

# Headers that describe one hop, not the message: never copied across the gateway.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length"}
_CREDENTIALS = {"authorization", "x-api-key", "x-upstream-api-key"}
# aiohttp hands the handler a decoded body, so its content-encoding no longer applies
_REQ_DROP = _HOP | _CREDENTIALS | {"content-encoding"}
_RESP_DROP = _HOP | {"set-cookie"}
# an error body is relayed decoded (it was read to redact keys), so its encoding no longer applies;
# its content-type is set on its own
_ERROR_DROP = _RESP_DROP | {"content-encoding", "content-type"}
# Sent by the gateway only when the client did not send its own.
_CLIENT_WINS = {"anthropic-version", "anthropic-beta"}


def _request_headers(request: web.Request, auth_headers: dict) -> CIMultiDict:
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _REQ_DROP)
    for k, v in (auth_headers or {}).items():
        if k.lower() in _CLIENT_WINS and k in headers:
            continue
        headers[k] = v
    return headers


def _upstream_path(path: str, request: web.Request) -> str:
    qs = request.rel_url.raw_query_string  # byte for byte, as the client wrote it
    return path + (f"?{qs}" if qs else "")


def with_model(raw: bytes, body: dict | None, model: str | None) -> bytes:
    """`raw` unchanged unless an alias gave the upstream another model name."""
    if body is None or not model or body.get("model") == model:
        return raw
    return json.dumps({**body, "model": model}, ensure_ascii=False).encode()


async def forward(request: web.Request, upstream, path: str, raw: bytes, auth_headers: dict) -> web.StreamResponse:
    """Sends `raw` to `upstream` at `path` (plus the client's query string) and streams the
    answer back untouched. ApiError(502) when the upstream cannot be reached."""
    headers = _request_headers(request, auth_headers)
    if request.get("request_id") and "x-request-id" not in headers:
        headers["x-request-id"] = request["request_id"]
    target = _upstream_path(path, request)
    metrics = request.app[ops.METRICS]
    recorder = request.app.get(RECORDER)
    rec = None if recorder is None else recorder.start_passthrough(upstream, target, request, raw, headers)
    try:
        # retried like translated requests: nothing has reached the client before the first byte
        ctx, resp = await open_with_retries(
            # decompress=False: only the client's own Accept-Encoding is offered upstream, and a
            # compressed answer goes back as it came
            lambda: upstream.request(request.method, target, raw, headers, decompress=False),
            upstream.policy, on_retry=lambda n: metrics.retries.labels(upstream.name).inc())
    except UpstreamUnreachable as e:
        metrics.upstream_errors.labels(upstream.name, "unreachable").inc()
        raise ApiError(504 if e.timed_out else 502, f"could not reach the upstream provider ({upstream.name}): {e}",
                       code="upstream_timeout" if e.timed_out else "upstream_unreachable",
                       type="timeout_error" if e.timed_out else "server_error") from None
    except BadUpstreamStatus as e:
        metrics.upstream_errors.labels(upstream.name, str(e.status)).inc()
        ops.note(request, upstream_status=e.status)
        raise ApiError(502, str(e), code="upstream_bad_status", type="server_error") from None
    ops.note(request, upstream_status=resp.status, upstream_request_id=resp.request_id)
    if rec is not None:
        rec.answer(resp.status, resp.headers)
    try:
        if resp.status >= 400:
            metrics.upstream_errors.labels(upstream.name, str(resp.status)).inc()
            return await _relay_error(request, upstream, resp, auth_headers, rec)
        sse = "text/event-stream" in (resp.headers.get("content-type") or "")
        limit = None if sse else (upstream.max_body or None)
        if limit is not None and resp.content_length is not None and resp.content_length > limit:
            raise ApiError(502, f"the upstream's answer is {resp.content_length} bytes; this gateway accepts "
                                f"at most {limit} (upstream_max_body_bytes)", code="upstream_too_large",
                           type="server_error")
        out = web.StreamResponse(status=resp.status, reason=resp.reason)
        _ids(_relayed(resp, out, _RESP_DROP), request, resp)
        await out.prepare(request)
        # a body passed on as it came can still be scanned for the keys (not a compressed one)
        keys = () if resp.headers.get("content-encoding") else keys_for(upstream, sent_keys(auth_headers))
        return await _relay(request, upstream, resp, out, sse, limit, keys, rec)
    except (ConnectionResetError, asyncio.CancelledError):
        resp.close()
        raise
    finally:
        if rec is not None:
            rec.finish()
        await ctx.__aexit__(None, None, None)


async def _relay(request, upstream, resp, out, sse: bool, limit: int | None, keys: tuple = (), rec=None):
    """The body as it arrives, each read within the idle timeout (a loop timer checks, no timer
    per read); at shutdown an SSE stream ends with an error event of its API."""
    loop = asyncio.get_running_loop()
    state = {"read": loop.time(), "why": None}
    idle = upstream.idle_timeout

    def check():
        if loop.time() - state["read"] >= idle:
            state["why"] = "idle"
            resp.close()
        else:
            state["timer"] = loop.call_later(max(0.05, idle / 4), check)

    def cut():
        state["why"] = "shutdown"
        resp.close()

    whole = resp.content.is_eof()  # the body came with the head: no read left to wait for
    if idle and not whole:
        state["timer"] = loop.call_later(max(0.05, idle / 4), check)
    open_set = request.app.get(OPEN) if sse else None
    if open_set is not None:
        open_set.add(cut)
    total = 0
    masker = StreamMask(keys) if keys else None
    try:
        async for chunk in resp.content.iter_any():
            state["read"] = loop.time()
            if limit is not None:
                total += len(chunk)
                if total > limit:
                    raise aiohttp.ClientPayloadError(f"the upstream's answer is over {limit} bytes")
            if masker is not None:
                chunk = masker.feed(chunk)
            if rec is not None:
                rec.add(chunk)
            await out.write(chunk)
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError):
        why = state["why"]
        if sse and why is not None:
            message = SHUTDOWN_MESSAGE if why == "shutdown" else \
                f"the upstream sent nothing for {idle:g}s (idle timeout)"
            await out.write_eof(_sse_error(api_of(request.path), message,
                                           "overloaded_error" if why == "shutdown" else "timeout_error"))
            return out
        # the upstream broke mid-body: end ours abruptly too, so the client sees the failure
        request.transport.close() if request.transport else None
        return out
    finally:
        timer = state.get("timer")
        if timer is not None:
            timer.cancel()
        if open_set is not None:
            open_set.discard(cut)
    tail = masker.flush() if masker is not None else b""
    if rec is not None and tail:
        rec.add(tail)
    await out.write_eof(tail)
    return out


def _sse_error(api: str, message: str, kind: str) -> bytes:
    """An error event in the stream grammar of the client's API (what its SDK raises)."""
    if api == "anthropic":
        data = json.dumps({"type": "error", "error": {"type": kind, "message": message}})
        return f"event: error\ndata: {data}\n\n".encode()
    data = json.dumps({"type": "error", "error": {"type": kind, "message": message, "code": kind, "param": None},
                       "message": message, "code": kind, "param": None})
    return f"event: error\ndata: {data}\n\n".encode()


def _relayed(resp, out, drop: frozenset):
    """`out` with the upstream's headers but those in `drop`; returns out."""
    for k, v in resp.headers.items():
        if k.lower() not in drop:
            out.headers.add(k, v)
    return out


def _ids(out, request: web.Request, resp) -> None:
    """The gateway's request id in `x-request-id`, as on every answer, and the upstream's own id
    of the request in `x-upstream-request-id` (OpenAI's comes in the same `x-request-id`)."""
    out.headers["x-request-id"] = request.get("request_id") or ""
    if resp.request_id is not None:
        out.headers[UPSTREAM_ID_HEADER] = resp.request_id


async def _relay_error(request, upstream, resp, auth_headers: dict, rec=None) -> web.Response:
    """An upstream error answer, read whole within the error-size limit and the read timeout,
    with any upstream key in it redacted."""
    data, why = await read_error_body(resp, upstream.policy, decode=True)
    if why is not None:
        raise ApiError(502, f"the upstream answered {resp.status}, but {why}", code="upstream_error_unreadable",
                       type="server_error")
    text = data.decode("utf-8", "surrogateescape")
    clean = redact(text, (*sent_keys(auth_headers), *upstream.secrets))
    if clean is not text:
        data = clean.encode("utf-8", "surrogateescape")
    if rec is not None:
        rec.add(data)
    out = web.Response(status=resp.status, reason=resp.reason, body=data)
    _ids(_relayed(resp, out, _ERROR_DROP), request, resp)
    if resp.headers.get("content-type"):
        out.headers["Content-Type"] = resp.headers["content-type"]
    return out


async def anthropic_passthrough(request: web.Request, path: str, raw: bytes, body: dict | None = None,
                                model: str | None = None) -> web.StreamResponse:
    """An Anthropic client's request to the Anthropic upstream (`path` is /v1/messages or
    /v1/messages/count_tokens, whatever prefix the gateway route had): the configured x-api-key,
    the client's anthropic-version (the configured one when it sent none) and anthropic-beta."""
    app = request.app
    return await forward(request, app[UPSTREAMS]["anthropic"], path, with_model(raw, body, model),
                         upstream_auth(app, "anthropic", request))


async def responses_passthrough(request: web.Request, raw: bytes, body: dict | None = None,
                                model: str | None = None) -> web.StreamResponse:
    """For the Responses module: POST /v1/responses forwarded to the OpenAI upstream
    (openai_base_url + /responses) with the configured openai_api_key as the bearer token,
    streaming untouched. Call it when resolve(app, body["model"], "openai") says passthrough;
    pass the parsed `body` and the resolved `model` so an aliased model name is rewritten."""
    app = request.app
    return await forward(request, app[UPSTREAMS]["openai"], "/responses", with_model(raw, body, model),
                         upstream_auth(app, "openai", request))
