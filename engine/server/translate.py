"""The translated request path: client body -> request spec -> upstream -> response or stream spec.

Shared by every client API; what differs (schemas, specs, error shape, upstream path) comes in a
`Pair`. Streams are forwarded event by event: one write per upstream read, never buffered whole."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from .. import schemas
from ..functions import TranslationError, new_id
from ..stream import StreamTranslator
from .errors import ApiError

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass
class Pair:
    """One client API translated to one upstream API, with the compiled specs of the chosen version."""
    name: str
    client_api: str          # 'openai' | 'anthropic': error shape
    request_schema: str
    specs: dict              # request / response / stream / error -> CompiledSpec
    upstream_path: str
    keepalive: bytes = b": keep-alive\n\n"
    extra_headers: dict = field(default_factory=dict)


def parse_body(raw: bytes, schema_id: str) -> dict:
    """JSON object checked against the client API's schema, or ApiError(400) naming the field."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    issue = schemas.first_error(schema_id, body)
    if issue is not None:
        raise ApiError(400, issue.message, param=issue.path or None, code="invalid_request")
    return body


def translate_request(pair: Pair, body: dict, scope: dict) -> dict:
    spec = pair.specs["request"]
    try:
        sc = spec.scope(src=body, **scope)
        failed = spec.check(sc)
        if failed:
            param, message, status, code = failed
            raise ApiError(status, message, param=param, code=code or "unsupported_parameter")
        return spec.template(sc)
    except TranslationError as e:
        raise ApiError(e.status, e.message, param=e.param, code=e.code) from None


async def upstream_error(pair: Pair, resp: aiohttp.ClientResponse, provider: str) -> ApiError:
    text = await resp.text(errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    src = {"status": resp.status, "body": body, "text": text[:2000], "provider": provider,
           "retry_after": resp.headers.get("retry-after")}
    out = pair.specs["error"].apply(src=src)
    err = (out.get("body") or {}).get("error") or {}
    if pair.client_api == "anthropic":
        return ApiError(out["status"], err.get("message", ""), type=err.get("type"),
                        headers={k: str(v) for k, v in (out.get("headers") or {}).items() if v is not None})
    return ApiError(out["status"], err.get("message", ""), param=err.get("param"), code=err.get("code"),
                    type=err.get("type"),
                    headers={k: str(v) for k, v in (out.get("headers") or {}).items() if v is not None})


async def run(request: web.Request, pair: Pair, upstream, body: dict, scope: dict,
              upstream_headers: dict | None = None) -> web.StreamResponse:
    """Translate, call the upstream, translate back. ApiError for anything the client did wrong
    or the upstream refused before the first byte reached the client."""
    out_body = translate_request(pair, body, scope)
    stream = bool(body.get("stream"))
    payload = _dumps(out_body).encode()
    try:
        ctx = upstream.post(pair.upstream_path, payload, upstream_headers)
        resp = await ctx.__aenter__()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        raise ApiError(502, f"could not reach the upstream provider ({upstream.name}): {type(e).__name__}: {e}",
                       code="upstream_unreachable", type="server_error") from None
    try:
        if resp.status != 200:
            raise await upstream_error(pair, resp, upstream.name)
        if not stream:
            try:
                data = await resp.json(content_type=None)
            except (ValueError, aiohttp.ClientError) as e:
                raise ApiError(502, f"the upstream sent an unreadable response: {e}", type="server_error") from None
            result = pair.specs["response"].apply(src=data, req=body, **scope)
            return web.Response(body=_dumps(result).encode(), content_type="application/json")
        return await _stream(request, pair, resp, body, scope)
    finally:
        await ctx.__aexit__(None, None, None)


async def _stream(request, pair: Pair, resp, body: dict, scope: dict) -> web.StreamResponse:
    translator = StreamTranslator(pair.specs["stream"], req=body, **scope)
    out = web.StreamResponse(status=200, headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await out.prepare(request)
    state = {"last": time.monotonic()}
    keepalive = asyncio.create_task(_keepalive(out, pair.keepalive, scope.get("keepalive_seconds") or 15.0, state))
    try:
        first = translator.encode(translator.start())
        if first:
            await out.write(first)
        try:
            async for chunk in resp.content.iter_any():
                data = translator.feed(chunk)
                if data:
                    state["last"] = time.monotonic()
                    await out.write(data)
                if translator.ended:
                    break
            tail = translator.finish()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
            tail = translator.encode(translator.fail(
                f"the upstream connection failed mid-stream: {type(e).__name__}", "api_error"))
        if tail:
            await out.write(tail)
        await out.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        # the client went away: leaving the `async with` closes the upstream request at once
        resp.close()
        raise
    finally:
        keepalive.cancel()
    return out


async def _keepalive(out: web.StreamResponse, payload: bytes, every: float, state: dict):
    """Writes a keep-alive while the upstream is silent, so clients and proxies do not time out."""
    try:
        while True:
            await asyncio.sleep(every)
            if time.monotonic() - state["last"] >= every:
                state["last"] = time.monotonic()
                await out.write(payload)
    except (asyncio.CancelledError, ConnectionResetError, RuntimeError):
        return


def stream_id() -> str:
    return new_id("")
