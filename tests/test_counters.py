"""The dict-backed per-request metrics (engine/server/counters.py) expose exactly what
prometheus_client's own Counter and Histogram expose for the same updates (its `_created`
timestamps aside)."""
from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from engine.server.counters import Collector, LabelledCounter, LabelledHistogram
from engine.server.ops import _BUCKETS


def _samples(registry) -> list[str]:
    return sorted(line for line in generate_latest(registry).decode().splitlines()
                  if line and "_created" not in line)


def test_same_exposition_as_prometheus_client():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    c = LabelledCounter("engine_requests", "Requests served", ["route", "model", "status"])
    h = LabelledHistogram("engine_request_seconds", "Time to the end of the response", ["route"], _BUCKETS)
    ours.register(Collector(c, h))
    pc = Counter("engine_requests", "Requests served", ["route", "model", "status"], registry=theirs)
    ph = Histogram("engine_request_seconds", "Time to the end of the response", ["route"], buckets=_BUCKETS,
                   registry=theirs)
    rnd = random.Random(7)
    for _ in range(500):
        key = (rnd.choice(["/v1/messages", "/v1/chat/completions"]), rnd.choice(["claude*", "-"]),
               rnd.choice(["200", "400", "502"]))
        amount = rnd.choice([1, 1, 3, 12])
        c.inc(key, amount)
        pc.labels(*key).inc(amount)
        # bucket bounds exactly, between them, and past the last one
        secs = rnd.choice([0.005, 0.0049, 0.3, 1, 2.5, 299.9, 300, 301, rnd.random() * 10])
        h.observe(key[:1], secs)
        ph.labels(key[0]).observe(secs)
    got, want = _samples(ours), _samples(theirs)
    assert got == want
    assert any(line.startswith('engine_request_seconds_bucket{le="+Inf"') for line in got)
