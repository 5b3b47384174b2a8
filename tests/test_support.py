"""Self-tests of the test infrastructure (tests/support, conftest fixtures, snapshots)."""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from support.fake_upstream import (
    FakeUpstream,
    anthropic_message,
    anthropic_stream_events,
    anthropic_text_stream,
    anthropic_tool_stream,
    disconnect_reply,
    error_reply,
    fixture,
    json_reply,
    openai_chat_completion,
    openai_chat_stream,
    openai_responses_stream,
    parse_sse,
    sse_events,
    sse_reply,
    stall_reply,
)
from support.gateway import GatewayProcess, GatewayStartError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = Path("/work/shared/fixtures")


# --------------------------------------------------------------------------- fixtures copy


def test_fixture_files_present(fixtures_dir):
    names = {p.relative_to(fixtures_dir).as_posix() for p in fixtures_dir.rglob("*") if p.is_file()}
    assert "SOURCES.md" in names and "clients/README.md" in names
    assert "anthropic-text.sse" in names and "openai-chat-text-include-usage.sse" in names
    if SHARED_FIXTURES.is_dir():
        for p in SHARED_FIXTURES.rglob("*"):
            if p.is_file():
                rel = p.relative_to(SHARED_FIXTURES)
                assert (fixtures_dir / rel).read_bytes() == p.read_bytes(), rel


# --------------------------------------------------------------------------- FakeUpstream


async def test_json_reply_recorded_with_headers_and_body(fake_anthropic):
    fake_anthropic.enqueue(json_reply({"ok": True}, status=201, headers={"X-Test": "1"}))
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages?beta=true",
                          json={"model": "claude-x", "max_tokens": 5},
                          headers={"X-Api-Key": "sk-ant-test", "anthropic-version": "2023-06-01"}) as r:
            assert r.status == 201
            assert r.headers["x-test"] == "1"
            assert r.headers["content-type"].startswith("application/json")
            assert r.headers["request-id"].startswith("req_")
            assert await r.json() == {"ok": True}
    rec = fake_anthropic.last
    assert rec.method == "POST"
    assert rec.path == "/v1/messages"
    assert rec.query_string == "beta=true" and rec.query == {"beta": "true"}
    assert rec.headers["x-api-key"] == "sk-ant-test"
    assert rec.headers["X-API-KEY"] == "sk-ant-test"  # case-insensitive
    assert rec.headers.get("Anthropic-Version") == "2023-06-01"
    assert rec.json == {"model": "claude-x", "max_tokens": 5}
    assert json.loads(rec.body) == rec.json
    assert rec.stream is False
    assert len(fake_anthropic.requests) == 1 and fake_anthropic.pending == 0


def test_non_json_body_recorded_raw(fake_openai):
    req = urllib.request.Request(fake_openai.url + "/v1/chat/completions", data=b"not json",
                                 method="POST")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200
    assert fake_openai.last.body == b"not json"
    assert fake_openai.last.json is None


@pytest.mark.parametrize("chunk_size,delay", [(None, 0.0), (7, 0.0), (64, 0.005), ("event", 0.0)])
async def test_sse_reply_streams_fixture_bytes(fake_anthropic, chunk_size, delay):
    raw = fixture("anthropic-text-cache-usage-ping.sse")
    fake_anthropic.enqueue(sse_reply(raw, chunk_size=chunk_size, delay=delay))
    got, chunks, part = b"", [], b""
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages", json={"stream": True}) as r:
            assert r.status == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            # the chunked encoding's own chunks, however the reads split or join them (the
            # empty one at the end closes the body)
            async for data, end_of_chunk in r.content.iter_chunks():
                got += data
                part += data
                if end_of_chunk and part:
                    chunks.append(part)
                    part = b""
    assert got == raw
    if chunk_size is None:
        assert chunks == [raw]
    elif chunk_size == "event":
        assert chunks == [e + b"\n\n" for e in raw.split(b"\n\n")[:-1]] and raw.endswith(b"\n\n")
    else:
        assert chunks == [raw[i:i + chunk_size] for i in range(0, len(raw), chunk_size)]


