"""The per-request metrics as plain dicts, turned into Prometheus metric families when scraped.

prometheus_client's Counter.inc / Histogram.observe take a lock and check observability on every
call: 3 µs for the four updates of a request. The gateway updates them from one event loop
thread, so a dict of numbers per label set is enough (0.6 µs); /metrics renders them through
prometheus_client as a registered collector, in the same exposition format."""
from __future__ import annotations

from bisect import bisect_left

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


class LabelledCounter:
    """A counter family: label values -> total."""
    __slots__ = ("name", "doc", "labels", "values")

    def __init__(self, name: str, doc: str, labels):
        self.name, self.doc, self.labels = name, doc, tuple(labels)
        self.values: dict = {}

    def inc(self, key: tuple, amount=1):
        v = self.values
        v[key] = v.get(key, 0) + amount

    def family(self):
        f = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self.values.items():
            f.add_metric(list(key), value)
        return f


class LabelledHistogram:
    """A histogram family: label values -> [count per bucket (non-cumulative, +Inf last), sum]."""
    __slots__ = ("name", "doc", "labels", "bounds", "values")

    def __init__(self, name: str, doc: str, labels, buckets):
        self.name, self.doc, self.labels = name, doc, tuple(labels)
        self.bounds = tuple(float(b) for b in buckets)
        self.values: dict = {}

    def observe(self, key: tuple, amount: float):
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0] * (len(self.bounds) + 1) + [0.0]
        # the first bound >= amount: Prometheus buckets are `le` (less than or equal)
        row[bisect_left(self.bounds, amount)] += 1
        row[-1] += amount

    def family(self):
        f = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        les = [_le(b) for b in self.bounds] + ["+Inf"]
        for key, row in self.values.items():
            total, cumulative = 0, []
            for le, n in zip(les, row[:-1]):
                total += n
                cumulative.append((le, total))
            f.add_metric(list(key), cumulative, row[-1])
        return f


def _le(bound: float) -> str:
    # as prometheus_client writes a bucket bound: 0.005, 1.0, 300.0
    return repr(bound)


class Collector:
    """Registered with a CollectorRegistry: yields the families when /metrics is scraped."""

    def __init__(self, *metrics):
        self.metrics = metrics

    def collect(self):
        for m in self.metrics:
            yield m.family()

    def describe(self):
        # no samples at registration: the registry only needs the names, to refuse duplicates
        for m in self.metrics:
            yield (CounterMetricFamily if isinstance(m, LabelledCounter) else HistogramMetricFamily)(
                m.name, m.doc, labels=m.labels)


class MemoCollector:
    """The memos of client bodies (history and tools: `memos()` gives (name, memo) pairs, read at
    each scrape, since tests and the config swap or resize them), from their own counts."""

    ROWS = (("engine_memo_hits", CounterMetricFamily, "Bodies whose conversation or tools were kept",
             lambda m: m.hits),
            ("engine_memo_misses", CounterMetricFamily, "Bodies with a conversation or tools not kept",
             lambda m: m.misses),
            ("engine_memo_refused", CounterMetricFamily,
             "Of those, not learned: the memo full of recently used entries, or the conversation or "
             "tools over its byte bound",
             lambda m: m.admission.refused),
            ("engine_memo_entries", GaugeMetricFamily, "Conversations or tools texts kept",
             lambda m: len(m.order)),
            ("engine_memo_bytes", GaugeMetricFamily, "Bytes of JSON text kept", lambda m: m.size))

    def __init__(self, memos):
        self.memos = memos

    def collect(self):
        memos = list(self.memos())
        for name, kind, doc, read in self.ROWS:
            f = kind(name, doc, labels=["memo"])
            for label, memo in memos:
                f.add_metric([label], read(memo))
            yield f

    def describe(self):
        return ()
