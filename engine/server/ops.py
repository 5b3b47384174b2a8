"""What an operator needs around every request: gateway keys, one log line, Prometheus metrics.

Handlers add what they learn (route, model, upstream status, tokens, time to first byte) with
`note(request, ...)`; app.guarded logs and counts it once the response is done."""
from __future__ import annotations

import hashlib
import hmac

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

from ..logs import AccessLog, field
from .counters import Collector, LabelledCounter, LabelledHistogram
from .api_errors import ApiError

access_log = AccessLog("engine.access")

METRICS = web.AppKey("metrics", object)
KEYRING = web.AppKey("keyring", object)
OPEN_PATHS = frozenset({"/health"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def note(request: web.Request, **fields):
    """Facts about this request for the access log and the metrics (app.guarded gives every
    request its dict; a handler run without it, as in unit tests, gets one here)."""
    note_all(request, fields)


def note_all(request: web.Request, fields: dict):
    """note() with the facts in a dict already built (no keyword dict per call)."""
    info = request.get("log")
    if info is None:
        request["log"] = info = {}
    info.update(fields)


class KeyRing:
    """Gateway keys kept only as SHA-256 digests and compared in constant time. A keys-file line
    `sha256:<hex>` is taken as an already-hashed key."""

    def __init__(self, keys):
        self.digests = []
        for k in keys:
            if k.startswith("sha256:") and len(k) == 71:
                self.digests.append(bytes.fromhex(k[7:]))
            else:
                self.digests.append(hashlib.sha256(k.encode()).digest())

    def accepts(self, presented: str | None) -> bool:
        if not presented:
            return False
        d = hashlib.sha256(presented.encode()).digest()
        ok = False
        for known in self.digests:  # no early exit: the time does not tell which key matched
            ok |= hmac.compare_digest(d, known)
        return ok


def presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key")


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry(auto_describe=True)
        # updated on every request: plain dicts, rendered at scrape time (counters.py)
        self.requests = LabelledCounter("engine_requests", "Requests served", ["route", "model", "status"])
        self.latency = LabelledHistogram("engine_request_seconds", "Time to the end of the response",
                                         ["route"], _BUCKETS)
        self.ttft = LabelledHistogram("engine_time_to_first_token_seconds", "Time to the first streamed byte",
                                      ["route"], _BUCKETS)
        self.tokens = LabelledCounter("engine_tokens", "Tokens reported by the upstream", ["direction", "model"])
        r.register(Collector(self.requests, self.latency, self.ttft, self.tokens))
        self.upstream_errors = Counter("engine_upstream_errors", "Upstream failures",
                                       ["provider", "status"], registry=r)
        self.retries = Counter("engine_upstream_retries", "Upstream retries", ["provider"], registry=r)
        self.open_streams = Gauge("engine_open_streams", "Streams being forwarded now", registry=r)
        self.tasks = Gauge("engine_asyncio_tasks", "asyncio tasks alive in this process", registry=r)
        self.tasks.set_function(_task_count)
        self.upstream_connections = Gauge("engine_upstream_connections", "Upstream connections in use",
                                          registry=r)


def _task_count() -> int:
    import asyncio
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return 0


def setup(app: web.Application, cfg, upstreams: dict):
    """`upstreams`: provider -> Upstream, whose open connections /metrics reports."""
    app[METRICS] = Metrics()
    app[METRICS].upstreams = upstreams
    app[KEYRING] = None if cfg.auth_disabled else KeyRing(cfg.all_api_keys())


async def metrics_handler(request: web.Request):
    m = request.app[METRICS]
    m.upstream_connections.set(sum(up.connections_in_use for up in m.upstreams.values()))
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def check_key(request: web.Request):
    ring = request.app[KEYRING]
    if ring is not None and request.path not in OPEN_PATHS and not ring.accepts(presented_key(request)):
        raise ApiError(401, "Missing or invalid gateway API key: send it as 'Authorization: Bearer KEY' "
                            "or 'x-api-key: KEY'.", code="invalid_api_key", type="authentication_error")


def record(request: web.Request, status: int, elapsed: float):
    info = request.get("log") or {}
    m: Metrics = request.app[METRICS]
    route = info.get("route")
    if not route:
        resource = request.match_info.route.resource
        route = resource.canonical if resource else "unmatched"
    model = info.get("model_label") or "-"
    m.requests.inc((route, model, str(status)))
    m.latency.observe((route,), elapsed)
    ttfb = info.get("ttfb")
    if ttfb is not None:
        m.ttft.observe((route,), ttfb)
    tin, tout = info.get("tokens_in"), info.get("tokens_out")
    if tin:
        m.tokens.inc(("in", model), tin)
    if tout:
        m.tokens.inc(("out", model), tout)
    path = request.path
    if path in OPEN_PATHS or path == "/metrics":
        return
    wanted = access_log.wanted()
    if wanted is None:
        return
    method, rid, provider, mode, ups = (request.method, request.get("request_id"), info.get("provider"),
                                        info.get("mode"), info.get("upstream_status"))
    model = info.get("model")
    trid = None if rid is None else field(rid)
    urid = info.get("upstream_request_id")
    if wanted:
        latency = round(elapsed * 1000, 1)
        ttfb_ms = round(ttfb * 1000, 1) if ttfb is not None else None
        fields = {
            "method": method, "path": path, "route": route, "model": model,
            "provider": provider, "mode": mode, "status": status,
            "upstream_status": ups, "latency_ms": latency, "ttfb_ms": ttfb_ms,
            "tokens_in": tin, "tokens_out": tout, "request_id": rid, "upstream_request_id": urid,
        }
    else:
        # the text line alone: str(round(x, 1)) is "%.1f" % x (both round the exact binary
        # value half to even, to one decimal) while repr writes no exponent, far below 1e15 ms
        fields = None
        latency = elapsed * 1000
        latency = f"{latency:.1f}" if latency < 1e15 else round(latency, 1)
        ttfb_ms = None if ttfb is None else f"{ttfb * 1000:.1f}" if ttfb < 1e12 else round(ttfb * 1000, 1)
    # the fields in order as key=value, those without a value left out: one string build, no call
    access_log.write(f"{_line_start(method, path, route, model, provider, mode)} status={status}"
                     f"{'' if ups is None else f' upstream_status={ups}'} latency_ms={latency}"
                     f"{'' if ttfb_ms is None else f' ttfb_ms={ttfb_ms}'}{'' if tin is None else f' tokens_in={tin}'}"
                     f"{'' if tout is None else f' tokens_out={tout}'}{'' if trid is None else f' request_id={trid}'}"
                     f"{'' if urid is None else f' upstream_request_id={field(urid)}'}",
                     fields)


# the access line's start, the same for every request of one route and model: made once
_STARTS: dict = {}
_STARTS_MAX = 1024


def _line_start(method: str, path: str, route: str, model, provider, mode) -> str:
    key = (method, path, route, model, provider, mode)
    # what the client chose (path, model), escaped for the text line; only short text names are
    # kept, and the memo starts over when full (clients choose them)
    memo = (model is None or type(model) is str and len(model) <= 256) and len(path) <= 256
    if memo:
        start = _STARTS.get(key)
        if start is not None:
            return start
    tmodel = None if model is None else field(model) if type(model) is str else field(str(model))
    start = (f"method={method} path={field(path)} route={route}{'' if tmodel is None else f' model={tmodel}'}"
             f"{'' if provider is None else f' provider={provider}'}{'' if mode is None else f' mode={mode}'}")
    if memo:
        if len(_STARTS) >= _STARTS_MAX:
            _STARTS.clear()
        _STARTS[key] = start
    return start
