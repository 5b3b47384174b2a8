"""ops.record's access line, in the text and JSON formats and through logging, is the one the
plain formatting below gives: every field, in order, escaped, rounded, left out when absent,
whether its start comes from the memo or not and whether the fields dict is built or not."""
from __future__ import annotations

import io
import itertools
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from engine import logs
from engine.logs import JsonFormatter, StdoutHandler, TextFormatter, field
from engine.server import ops

NOW = 1700000000.123


def reference(method, path, route, info, rid, status, elapsed) -> tuple[str, dict]:
    """The access line's message and fields, written out plainly."""
    model, ttfb = info.get("model"), info.get("ttfb")
    fields = {"method": method, "path": path, "route": route, "model": model,
              "provider": info.get("provider"), "mode": info.get("mode"), "status": status,
              "upstream_status": info.get("upstream_status"), "latency_ms": round(elapsed * 1000, 1),
              "ttfb_ms": None if ttfb is None else round(ttfb * 1000, 1),
              "tokens_in": info.get("tokens_in"), "tokens_out": info.get("tokens_out"), "request_id": rid,
              "upstream_request_id": info.get("upstream_request_id")}
    urid = fields["upstream_request_id"]
    text = dict(fields, path=field(path), model=None if model is None else field(str(model)),
                request_id=None if rid is None else field(rid),
                upstream_request_id=None if urid is None else field(urid))
    return " ".join(f"{k}={v}" for k, v in text.items() if v is not None), fields


INFOS = [
    {},
    {"model": "claude-x", "model_label": "claude-*", "provider": "anthropic", "mode": "translate",
     "upstream_status": 200, "tokens_in": 12, "tokens_out": 29, "upstream_request_id": "req_011CUp"},
    {"model": 'a "b"\nc', "provider": "openai", "mode": "passthrough", "ttfb": 0.01234, "tokens_in": 0,
     "upstream_request_id": 'up "id" \t'},
    {"model": 12, "upstream_status": 529, "ttfb": 0.00005, "tokens_out": 0},
    {"model": "é" * 300, "mode": "translate", "ttfb": 0.00125},
]
PATHS = ["/v1/chat/completions", "/v1/x y\u2028z", "/v1/" + "p" * 300]
RIDS = [None, "req_abc", 'client "id" two\r\n']
ELAPSED = [0.0, 0.00005, 0.00125, 0.00035, 1.23456, 0.0999999]


def _app():
    app = web.Application()
    app[ops.METRICS] = ops.Metrics()
    return app


@pytest.mark.parametrize("fmt", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_the_access_line_is_the_plain_formatting(fmt, monkeypatch):
    monkeypatch.setattr(logs.time, "time", lambda: NOW)
    monkeypatch.setattr(ops, "_STARTS", {})
    stream = io.StringIO()
    handler = StdoutHandler(stream)
    handler.setFormatter(fmt)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    app, want = _app(), []
    try:
        # every case twice: the line's start made, then taken from the memo
        for _ in range(2):
            for info, path, rid, elapsed in itertools.product(INFOS, PATHS, RIDS, ELAPSED):
                req = make_mocked_request("GET" if rid is None else "POST", path, app=app)
                req["log"] = dict(info, route="/r")
                if rid is not None:
                    req["request_id"] = rid
                ops.record(req, 200, elapsed)
                message, fields = reference(req.method, path, "/r", info, rid, 200, elapsed)
                want.append(fmt.access(NOW, "engine.access", message, fields))
        handler.flush()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert stream.getvalue().split("\n") == want + [""]  # JSON keeps U+2028 as it is: not splitlines
    assert ops._STARTS and len(ops._STARTS) < len(INFOS) * len(PATHS) * 2  # long names are not kept


def test_through_logging_the_record_carries_the_fields(caplog):
    app = _app()
    req = make_mocked_request("POST", "/v1/chat/completions", app=app)
    req["log"] = dict(INFOS[1], route="/v1/chat/completions", ttfb=0.5)
    req["request_id"] = "req_1"
    with caplog.at_level(logging.INFO, logger="engine.access"):
        ops.record(req, 201, 0.0421)
    message, fields = reference("POST", "/v1/chat/completions", "/v1/chat/completions", req["log"], "req_1",
                                201, 0.0421)
    assert [(r.getMessage(), r.fields) for r in caplog.records] == [(message, fields)]


def test_the_memo_of_line_starts_is_bounded(monkeypatch):
    monkeypatch.setattr(ops, "_STARTS", {})
    monkeypatch.setattr(ops, "_STARTS_MAX", 4)
    for i in range(10):
        assert ops._line_start("POST", "/p", "/r", f"m{i}", None, None) == f"method=POST path=/p route=/r model=m{i}"
        assert len(ops._STARTS) <= 4
    assert ops._line_start("POST", "/p", "/r", None, "anthropic", "translate") == \
        "method=POST path=/p route=/r provider=anthropic mode=translate"


def test_wanted_says_whether_the_fields_are_read():
    access = logs.AccessLog("engine.access")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        root.setLevel(logging.INFO)
        for fmt, reads in ((TextFormatter(), False), (JsonFormatter(), True), (logging.Formatter(), True)):
            h = StdoutHandler(io.StringIO())
            h.setFormatter(fmt)
            root.handlers[:] = [h]
            assert access.wanted() is reads
        root.setLevel(logging.WARNING)
        assert access.wanted() is None
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