async def test_sse_reply_delay_is_paced(fake_anthropic):
    fake_anthropic.enqueue(sse_reply(b"x" * 10, chunk_size=2, delay=0.05))
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages") as r:
            assert await r.read() == b"x" * 10
    assert time.monotonic() - t0 >= 0.2  # 4 gaps of 50 ms


async def test_drop_after_breaks_the_stream(fake_anthropic):
    raw = fixture("anthropic-text.sse")
    fake_anthropic.enqueue(sse_reply(raw, chunk_size=40, drop_after=200))
    got = b""
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages", json={"stream": True}) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in r.content.iter_any():
                    got += chunk
    assert got == raw[:200]
    # the server is still fine afterwards
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages", json={}) as r:
            assert r.status == 200


def test_drop_after_seen_by_urllib_too(fake_anthropic):
    import http.client

    fake_anthropic.enqueue(sse_reply(fixture("anthropic-text.sse"), drop_after=100))
    with urllib.request.urlopen(urllib.request.Request(
            fake_anthropic.url + "/v1/messages", data=b"{}", method="POST")) as r:
        with pytest.raises(http.client.IncompleteRead):
            r.read()


async def test_error_reply_status_and_retry_after(fake_anthropic, fake_openai):
    fake_anthropic.enqueue(error_reply(429, headers={"retry-after": "3"}), error_reply(529))
    fake_openai.enqueue(error_reply(429, {"error": {"message": "slow down", "type": "requests",
                                                    "param": None, "code": "rate_limit_exceeded"}},
                                    headers={"Retry-After": "7"}))
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages", json={}) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "3"
            body = await r.json()
            assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        async with s.post(fake_anthropic.url + "/v1/messages", json={}) as r:
            assert r.status == 529
            assert (await r.json())["error"] == {"type": "overloaded_error", "message": "Overloaded"}
        async with s.post(fake_openai.url + "/v1/chat/completions", json={}) as r:
            assert r.status == 429
            assert r.headers["retry-after"] == "7"
            assert (await r.json())["error"]["code"] == "rate_limit_exceeded"
        # default error body in OpenAI shape on OpenAI paths
        fake_openai.enqueue(error_reply(500))
        async with s.post(fake_openai.url + "/v1/responses", json={}) as r:
            assert r.status == 500
            err = (await r.json())["error"]
            assert set(err) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("body, param, code", [
    ({"model": "gpt-5", "max_tokens": 100}, "max_tokens", "unsupported_parameter"),
    ({"model": "o3", "temperature": 0.2}, "temperature", "unsupported_value"),
    ({"model": "gpt-5.1", "top_p": 0.9}, "top_p", "unsupported_value"),
    ({"model": "o4-mini", "presence_penalty": 0.5}, "presence_penalty", "unsupported_value"),
    ({"model": "gpt-5", "logprobs": True}, "logprobs", "unsupported_parameter"),
    ({"model": "gpt-5", "reasoning_effort": "max"}, "reasoning_effort", "unsupported_value"),
    ({"model": "gpt-4o", "reasoning_effort": "low"}, "reasoning_effort", "unsupported_parameter"),
    ({"model": "gpt-5", "max_completion_tokens": 100, "temperature": 1, "reasoning_effort": "high"}, None, None),
    ({"model": "gpt-5-chat-latest", "max_tokens": 100, "temperature": 0.3}, None, None),
    ({"model": "gpt-4o", "max_tokens": 100, "temperature": 0.3}, None, None),
])
async def test_fake_openai_refuses_what_reasoning_models_refuse(fake_openai, body, param, code):
    """The real API's 400s for reasoning models, whatever answer a test scripted."""
    fake_openai.set_default(lambda rec: json_reply({"scripted": True}))
    payload = {"messages": [{"role": "user", "content": "x"}], **body}
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_openai.url + "/v1/chat/completions", json=payload) as r:
            answer = await r.json()
            if param is None:
                assert r.status == 200 and answer == {"scripted": True}
            else:
                assert r.status == 400
                assert answer["error"]["param"] == param and answer["error"]["code"] == code
                assert answer["error"]["type"] == "invalid_request_error"
    assert fake_openai.last.json == payload  # recorded all the same


