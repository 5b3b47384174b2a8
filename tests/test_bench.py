"""`engine bench` machinery at tiny scale: every row of the table, no failures. No timing
assertions: the figures of a loaded CI machine mean nothing."""
from __future__ import annotations

import asyncio
import io
import json
import os

import aiohttp
import pytest

from engine.bench import faults, runner, wrk
from engine.bench.upstream import (
    chat_body,
    sse_frames,
    FAULT_KINDS,
    FakeAnthropic,
    fault_kinds,
    fault_of,
    fault_plan,
    message_body,
    model_name,
    scenario,
    stream_events,
)


@pytest.fixture(autouse=True)
def _cpu_affinity_kept():
    """A bench run pins its caller to one CPU (Pinning.pin_self); Bench.close gives the CPUs back.
    Were it not so, the pytest process, and every gateway and CLI it starts afterwards, would run
    on that one CPU: the affinity is put back here either way, and the test fails."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    yield
    after = os.sched_getaffinity(0)
    os.sched_setaffinity(0, before)
    assert after == before, f"a bench run left this process on CPUs {sorted(after)}"


# Each full bench run pins the gateway to CPU 0 and the upstream and load generator to CPU 1: two at
# once (on two xdist workers) would share those CPUs, so they run one after the other on one worker.
one_bench_at_a_time = pytest.mark.xdist_group("bench")

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
    assert scenario(m) == {"kind": "tools", "provider": "anthropic", "n": 5, "k": 3, "pace": 0.02}
    events = stream_events(m)
    assert sum(e["type"] == "content_block_start" for e in events) == 3
    args = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"
                   and e["index"] == 0)
    assert json.loads(args)["query"].startswith("T0K3N")
    text = stream_events(model_name("text", n=4))
    assert [e["type"] for e in text].count("content_block_delta") == 4
    assert message_body(model_name("text", n=4))["content"][0]["text"].startswith("T0K3N")
    gpt = model_name("text", n=4, provider="openai")
    assert gpt == "gpt-bench-text-n4" and scenario(gpt)["provider"] == "openai"
    frames = sse_frames(gpt)
    assert frames[-1] == b"data: [DONE]\n\n" and b"T0K3N" in frames[1]
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == \
        chat_body(gpt)["choices"][0]["message"]["content"]


@one_bench_at_a_time
def test_bench_runs_end_to_end_at_tiny_scale(tmp_path):
    log = io.StringIO()
    s = runner.Settings(duration=0.3, warmup=0.1, rounds=2, ns_concurrency=(1, 2), stream_concurrency=(1, 2),
                        text_deltas=10, tool_calls=1, tool_fragments=4, open_streams=12, open_deltas=3,
                        open_pace_ms=40, paced_ms=5, paced_concurrency=3,
                        workers=2, micro=True, micro_budget=0.002, loadgen="python",
                        fault_streams=20, real_concurrency=3, real_deltas=5, real_clients=4, real_clients_beyond=6, later_turns=6, real_sessions=5,
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
                 "--workers 2: non-stream c=2 requests/s", "--workers 2: text stream c=2 events/s",
                 "Codex 0.169 Responses, non-stream c=3: requests/s", "Codex 0.169 Responses, stream c=3: requests/s",
                 "Codex 0.94 chat, non-stream c=3: requests/s", "Codex 0.94 chat, stream c=3: requests/s",
                 "Claude Code Messages, non-stream c=3: requests/s", "Claude Code Messages, stream c=3: requests/s",
                 "text stream c=3, 5 ms between events: TTFT p50 ms",
                 "text stream c=3, 5 ms between events: CPU µs per event"]:
        assert want in labels, want
        assert want in table
    for name in ("direct", "proxy", "engine", "engine-w2"):
        for key, r in res[name].items():
            assert r["failed"] == 0, (name, key, r.get("errors"))
            assert r["ok"] > 0, (name, key)
    # the hand-written floor ran the Chat Completions loads, each without a failure, and no other
    floor = res["floor"]
    assert set(floor) == {"ns1", "ns2", "text1", "text2", "tools2", runner.PACED, "real1n", "real1s", "open"}, set(floor)
    for key, r in floor.items():
        assert r["failed"] == 0 and r["ok"] > 0, (key, r.get("errors"))
    assert "floor (/proxy)" in table
    by_label = {r["label"]: r for r in runner.rows(res, s)}
    assert by_label["non-stream c=2: requests/s"]["floor"].endswith("x)")
    assert by_label["Codex 0.94 chat, stream c=3: requests/s"]["floor"] != "-"
    assert by_label["Claude Code Messages, non-stream c=3: requests/s"]["floor"] == "-"
    assert floor["open"]["max_open"] >= 2 and by_label["12 open streams: peak RSS MB"]["floor"] != "-"
    for key in ("real0n", "real0s", "real1n", "real1s", "real2n", "real2s",  # every real-sized row ran
                "later0n", "later1n", "later2n", "sessions0n", "sessions1n", "sessions2n",
                "open-real0", "open-real1", "open-real2", "open-later0", "open-later1", "open-later2"):
        assert res["engine"][key]["ok"] > 0 and res["proxy"][key]["ok"] > 0, key
    for name in ("Codex 0.169 Responses", "Codex 0.94 chat", "Claude Code Messages"):
        assert f"12 open streams, {name}: peak RSS MB" in table
        assert f"12 open streams, {name} 6 turns in: peak RSS MB" in table
        assert f"{name}, 4 clients in turn, non-stream c=3: requests/s" in table
        assert f"{name}, 6 clients in turn, non-stream c=3: requests/s" in table
        assert f"{name}, 6 turns in, non-stream c=3: requests/s" in table
        assert f"{name}, 6 turns in, 5 sessions in turn, non-stream c=3: requests/s" in table
    for key, n in (("clients0n", 4), ("clients1n", 4), ("clients2n", 4),  # each client's body sent
                   ("manyclients0n", 6), ("manyclients1n", 6), ("manyclients2n", 6)):
        assert res["engine"][key]["ok"] >= n and res["proxy"][key]["ok"] >= n, key
        assert len(b.bodies[key]) == n and len({p.read_bytes() for p in b.bodies[key]}) == n
    for key in ("sessions0n", "sessions1n", "sessions2n"):  # 5 sessions' bodies, each sent
        assert res["engine"][key]["ok"] >= 5 and res["proxy"][key]["ok"] >= 5, key
        assert len(b.bodies[key]) == 5 and len({p.read_bytes() for p in b.bodies[key]}) == 5
    for name in ("proxy", "engine"):  # each side's CPU per paced event: some, and below a whole stream's worth
        paced = res[name][runner.PACED]
        assert 0 < paced["cpu_us_event"] < 1e6 * paced["elapsed"] / paced["events_per_stream"], paced
    assert len(res["proxy"]["ns2"]["rounds"]) == 2 and len(res["engine"]["text2"]["rounds"]) == 2
    assert "2 rounds of each" in table
    assert res["engine"]["open"]["max_open"] >= 2
    assert res["engine"]["open"]["rss_peak_mb"] > 0
    assert "pinned" in table and "load generator ceiling" in table
    for key in ("ns2", "text2"):  # the workers row shows what each side cost while it ran
        cores = res["engine-w2"][key]["cores"]
        assert cores["gateway"] > 0 and cores["upstream"] > 0 and cores["loadgen"] > 0, cores
    assert "--workers 2, non-stream c=2: cores busy during the run: gateway workers" in table
    assert "12 open streams: peak RSS MB" in table and "<= 80 MB" in table
    micro = res["micro"]
    assert any(r["spec"].startswith("chat-to-messages/stream") and r["events"] > 0 for r in micro["stream"])
    assert any(r["spec"].startswith("chat-to-messages/request") and "us" in r for r in micro["request"])
    assert "µs/event" in table
    f = res["faults"]
    assert f["streams"] == 20 and f["faulted"] == 4 and f["unexpected"] == 0, f["unexpected_detail"]
    assert faults.passed(f), f["checks"]
    assert "fault load test: 20 concurrent streams" in table and "verdict: met" in table


def test_the_bench_keys_have_the_form_and_length_of_real_ones():
    # the gateway scans what it sends for its keys, in time that falls with their length
    import re
    for key, prefix, length in ((runner.ANTHROPIC_KEY, "sk-ant-api03-", 108), (runner.OPENAI_KEY, "sk-proj-", 164)):
        assert key.startswith(prefix) and len(key) == length
        assert re.fullmatch(r"[A-Za-z0-9_-]+", key[len(prefix):])
    assert runner.ANTHROPIC_KEY != runner.OPENAI_KEY


def test_cpu_seconds_of_a_process_are_finer_than_clock_ticks():
    # the paced row divides a few hundred ms of CPU by thousands of events: ticks of 10 ms would
    # make it jump by whole percents
    import time
    from engine.bench.procs import cpu_seconds
    spin = time.process_time() + 0.0123
    while time.process_time() < spin:
        pass
    ours, own = cpu_seconds([os.getpid()]), time.process_time()
    assert abs(ours - own) < 0.002 and ours % 0.01 != 0
    gone = 2 ** 22 + 12345  # above pid_max's default: no such process
    assert cpu_seconds([gone]) == 0.0


def test_median_run_keeps_one_whole_run_and_every_failure():
    runs = [{"rps": 300.0, "lat_p50": 1.0, "failed": 0}, {"rps": 100.0, "lat_p50": 9.0, "failed": 2},
            {"rps": 200.0, "lat_p50": 5.0, "failed": 1}]
    got = runner.median_run(runs)
    assert (got["rps"], got["lat_p50"], got["failed"], got["rounds"]) == (200.0, 5.0, 3, [300.0, 100.0, 200.0])
    streams = [{"events_s": 5.0, "rps": 1.0, "failed": 0}, {"events_s": 7.0, "rps": 0.5, "failed": 0}]
    assert runner.median_run(streams)["events_s"] == 5.0  # streams are ranked by events/s
    assert runner.median_run(runs[:1])["rps"] == 300.0


def test_a_target_row_where_the_proxy_was_not_at_full_speed_gets_no_verdict():
    """The load generator shares a CPU with the fake upstream: when it, not the byte proxy, sets
    the pace, a ratio over the proxy's figure says nothing and is marked load-bound."""
    s = runner.Settings(ns_concurrency=(64,), stream_concurrency=(32,), real=False, paced_concurrency=0)

    def table(proxy_busy):
        res = {"proxy": {"ns64": {"rps": 7000.0, "busy": 0.99},
                         "text32": {"events_s": 160_000.0, "ttft_p50": 40.0, "busy": proxy_busy}},
               "engine": {"ns64": {"rps": 5000.0, "busy": 1.0},
                          "text32": {"events_s": 190_000.0, "ttft_p50": 28.0, "busy": 0.99}}}
        return {r["label"]: r["verdict"] for r in runner.rows(res, s)}, res

    bound, res = table(0.62)
    assert bound["text stream c=32: events/s"] == bound["text stream c=32: TTFT p50 ms"] == runner.LOAD_BOUND
    assert bound["non-stream c=64: requests/s"] == "MISSED"  # the proxy was at full speed there
    text = runner.render(res, s, runner.Pinning(True), True)
    assert "load-bound: a target row whose byte-proxy run used under 85% of its core" in text
    assert "(such runs: text32 62%)" in text
    full, _ = table(0.97)
    assert full["text stream c=32: events/s"] == full["text stream c=32: TTFT p50 ms"] == "met"


