"""The baseline: a plain aiohttp proxy that forwards bytes untouched.

What any aiohttp gateway pays at least: the server side (parse the request, read the body), one
pooled upstream ClientSession (connection reuse, no per-request session), the client side (send,
parse the response head) and the copy back. A body with a length is read and returned in one
piece; anything else (an SSE stream) is copied chunk by chunk as it arrives, one write per read.
No parsing, no validation, no logging per request. It runs on uvloop, the fastest event loop
a plain-Python proxy can have.

Run alone: ``python -m engine.bench.proxy --port 9200 --upstream http://127.0.0.1:9100``.
"""
from __future__ import annotations

import argparse
import sys

import aiohttp
from aiohttp import web

from .upstream import raise_nofile

_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                  "trailer", "transfer-encoding", "upgrade", "host", "content-length"})

SESSION = web.AppKey("session", aiohttp.ClientSession)


def pooled_session() -> aiohttp.ClientSession:
    """One pooled session for every request: no connection limit, bodies as they came, no timeout
    (a stream may stay open for minutes)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
                                 skip_auto_headers=("User-Agent",), timeout=aiohttp.ClientTimeout(total=None))


def create_app(upstream: str) -> web.Application:
    base = upstream.rstrip("/")

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with request.app[SESSION].request(request.method, base + request.rel_url.raw_path_qs,
                                                data=body, headers=headers) as resp:
            ctype = resp.headers.get("Content-Type", "application/octet-stream")
            if resp.content_length is not None:
                return web.Response(status=resp.status, body=await resp.read(),
                                    headers={"Content-Type": ctype})
            out = web.StreamResponse(status=resp.status, headers={"Content-Type": ctype,
                                                                   "Cache-Control": "no-cache"})
            await out.prepare(request)
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    async def session(app):
        app[SESSION] = pooled_session()
        yield
        await app[SESSION].close()

    app = web.Application(client_max_size=20 * 1024 * 1024)
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def _loop():
    """uvloop's loop: the strictest plain-Python baseline (issue 18); asyncio's where uvloop is not
    installed (Windows), which the bench's header then names."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.bench.proxy", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9100")
    args = p.parse_args(argv)
    raise_nofile()
    web.run_app(create_app(args.upstream), host=args.host, port=args.port, print=None, access_log=None,
                backlog=4096, shutdown_timeout=1.0, loop=_loop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