async def test_default_replies(fake_anthropic, fake_openai):
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages",
                          json={"model": "claude-haiku-4-5", "max_tokens": 10}) as r:
            body = await r.json()
            assert body["type"] == "message" and body["model"] == "claude-haiku-4-5"
            assert body["content"][0]["type"] == "text" and body["stop_reason"] == "end_turn"
        async with s.post(fake_anthropic.url + "/v1/messages",
                          json={"model": "claude-haiku-4-5", "stream": True}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = parse_sse(await r.read())
            types = [e["event"] for e in events]
            assert types[0] == "message_start" and types[-1] == "message_stop"
            assert "content_block_delta" in types
            for e in events:
                assert json.loads(e["data"])["type"] == e["event"]
        async with s.post(fake_anthropic.url + "/v1/messages/count_tokens", json={}) as r:
            assert (await r.json()) == {"input_tokens": 12}
        async with s.get(fake_anthropic.url + "/v1/models") as r:
            assert (await r.json())["data"][0]["type"] == "model"

        async with s.post(fake_openai.url + "/v1/chat/completions",
                          json={"model": "gpt-4o"}) as r:
            body = await r.json()
            assert body["object"] == "chat.completion" and body["model"] == "gpt-4o"
            assert r.headers["x-request-id"].startswith("req_")
        async with s.post(fake_openai.url + "/v1/chat/completions",
                          json={"model": "gpt-4o", "stream": True,
                                "stream_options": {"include_usage": True}}) as r:
            events = parse_sse(await r.read())
            assert all(e["event"] is None for e in events)
            assert events[-1]["data"] == "[DONE]"
            assert json.loads(events[-2]["data"])["choices"] == []
        async with s.post(fake_openai.url + "/v1/chat/completions",
                          json={"model": "gpt-4o", "stream": True}) as r:
            events = parse_sse(await r.read())
            assert "usage" not in json.loads(events[-2]["data"])
        async with s.post(fake_openai.url + "/v1/responses", json={"model": "gpt-5"}) as r:
            body = await r.json()
            assert body["object"] == "response" and body["status"] == "completed"
        async with s.post(fake_openai.url + "/v1/responses",
                          json={"model": "gpt-5", "stream": True}) as r:
            events = parse_sse(await r.read())
            assert events[-1]["event"] == "response.completed"
            seqs = [json.loads(e["data"])["sequence_number"] for e in events]
            assert seqs == list(range(len(events)))
        async with s.get(fake_openai.url + "/v1/models") as r:
            assert (await r.json())["object"] == "list"
        async with s.post(fake_openai.url + "/nope", json={}) as r:
            assert r.status == 404


async def test_scripted_order_and_path_filter(fake_anthropic):
    fake_anthropic.enqueue(json_reply({"n": 1}), json_reply({"n": 2}))
    fake_anthropic.enqueue(json_reply({"tokens": 99}), path="/v1/messages/count_tokens")
    fake_anthropic.enqueue(json_reply({"n": 3}))
    seen = []
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages/count_tokens", json={}) as r:
            # unfiltered entries come first in the queue and match any path
            seen.append(await r.json())
        for _ in range(2):
            async with s.post(fake_anthropic.url + "/v1/messages", json={}) as r:
                seen.append(await r.json())
        async with s.post(fake_anthropic.url + "/v1/messages/count_tokens", json={}) as r:
            seen.append(await r.json())
        async with s.post(fake_anthropic.url + "/v1/messages", json={}) as r:
            seen.append((await r.json())["type"])  # queue empty → default
    assert seen == [{"n": 1}, {"n": 2}, {"n": 3}, {"tokens": 99}, "message"]
    assert [r.index for r in fake_anthropic.requests] == [0, 1, 2, 3, 4]
    fake_anthropic.reset()
    assert fake_anthropic.requests == [] and fake_anthropic.pending == 0


async def test_callable_reply_and_set_default(fake_openai):
    def echo(rec):
        return {"echo": rec.json["q"], "path": rec.path}

    fake_openai.enqueue(echo)
    fake_openai.set_default(json_reply({"always": 1}))
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_openai.url + "/v1/chat/completions", json={"q": "hi"}) as r:
            assert await r.json() == {"echo": "hi", "path": "/v1/chat/completions"}
        for _ in range(2):
            async with s.post(fake_openai.url + "/v1/chat/completions", json={}) as r:
                assert await r.json() == {"always": 1}