# ---------------------------------------------------------------- the fault load test

def test_fault_plan_is_exact_and_decidable():
    m = model_name("text", n=40, pace_ms=10, fault_pct=20, sid=9)
    assert m == "claude-bench-text-n40-p10-f20-s9"
    assert scenario(m) == {"kind": "text", "provider": "anthropic", "n": 40, "k": 2, "pace": 0.01}
    assert fault_plan(m) == (20, FAULT_KINDS, 9)
    assert fault_plan(model_name("text", n=3)) is None
    assert fault_plan(model_name("text", fault_pct=7, fault_kinds="stall.eof", sid=3)) == (7, ("stall", "eof"), 3)
    with pytest.raises(ValueError):
        fault_kinds("stall.nope")
    for pct in (0, 7, 20, 33, 100):
        picked = [fault_of(i, pct, FAULT_KINDS) for i in range(200)]
        assert sum(k is not None for k in picked) == 200 * pct // 100
    picked = [fault_of(i, 20, FAULT_KINDS) for i in range(200)]
    assert [i for i, k in enumerate(picked) if k][:3] == [4, 9, 14]  # every 5th, evenly spread
    assert {k for k in picked if k} == set(FAULT_KINDS)  # every kind in turn
    # what the client must see, from the kind and the gateway's retries alone
    assert faults.expectation(None, 2) == "ok"
    assert faults.expectation("429", 1) == "ok" and faults.expectation("429", 0) == "http 429"
    assert faults.expectation("529all", 2) == "http 503" and faults.expectation("stall", 2) == "error payload"
    assert faults.expected_attempts("529all", 2) == 3 and faults.expected_attempts("429", 2) == 2


