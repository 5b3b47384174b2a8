"""`engine bench` machinery at tiny scale: every row of the table, no failures. No timing
assertions: the figures of a loaded CI machine mean nothing."""
from __future__ import annotations

import io
import json

import pytest

from engine.bench import runner, wrk
from engine.bench.upstream import message_body, model_name, scenario, stream_events

WRK_OUT = """\
Running 1s test @ http://127.0.0.1:1/v1/chat/completions
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.61ms  512.00us   9.10ms   88.00%
  Latency Distribution
     50%    2.50ms
     75%    2.80ms
     90%    3.10ms
     99%  850.00us
  6120 requests in 1.00s, 11.43MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   6115.42
Transfer/sec:     11.42MB
"""


def test_wrk_output_is_parsed():
    r = wrk.parse(WRK_OUT)
    assert r["n"] == 6120 and r["rps"] == pytest.approx(6115.42)
    assert r["lat_p50"] == pytest.approx(2.5) and r["lat_p99"] == pytest.approx(0.85)
    assert r["failed"] == 7 and r["ok"] == 6113


def test_scenarios_from_model_names():
    m = model_name("tools", n=5, k=3, pace_ms=20)
    assert scenario(m) == {"kind": "tools", "n": 5, "k": 3, "pace": 0.02}
    events = stream_events(m)
    assert sum(e["type"] == "content_block_start" for e in events) == 3
    args = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"
                   and e["index"] == 0)
    assert json.loads(args)["query"].startswith("T0K3N")
    text = stream_events(model_name("text", n=4))
    assert [e["type"] for e in text].count("content_block_delta") == 4
    assert message_body(model_name("text", n=4))["content"][0]["text"].startswith("T0K3N")


def test_bench_runs_end_to_end_at_tiny_scale(tmp_path):
    log = io.StringIO()
    s = runner.Settings(duration=0.3, warmup=0.1, ns_concurrency=(1, 2), stream_concurrency=(1, 2),
                        text_deltas=10, tool_calls=1, tool_fragments=4, open_streams=12, open_deltas=3,
                        open_pace_ms=40, workers=2, micro=True, micro_budget=0.002, loadgen="python",
                        workdir=tmp_path, log=log)
    b = runner.Bench(s)
    try:
        res = b.run()
    finally:
        b.close()
    table = runner.render(res, s, b.pin, b.use_wrk)
    labels = [r["label"] for r in runner.rows(res, s)]
    for want in ["non-stream c=1: requests/s", "non-stream c=1: latency p50 ms", "non-stream c=1: latency p99 ms",
                 "non-stream c=1: added p50 ms (over upstream)", "non-stream c=2: requests/s",
                 "text stream c=1: TTFT p50 ms", "text stream c=2: full stream p50 ms", "text stream c=2: events/s",
                 "tool stream c=2: events/s", "12 open streams: peak RSS MB", "12 open streams: failed",
                 "--workers 2: non-stream c=2 requests/s", "--workers 2: text stream c=2 events/s"]:
        assert want in labels, want
        assert want in table
    for name in ("direct", "proxy", "engine", "engine-w2"):
        for key, r in res[name].items():
            assert r["failed"] == 0, (name, key, r.get("errors"))
            assert r["ok"] > 0, (name, key)
    assert res["engine"]["open"]["max_open"] >= 2
    assert res["engine"]["open"]["rss_peak_mb"] > 0
    assert "pinned" in table and "load generator ceiling" in table
    micro = res["micro"]
    assert any(r["spec"].startswith("chat-to-messages/stream") and r["events"] > 0 for r in micro["stream"])
    assert any(r["spec"].startswith("chat-to-messages/request") and "us" in r for r in micro["request"])
    assert "µs/event" in table