async def test_stall_reply_sends_headers_then_nothing(fake_anthropic):
    fake_anthropic.enqueue(stall_reply(5))
    timeout = aiohttp.ClientTimeout(total=None, sock_read=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        t0 = time.monotonic()
        async with s.post(fake_anthropic.url + "/v1/messages", json={"stream": True}) as r:
            assert r.status == 200  # headers arrived promptly
            assert time.monotonic() - t0 < 1.0
            with pytest.raises(asyncio_timeout_errors()):
                await r.content.read()
    rec = fake_anthropic.last
    assert rec.wait_done(3)
    assert rec.client_disconnected


async def test_stall_then_completes(fake_anthropic):
    fake_anthropic.enqueue(stall_reply(0.2, then=b"data: x\n\n"))
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages") as r:
            assert await r.read() == b"data: x\n\n"


async def test_disconnect_reply(fake_anthropic):
    fake_anthropic.enqueue(disconnect_reply())
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with s.post(fake_anthropic.url + "/v1/messages", json={}) as r:
                await r.read()


def asyncio_timeout_errors():
    import asyncio

    return (asyncio.TimeoutError, aiohttp.ServerTimeoutError)


def test_sync_use_and_wait_for_requests():
    with FakeUpstream() as up:
        assert up.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(up.url + "/v1/models") as r:
            assert json.load(r)["object"] == "list"
        assert [r.path for r in up.wait_for_requests(1)] == ["/v1/models"]
        with pytest.raises(AssertionError):
            up.wait_for_requests(2, timeout=0.1)
    assert not up.running


def test_sse_events_format():
    assert sse_events([{"type": "ping"}]) == 'event: ping\ndata: {"type":"ping"}\n\n'
    assert sse_events([{"a": 1}], event_lines=False, done=True) == 'data: {"a":1}\n\ndata: [DONE]\n\n'


def test_builders_follow_wire():
    # A.4: event line equals payload type; order message_start .. message_stop
    text = anthropic_tool_stream([("toolu_1", "get_weather", ["", '{"city"', ': "Paris"}'])],
                                 text="Checking", thinking=["Let me", " think"], signature="sig")
    evs = [json.loads(e["data"]) for e in parse_sse(text)]
    assert [e["type"] for e in evs if e["type"] != "ping"] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    starts = [e["content_block"] for e in evs if e["type"] == "content_block_start"]
    assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""}
    assert starts[2] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    assert evs[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    frags = "".join(e["delta"].get("partial_json", "") for e in evs
                    if e["type"] == "content_block_delta" and e["index"] == 2)
    assert json.loads(frags) == {"city": "Paris"}

    msg = anthropic_message([{"type": "text", "text": ["a", "b"]},
                             {"type": "tool_use", "id": "toolu_2", "name": "f",
                              "partial_json": ['{"x":', "1}"]}], "tool_use")
    assert msg["content"] == [{"type": "text", "text": "ab"},
                              {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {"x": 1}}]
    assert msg["usage"]["input_tokens"] == 12

    no_stop = anthropic_stream_events([{"type": "text", "text": ["x"]}], message_stop=False)
    assert no_stop[-1]["type"] == "message_delta"

    s = parse_sse(openai_chat_stream(tool_calls=[("call_1", "f", ['{"a"', ":1}"])], text_chunks=[]))
    chunks = [json.loads(e["data"]) for e in s[:-1]]
    assert s[-1]["data"] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None, "refusal": None}
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 44

    cc = openai_chat_completion(None, tool_calls=[("call_1", "f", {"a": 1})])
    assert cc["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
    assert cc["choices"][0]["finish_reason"] == "tool_calls"

    r = [json.loads(e["data"]) for e in parse_sse(
        openai_responses_stream(["Hi"], function_calls=[("call_9", "calc", '{"a":1}')]))]
    assert r[-1]["type"] == "response.completed"
    assert [i["type"] for i in r[-1]["response"]["output"]] == ["message", "function_call"]


async def test_sse_reply_of_built_stream_roundtrip(fake_anthropic):
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["Hi", " there"]), chunk_size=5))
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_anthropic.url + "/v1/messages", json={"stream": True}) as r:
            evs = [json.loads(e["data"]) for e in parse_sse(await r.read())]
    assert "".join(e["delta"]["text"] for e in evs if e["type"] == "content_block_delta") == "Hi there"