def _sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def _chunk(content=None, finish=None):
    delta = {"content": content} if content is not None else {}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
ERROR = {"error": {"message": "boom", "type": "api_error", "param": None, "code": None}}


@pytest.mark.parametrize("raw,status,seen,flagged", [
    (_sse(_chunk("ab"), _chunk("c"), _chunk(finish="stop"), USAGE, b"[DONE]"), 200, "ok", False),
    (b": keep-alive\n\n" + _sse(_chunk("abc"), _chunk(finish="stop"), USAGE, b"[DONE]"), 200, "ok", False),
    (_sse(_chunk("ab"), _chunk(finish="stop"), USAGE, b"[DONE]"), 200, "ok", True),        # text cut short
    (_sse(_chunk("abc"), _chunk(finish="stop"), b"[DONE]"), 200, "ok", True),              # no usage chunk
    (_sse(_chunk("abc"), _chunk(finish="stop"), USAGE), 200, "truncated", True),           # clean-looking end
    (_sse(_chunk("ab"), ERROR), 200, "error payload", False),
    (_sse(_chunk("ab"), ERROR, b"[DONE]"), 200, "error payload", True),                    # [DONE] after it
    (_sse(_chunk("ab"), ERROR, _chunk("c")), 200, "error payload", True),                  # not the last event
    (_sse(_chunk("xy"), ERROR), 200, "error payload", True),                               # not the text sent
    (json.dumps(ERROR).encode(), 503, "http 503", False),
    (b"<html>oops</html>", 502, "http 502", True),
])
def test_the_client_judges_each_stream_exactly(raw, status, seen, flagged):
    r = faults.StreamResult(0, None, "ok", status=status, raw=raw, retry_after="1")
    faults.judge(r, "abc")
    assert r.seen == seen and bool(r.detail) == flagged, r.detail


