"""Hardening of `engine serve` against its clients and its own lifecycle: hostile model names
cost bounded memory, nothing a client sends can forge a log line, streams cut by shutdown end
in their protocol, the listen address is loopback unless chosen, and the retry policy."""
from __future__ import annotations

import email.utils
import http.client
import json
import signal
import sys
import time

import pytest

from engine.config import load
from engine.server.upstream import RetryPolicy, UpstreamUnreachable, retry_delay
from support.retrying import post_with_retries
from support.fake_upstream import FakeUpstream, anthropic_text_stream, error_reply, json_reply, sse_reply
from support.gateway import GatewayProcess
from support.listen import connects
from support.raw_upstream import RawUpstream, chunk, chunked_head, reply


def _post(conn, path: str, body: bytes | dict, headers: dict | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, data, {"content-type": "application/json", **(headers or {})})
    r = conn.getresponse()
    return r.status, r.read()


def _mem_mb(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


# ------------------------------------------------------------------ model names


def test_a_flood_of_long_distinct_model_names_costs_bounded_memory(make_gateway):
    gw = make_gateway()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    for i in range(20):  # warm up: the first requests of every kind allocate for good
        _post(conn, "/v1/chat/completions", {"model": f"warm-{i}", "messages": [{"role": "user", "content": "x"}]})
    base = _mem_mb(gw.proc.pid)
    for i in range(40):
        name = f"{i:04d}" + "m" * (4 * 1024 * 1024)
        status, data = _post(conn, "/v1/chat/completions",
                             {"model": name, "messages": [{"role": "user", "content": "x"}]})
        assert status == 400 and json.loads(data)["error"]["param"] == "model", data[:300]
        assert len(data) < 2000  # the name is not echoed back
    for i in range(2000):
        status, _ = _post(conn, "/v1/chat/completions",
                          {"model": f"{i:05d}" + "u" * 250, "messages": [{"role": "user", "content": "x"}]})
        assert status == 404
    conn.close()
    after = _mem_mb(gw.proc.pid)
    # 160 MB of names went through; neither the peak nor what stays grows by anything like it
    assert after["VmHWM"] - base["VmRSS"] < 90, (base, after)
    assert after["VmRSS"] - base["VmRSS"] < 40, (base, after)


# ------------------------------------------------------------------ logs


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_nothing_a_client_sends_starts_a_log_line(make_gateway, fmt):
    gw = make_gateway({"TOKLIGENCE_LOG_FORMAT": fmt})
    forged = "FORGED 2026-01-01 00:00:00,000 INFO engine.access method=GET path=/admin status=200"
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    status, _ = _post(conn, "/v1/chat/completions",
                      {"model": f"claude-nope\n{forged}", "messages": [{"role": "user", "content": "x"}]})
    assert status == 200  # routed (claude*): the name is logged as sent, escaped
    status, _ = _post(conn, "/v1/chat/completions",
                      {"model": f"nomatch\r\n{forged}", "messages": [{"role": "user", "content": "x"}]})
    assert status == 404
    conn.request("GET", "/v1/responses/resp_x%0A" + forged.replace(" ", "%20"))
    r = conn.getresponse()
    r.read()
    assert r.status == 404
    conn.request("DELETE", "/v1/responses/resp_y%0D%0A" + forged.replace(" ", "%20"))
    r = conn.getresponse()
    r.read()
    conn.close()
    time.sleep(0.3)
    lines = gw.output().splitlines()
    assert not [ln for ln in lines if ln.startswith("FORGED")]
    assert sum("FORGED" in ln for ln in lines) >= 4  # written, escaped
    if fmt == "json":
        for ln in lines:
            if "FORGED" in ln:
                json.loads(ln)


def test_a_multi_line_message_and_traceback_stay_under_their_line():
    import logging
    from engine.logs import TextFormatter
    try:
        raise ValueError("bad\nFORGED line")
    except ValueError:
        rec = logging.LogRecord("engine", logging.ERROR, __file__, 1, "boom %s", ("x\nFORGED too",), sys.exc_info())
    text = TextFormatter().format(rec)
    lines = text.split("\n")
    assert "FORGED too" in lines[0] and "\\n" in lines[0]
    assert all(ln.startswith("\t") for ln in lines[1:])


# ------------------------------------------------------------------ shutdown


def test_streams_cut_by_shutdown_end_with_an_error_in_their_protocol(tmp_path):
    with FakeUpstream("anthropic") as fake, RawUpstream() as raw:
        fake.set_default(sse_reply(anthropic_text_stream(["a"] * 200), chunk_size="event", delay=0.1))
        first = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        raw.script = reply(chunked_head() + chunk(first), then_stall=60)
        gw = GatewayProcess({"TOKLIGENCE_ANTHROPIC_BASE_URL": fake.url, "TOKLIGENCE_ANTHROPIC_API_KEY": "sk-ant-x",
                             "TOKLIGENCE_OPENAI_BASE_URL": raw.url + "/v1", "TOKLIGENCE_OPENAI_API_KEY": "sk-o-x",
                             "TOKLIGENCE_DATA_DIR": str(tmp_path), "TOKLIGENCE_SHUTDOWN_GRACE_SECONDS": "2"})
        gw.start()
        try:
            conns = []
            for model in ("claude-x", "gpt-x"):
                c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)
                c.request("POST", "/v1/chat/completions", json.dumps(
                    {"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]}),
                    {"content-type": "application/json"})
                r = c.getresponse()
                assert r.status == 200
                r.read1(10)  # the stream has begun
                conns.append((c, r))
            gw.proc.send_signal(signal.SIGTERM)
            t = time.monotonic()
            tails = [r.read().decode() for _, r in conns]  # read to a proper end: no IncompleteRead
            assert time.monotonic() - t < 5
        finally:
            gw.close()
    translated, passthrough = tails
    # the chat stream's error chunk, as at an idle timeout; the body ended properly (read() above)
    assert "shutting down" in translated and translated.endswith("\n\n") and '"error"' in translated
    assert passthrough.endswith("\n\n") and "event: error" in passthrough and "shutting down" in passthrough


# ------------------------------------------------------------------ listen address


def test_loopback_only_unless_an_address_is_chosen(tmp_path):
    assert load({}, {}).host == "127.0.0.1"
    assert load({"port": 9000}, {}).host == "127.0.0.1"
    assert load({}, {"TOKLIGENCE_HTTP_ADDRESS": ":8081"}).host == "0.0.0.0"
    assert load({"host": "0.0.0.0"}, {}).host == "0.0.0.0"
    ini = tmp_path / "gw.ini"
    ini.write_text("http_address=0.0.0.0:8085\n")
    assert load({"config": str(ini)}, {}).host == "0.0.0.0"
    # with keys required the gateway is no open relay: the default address stands
    assert load({}, {"TOKLIGENCE_AUTH_DISABLED": "false", "TOKLIGENCE_API_KEYS": "k"}).host == "0.0.0.0"


def test_serve_says_it_listens_on_loopback_and_warns_on_an_open_address(make_gateway):
    gw = make_gateway(cmd=[sys.executable, "-m", "engine", "serve", "--port", "{port}"])
    assert "listening on 127.0.0.1 only" in gw.output()
    gw2 = make_gateway(cmd=[sys.executable, "-m", "engine", "serve", "--host", "0.0.0.0", "--port", "{port}"])
    assert "with auth disabled: anyone who can reach this address" in gw2.output()


# ------------------------------------------------------------------ retry policy


def test_retry_delay_reads_retry_after_ms_and_http_dates():
    p = RetryPolicy(max_delay=10)
    assert retry_delay(0, p, "3", "250") == 0.25
    date = email.utils.formatdate(time.time() + 4, usegmt=True)
    assert 2.5 <= retry_delay(0, p, date) <= 4.0


async def test_x_should_retry_false_is_honoured():
    with FakeUpstream("anthropic") as up:
        up.set_default(error_reply(529, headers={"x-should-retry": "false"}))
        retries = []
        got, _ = await post_with_retries(up.url, RetryPolicy(max_retries=2, base_delay=0.01), retries)
        assert got == 529 and retries == [] and len(up.requests) == 1


async def test_x_should_retry_true_is_honoured():
    with FakeUpstream("anthropic") as up:
        up.enqueue(error_reply(409, headers={"x-should-retry": "true", "retry-after-ms": "10"}), json_reply({"ok": 1}))
        retries = []
        got, _ = await post_with_retries(up.url, RetryPolicy(max_retries=2), retries)
        assert got == 200 and retries == [1]


async def test_a_quota_exhausted_429_is_not_retried_and_its_body_is_kept():
    body = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                      "code": "insufficient_quota"}}
    with FakeUpstream("openai") as up:
        up.set_default(error_reply(429, body))
        retries = []
        got, text = await post_with_retries(up.url, RetryPolicy(max_retries=2, base_delay=0.01), retries)
        assert got == 429 and retries == [] and len(up.requests) == 1
        assert json.loads(text) == body