# --------------------------------------------------------------------------- snapshots


def test_snapshot_goes_to_top_level_snapshots_dir(snapshot, request):
    assert {"hello": "world", "n": [1, 2, 3]} == snapshot
    expected = REPO_ROOT / "snapshots" / "test_support" / "test_support.ambr"
    where = snapshot.extension.get_location(test_location=snapshot.test_location, index=0)
    assert Path(where) == expected
    if not request.config.option.update_snapshots:  # --snapshot-update writes at session end
        assert expected.is_file()
        assert "test_snapshot_goes_to_top_level_snapshots_dir" in expected.read_text()
    assert not (Path(__file__).parent / "__snapshots__").exists()


# --------------------------------------------------------------------------- GatewayProcess

HTTP_SERVER_CMD = [sys.executable, "-m", "http.server", "--bind", "{host}", "{port}"]

# A stand-in "gateway" that reports which TOKLIGENCE_* variables it saw, then serves HTTP.
ENV_REPORTER = (
    "import os, sys, http.server, socketserver\n"
    "print('TOKLIGENCE:', sorted((k, v) for k, v in os.environ.items() if k.startswith('TOKLIGENCE_')))\n"
    "print('ARGS:', sys.argv[1:])\n"
    "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()\n"
)


def test_gateway_process_with_stand_in_server(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKLIGENCE_LEAKED", "from-outer-env")
    gw = GatewayProcess({"TOKLIGENCE_ANTHROPIC_API_KEY": "sk-ant-test"},
                        args=["--flag"], config_text="a: 1\n",
                        cmd=[sys.executable, "-c", ENV_REPORTER, "{port}", "{config}"],
                        health_path="/")
    try:
        gw.start()
        assert gw.url == f"http://127.0.0.1:{gw.port}"
        with urllib.request.urlopen(gw.url + "/") as r:
            assert r.status == 200
        out = gw.wait_for_output(r"TOKLIGENCE: .*").group(0)
        assert "TOKLIGENCE_LEAKED" not in out
        assert "('TOKLIGENCE_ANTHROPIC_API_KEY', 'sk-ant-test')" in out
        assert "TOKLIGENCE_DATA_DIR" in out  # defaulted to a temp dir
        assert f"ARGS: ['{gw.port}', '{gw.config_path}', '--flag']" in gw.output()
        assert gw.config_path.read_text() == "a: 1\n"
        pid1 = gw.pid
        port = gw.port
        gw.restart()
        assert gw.port == port and gw.pid != pid1
        with urllib.request.urlopen(gw.url + "/") as r:
            assert r.status == 200
        assert gw.output().count("--- run ") == 2
        rc = gw.stop()
        assert rc is not None and not gw.is_running()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(gw.url + "/", timeout=1)
    finally:
        gw.close()
    assert not gw.tmpdir.exists()


def test_gateway_process_default_command():
    gw = GatewayProcess({"X": "1"}, args=["--verbose"], config_text="k: v\n")
    try:
        cmd = gw.command()
        assert cmd[:4] == [sys.executable, "-m", "engine", "serve"]
        assert cmd[4:8] == ["--host", "127.0.0.1", "--port", str(gw.port)]
        assert cmd[8:] == ["--config", str(gw.config_path), "--verbose"]
        assert gw.env()["X"] == "1"
        assert gw.health_path == "/health"
    finally:
        gw.close()


def test_gateway_process_reports_early_exit():
    gw = GatewayProcess(cmd=[sys.executable, "-c", "import sys; print('boom on stdout'); "
                             "print('and stderr', file=sys.stderr); sys.exit(3)"])
    with pytest.raises(GatewayStartError) as ei:
        gw.start()
    msg = str(ei.value)
    assert "code 3" in msg and "boom on stdout" in msg and "and stderr" in msg
    gw.close()


def test_gateway_process_moves_off_a_port_taken_before_it_binds():
    """free_port's pick taken by another process (a parallel worker) before the gateway binds it:
    the first start tries another port; a port the test chose is never changed."""
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        gw = GatewayProcess({"TOKLIGENCE_ANTHROPIC_API_KEY": "sk-ant-test"})
        gw.port = busy
        try:
            gw.start()
            assert gw.port != busy and gw.is_running() and gw.runs == 2
        finally:
            gw.close()
        fixed = GatewayProcess({"TOKLIGENCE_ANTHROPIC_API_KEY": "sk-ant-test"}, port=busy, startup_timeout=5)
        try:
            with pytest.raises(GatewayStartError, match="(?i)address already in use"):
                fixed.start()
        finally:
            fixed.close()


def test_gateway_process_start_timeout():
    gw = GatewayProcess(cmd=[sys.executable, "-c", "import time; print('sleeping'); time.sleep(60)"],
                        startup_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(GatewayStartError) as ei:
        gw.start()
    assert time.monotonic() - t0 < 5
    assert "not healthy" in str(ei.value) and "sleeping" in str(ei.value)
    assert not gw.is_running()  # killed after the timeout
    gw.close()


def test_gateway_process_kills_stubborn_process():
    code = ("import signal, sys, http.server\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), "
            "http.server.SimpleHTTPRequestHandler).serve_forever()\n")
    gw = GatewayProcess(cmd=[sys.executable, "-c", code, "{port}"], health_path="/")
    gw.start()
    t0 = time.monotonic()
    rc = gw.stop(timeout=0.5)
    assert rc == -9 and time.monotonic() - t0 < 5
    gw.close()


def test_http_server_stand_in_via_make_gateway(make_gateway):
    gw = make_gateway(cmd=HTTP_SERVER_CMD, health_path="/")
    env = gw.env()
    assert env["TOKLIGENCE_ANTHROPIC_API_KEY"] == "sk-ant-upstream-secret"
    assert env["TOKLIGENCE_OPENAI_BASE_URL"].endswith("/v1")
    with urllib.request.urlopen(gw.url + "/") as r:
        assert r.status == 200
    assert '"GET / HTTP/1.1" 200' in gw.wait_for_output(r'"GET / HTTP/1.1" 200').group(0)


def test_env_is_not_polluted():
    assert not any(k.startswith("TOKLIGENCE_LEAKED") for k in os.environ)


def test_snapshot_json_extension(snapshot_json):
    assert {"b": [1, 2], "a": "x"} == snapshot_json
    where = snapshot_json.extension.get_location(test_location=snapshot_json.test_location, index=0)
    assert Path(where).parent == REPO_ROOT / "snapshots" / "test_support"
    assert where.endswith(".json")


# --------------------------------------------------------------------------- session fakes


# the second test checks what the first left behind was reset: both in one process (xdist worker)
@pytest.mark.xdist_group("session-fake-reset")
def test_session_fake_first(fake_anthropic_session):
    fake_anthropic_session.enqueue(json_reply({"leftover": True}))
    with urllib.request.urlopen(fake_anthropic_session.url + "/v1/models") as r:
        r.read()
    fake_anthropic_session.enqueue(json_reply({"leftover": True}))
    assert len(fake_anthropic_session.requests) == 1


@pytest.mark.xdist_group("session-fake-reset")
def test_session_fake_is_reset_between_tests(fake_anthropic_session):
    assert fake_anthropic_session.requests == []
    assert fake_anthropic_session.pending == 0


# --------------------------------------------------------------------------- session gateway


def test_session_gateway_is_healthy(gateway, fake_anthropic_session, fake_openai_session):
    env = gateway.env()
    assert env["TOKLIGENCE_ANTHROPIC_BASE_URL"] == fake_anthropic_session.url
    assert env["TOKLIGENCE_OPENAI_BASE_URL"] == fake_openai_session.url + "/v1"
    with urllib.request.urlopen(gateway.url + "/health", timeout=5) as r:
        assert r.status == 200
    assert gateway.is_running()