def test_a_429_without_retry_after_is_flagged():
    r = faults.StreamResult(0, "429all", "http 429", status=429, raw=json.dumps(ERROR).encode())
    faults.judge(r, "abc")
    assert r.seen == "http 429" and "retry-after" in r.detail


async def _raw(url: str, model: str):
    body = json.dumps({"model": model, "stream": True, "max_tokens": 9, "messages": []}).encode()
    chunks = []
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/messages", data=body) as resp:
        try:
            async for c in resp.content.iter_any():
                chunks.append(c)
            broke = None
        except aiohttp.ClientPayloadError as e:
            broke = type(e).__name__
        return resp.status, resp.headers.copy(), b"".join(chunks), broke


async def test_the_fake_upstream_injects_each_fault():
    up = FakeAnthropic()
    url = f"http://127.0.0.1:{await up.start()}"
    try:
        def m(kind):
            return model_name("text", n=6, fault_pct=100, fault_kinds=kind, sid=0)

        status, _, raw, broke = await _raw(url, model_name("text", n=6))
        assert status == 200 and raw.endswith(b"message_stop\"}\n\n") and broke is None
        status, _, raw, broke = await _raw(url, m("error"))
        assert b"overloaded_error" in raw and b"message_stop" not in raw and broke is None
        status, _, raw, broke = await _raw(url, m("eof"))
        assert b"message_delta" in raw and b"message_stop" not in raw and broke is None
        for kind in ("drop", "reset"):
            status, _, raw, broke = await _raw(url, m(kind))
            assert status == 200 and b"message_stop" not in raw and broke, kind
        status, headers, raw, _ = await _raw(url, m("429"))
        assert status == 429 and headers["retry-after"] == "0.1" and b"rate_limit_error" in raw
        status, _, raw, _ = await _raw(url, m("429"))  # the retry: the normal stream
        assert status == 200 and raw.endswith(b"message_stop\"}\n\n")
        for _ in range(3):
            status, _, raw, _ = await _raw(url, m("529all"))
            assert status == 529 and b"overloaded_error" in raw
        with pytest.raises(asyncio.TimeoutError):  # the stall: some events, then silence
            await asyncio.wait_for(_raw(url, m("stall")), 0.5)
        async with aiohttp.ClientSession() as s, s.get(url + "/_bench/stats") as resp:
            stats = await resp.json()
        assert stats["faults"] == {"error": 1, "eof": 1, "drop": 1, "reset": 1, "429": 1, "529all": 3, "stall": 1}
        assert stats["attempts"][m("429")] == 2 and stats["requests"] == 11
    finally:
        await up.stop()


