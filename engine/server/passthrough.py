"""Forward a request untouched to the provider whose API the client speaks; bytes both ways."""
from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from .errors import ApiError

# Headers that describe one hop, not the message: never copied across the gateway.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length", "authorization", "x-api-key",
        "content-encoding", "accept-encoding"}
_RESP_DROP = _HOP | {"set-cookie"}


async def forward(request: web.Request, upstream, path: str, raw: bytes, auth_headers: dict) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    headers.update(auth_headers)
    try:
        ctx = upstream.session.request(request.method, upstream.url(path), data=raw, headers=headers,
                                       params=request.rel_url.query, auto_decompress=False)
        resp = await ctx.__aenter__()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        raise ApiError(502, f"could not reach the upstream provider ({upstream.name}): {type(e).__name__}: {e}",
                       code="upstream_unreachable", type="server_error") from None
    try:
        out = web.StreamResponse(status=resp.status, reason=resp.reason)
        for k, v in resp.headers.items():
            if k.lower() not in _RESP_DROP or k.lower() == "content-encoding":
                out.headers.add(k, v)
        await out.prepare(request)
        try:
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            # the upstream broke mid-body: end ours abruptly too, so the client sees the failure
            request.transport.close() if request.transport else None
            return out
        await out.write_eof()
        return out
    except (ConnectionResetError, asyncio.CancelledError):
        resp.close()
        raise
    finally:
        await ctx.__aexit__(None, None, None)