async def test_a_first_byte_timeout_is_not_retried():
    with FakeUpstream("anthropic") as up:
        up.set_default(json_reply({"ok": 1}))
        from support.fake_upstream import stall_reply
        up.set_default(stall_reply(3, before_headers=True))
        retries = []
        with pytest.raises(UpstreamUnreachable, match="first byte"):
            await post_with_retries(up.url, RetryPolicy(max_retries=2, first_byte_timeout=0.3), retries)
        assert retries == [] and len(up.requests) == 1


def test_the_route_memo_keeps_only_matched_names_within_its_byte_bound(catalog, tmp_path):
    from engine.server import app as app_mod
    from engine.server import context
    from engine.server.api_errors import ApiError
    app = app_mod.create_app(load({}, {"TOKLIGENCE_DATA_DIR": str(tmp_path)}), catalog)
    memo = app[context.RESOLVED]
    for i in range(500):
        with pytest.raises(ApiError):
            context.resolve(app, f"unrouted-{i}", "openai")
    assert len(memo) == 0  # refusals are not kept
    with pytest.raises(ApiError) as e:
        context.resolve(app, "claude-" + "x" * 300, "openai")
    assert e.value.status == 400 and e.value.param == "model"
    for i in range(6000):
        context.resolve(app, f"claude-{i:05d}" + "y" * 240, "openai")
        assert memo.size <= context._RESOLVED_MAX_BYTES and len(memo) <= context._RESOLVED_MAX
    assert memo.size > 0


@pytest.mark.parametrize("backlog,tries,expect", [("4", 12, range(4, 7)), (None, 200, range(200, 201))])
def test_a_burst_of_connections_waits_in_the_listen_backlog(make_gateway, backlog, tries, expect):
    """While the gateway cannot accept (stopped here; busy in real life), the kernel completes
    up to `listen_backlog` handshakes (default 4096; aiohttp's own is 128) and drops the rest."""
    gw = make_gateway({"TOKLIGENCE_LISTEN_BACKLOG": backlog})
    gw.proc.send_signal(signal.SIGSTOP)
    try:
        assert connects(gw.port, tries) in expect
    finally:
        gw.proc.send_signal(signal.SIGCONT)