@one_bench_at_a_time
def test_fault_load_test_200_streams(tmp_path):
    """`engine bench --faults`: 200 streams at once through engine serve, 20 % faulted with every
    kind in turn; each outcome exactly as planned, nothing lost, nothing left open."""
    s = runner.Settings(workdir=tmp_path, log=io.StringIO())
    # each full stream lasts a second (40 deltas 25 ms apart), long enough for all 200 to be sent
    # while the first are still open on a machine busy with the rest of the suite
    res = runner.run_faults(s, faults.FaultSettings(pace_ms=25))
    print(faults.render(res))
    assert res["unexpected"] == 0, res["unexpected_detail"]
    assert res["streams"] == 200 and res["faulted"] == 40
    assert res["completed_ok"] + res["failed_as_expected"] + res["unexpected"] == res["streams"]
    assert res["completed_ok"] == 160 + res["recovered"] and res["recovered"] == 8  # 429/529 once, retried
    # all at once: the full-length streams were all in flight together (a stream refused on every
    # attempt may end, after a jittered backoff, before the last request is sent)
    assert res["max_in_flight_full"] == res["completed_ok"] == 168
    assert res["max_in_flight"] >= 168
    for c in res["checks"]:
        assert c["ok"], c
    assert {c["name"] for c in res["checks"]} >= {"no stream lost", "engine_open_streams 0 after the run",
                                                   "gateway answers /health"}
    assert res["wall"] < 15
    assert faults.passed(res)


async def test_the_openai_sdk_sees_each_fault_as_an_error(tmp_path):
    """What an OpenAI SDK client makes of each outcome: the full answer, or an exception."""
    import openai

    b = runner.Bench(runner.Settings(workdir=tmp_path, log=io.StringIO(), pin=False))
    try:
        fs = faults.FaultSettings()
        port = runner.free_port()
        b._start("upstream", [runner.python(), "-m", "engine.bench.upstream", "--port", str(port)], None, port)
        up_url = f"http://127.0.0.1:{port}"
        _, base = b.start_engine(up_url=up_url, extra_env=fs.engine_env())
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        want = faults.expected_text(6)

        async def ask(kind):
            model = model_name("text", n=6, fault_pct=100, fault_kinds=kind, sid=0) if kind else \
                model_name("text", n=6)
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=True,
                stream_options={"include_usage": True})
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        assert await ask(None) == want
        assert await ask("429") == want and await ask("529") == want  # retried by the gateway
        with pytest.raises(openai.RateLimitError):
            await ask("429all")
        with pytest.raises(openai.InternalServerError) as e:
            await ask("529all")
        assert e.value.status_code == 503
        for kind in ("error", "drop", "reset", "eof", "stall"):
            with pytest.raises(openai.APIError):
                await ask(kind)
        await client.close()
    finally:
        b.close()


# ---------------------------------------------------------------- prompt-caching replay

def test_caching_replay_lowers_billed_input_and_reads_the_whole_previous_turn(tmp_path, monkeypatch):
    from engine.bench import caching

    monkeypatch.chdir(tmp_path)  # the response store's ./data
    on = asyncio.run(caching.replay("claude-opus-4-7", "auto", turns=4))
    off = asyncio.run(caching.replay("claude-opus-4-7", "off", turns=4))
    billed = lambda r: sum(t["billed"] for t in r["turns"])  # noqa: E731
    assert [t["total"] for t in on["turns"]] == [t["total"] for t in off["turns"]]
    assert billed(on) < 0.5 * billed(off) and billed(off) == sum(t["total"] for t in off["turns"])
    # the gateway's output is byte-stable turn to turn: each turn reads all of the one before
    assert [t["read"] for t in on["turns"][1:]] == [t["total"] for t in on["turns"][:-1]]
    assert all(t["breakpoints"] == 3 for t in on["turns"]) and all(t["read"] == 0 for t in off["turns"])
    # cache reads come back to the client as cached_tokens
    assert on["reported_cached"] == [t["read"] for t in on["turns"]]
    text = caching.render([off, on])
    assert "claude-opus-4-7" in text and "vs off" in text


