"""Streams cut by shutdown end in their protocol. On SIGTERM aiohttp waits up to the grace period
(shutdown_grace_seconds) for open requests, then cancels them and closes their sockets, which a
client sees as a bare cut. Just before that, every stream still open has its upstream closed
and is marked, so it ends on its own with an error event in its API's grammar and the end of
its body."""
from __future__ import annotations

import asyncio

from aiohttp import web

SHUTDOWN_MESSAGE = "the gateway is shutting down; this stream was cut at the end of its grace period"
OPEN = web.AppKey("streams_open", set)


def setup(app: web.Application, grace: float):
    app[OPEN] = set()

    async def on_shutdown(app):
        # ahead of aiohttp's own deadline, so each stream still has time to write its ending
        lead = min(1.0, grace / 4)
        asyncio.get_running_loop().call_later(max(0.0, grace - lead), cut_all, app)

    app.on_shutdown.append(on_shutdown)


def cut_all(app: web.Application):
    for cut in list(app[OPEN]):
        cut()