def test_caching_upstream_bills_like_anthropic():
    from engine.bench.caching import CachingUpstream, tokens

    big = {"type": "text", "text": "x" * 8000}
    body = {"system": [dict(big, cache_control={"type": "ephemeral"})],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]}
    up = CachingUpstream(min_tokens=1024)
    first = up.bill(body)
    size = tokens(big) + tokens({"type": "text", "text": "hi"})
    assert first == {"input_tokens": 0, "cache_read_input_tokens": 0, "cache_creation_input_tokens": size}
    assert up.turns[-1]["billed"] == size * 1.25
    second = up.bill(body)
    assert second["cache_read_input_tokens"] == size and up.turns[-1]["billed"] == size * 0.1
    # below the model's minimum nothing is cached; a 1-hour write costs 2x
    small = CachingUpstream(min_tokens=100000)
    small.bill(body)
    assert small.bill(body)["cache_read_input_tokens"] == 0
    hour = CachingUpstream(min_tokens=1)
    hour.bill({"system": [dict(big, cache_control={"type": "ephemeral", "ttl": "1h"})], "messages": []})
    assert hour.turns[-1]["billed"] == tokens(big) * 2.0


@pytest.mark.parametrize("i", range(len(runner.REAL)))
def test_a_later_request_of_a_session_holds_the_turns_before_it(i):
    from engine import schemas
    _, capture, provider = runner.REAL[i]
    first = json.loads(runner.real_body(capture, "m", True)[1])
    path, raw = runner.real_body(capture, "m", True, turns=60)
    later = json.loads(raw)
    conv = "input" if "input" in later else "messages"
    assert len(later[conv]) >= len(first[conv]) + 60 and len(raw) > len(json.dumps(first)) + 60 * 2400
    assert later[conv][-1] == first[conv][-1]  # the request's own last message is still last
    schema = {"/v1/responses": "openai/responses.request", "/v1/chat/completions": "openai/chat.request",
              "/v1/messages": "anthropic/messages.request"}[path]
    assert schemas.first_error(schema, later) is None
    assert [m["role"] for m in later[conv][-61:-1]] == ["user", "assistant"] * 30
    # shaped as the client's own messages: Claude Code's content blocks, Codex chat's strings
    shapes = {type(m["content"]) for m in later[conv][-61:-1]}
    assert shapes == {type(first[conv][-1]["content"])}


@pytest.mark.parametrize("i", range(len(runner.REAL)))
def test_sessions_of_their_own_begin_alike_and_differ_in_every_turn(i):
    """The bodies of the sessions-in-turn row: each session's later request holds turns no other
    session's holds, after what the client sends first (the same for all)."""
    from engine import schemas
    _, capture, _ = runner.REAL[i]
    path, one = runner.real_body(capture, "m", False, turns=60, session=1)
    _, two = runner.real_body(capture, "m", False, turns=60, session=2)
    a, b = json.loads(one), json.loads(two)
    conv = "input" if "input" in a else "messages"
    schema = {"/v1/responses": "openai/responses.request", "/v1/chat/completions": "openai/chat.request",
              "/v1/messages": "anthropic/messages.request"}[path]
    assert schemas.first_error(schema, a) is None
    first = len(a[conv]) - 61  # what the client sent before the added turns
    assert a[conv][:first] == b[conv][:first] and a[conv][-1] == b[conv][-1]
    texts = [json.dumps(x) for x in a[conv][first:-1]], [json.dumps(x) for x in b[conv][first:-1]]
    assert len(texts[0]) == 60 and all(2400 < len(t) < 2800 and t != u for t, u in zip(*texts))
    assert len(set(texts[0])) == 60  # each turn its own too
