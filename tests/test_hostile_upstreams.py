"""Hostile and broken upstreams against `engine serve`: every wait has a deadline, every answer a
size limit, malformed success is a 502, redirects and protocol switches are refused, upstream keys
are never relayed. The upstream is a raw TCP script (tests/support/raw_upstream.py), so it can
stall mid-head or mid-body, lie about lengths and send what a real HTTP server would not."""
from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import time

import pytest

from support.fake_upstream import anthropic_message, anthropic_text_stream, openai_chat_completion
from support.gateway import GatewayProcess
from support.raw_upstream import RawUpstream, chunk, chunked_head, reply, response

ANTHROPIC_KEY = "sk-ant-upstream-key-0123456789"
OPENAI_KEY = "sk-openai-upstream-key-0123456789"
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def raw():
    with RawUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gw(raw, tmp_path_factory):
    g = GatewayProcess({
        "TOKLIGENCE_ANTHROPIC_BASE_URL": raw.url,
        "TOKLIGENCE_OPENAI_BASE_URL": raw.url + "/v1",
        "TOKLIGENCE_ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "TOKLIGENCE_OPENAI_API_KEY": OPENAI_KEY,
        "TOKLIGENCE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "TOKLIGENCE_UPSTREAM_FIRST_BYTE_TIMEOUT": "1",
        "TOKLIGENCE_UPSTREAM_IDLE_TIMEOUT": "1",
        "TOKLIGENCE_UPSTREAM_MAX_RETRIES": "2",
        "TOKLIGENCE_UPSTREAM_MAX_EVENT_BYTES": "65536",
        "TOKLIGENCE_KEEPALIVE_SECONDS": "30",
    })
    g.start()
    yield g
    g.close()


@pytest.fixture(autouse=True)
def _fresh(raw):
    raw.requests.clear()
    yield


def call(gw, path: str, body: dict, timeout: float = 8.0, headers: dict | None = None):
    """(status, headers, body bytes, seconds) of one request, read to the end."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    t = time.monotonic()
    try:
        conn.request("POST", path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
        r = conn.getresponse()
        data = r.read()
        return r.status, dict(r.getheaders()), data, time.monotonic() - t
    finally:
        conn.close()


def openai_error(data: bytes) -> dict:
    err = json.loads(data)["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err


def anthropic_error(data: bytes) -> dict:
    body = json.loads(data)
    assert body["type"] == "error"
    return body["error"]


def chat(model="claude-x", **kw):
    return {"model": model, **CHAT, **kw}


def messages(model="gpt-x", **kw):
    return {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], **kw}


# ------------------------------------------------------------------ deadlines


@pytest.mark.parametrize("model", ["claude-x", "gpt-x"], ids=["translated", "passthrough"])
def test_an_error_status_whose_body_stalls_is_answered_within_the_read_timeout(gw, raw, model):
    raw.script = reply(b"HTTP/1.1 500 Internal\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{",
                       then_stall=30)
    status, _, data, took = call(gw, "/v1/chat/completions", chat(model))
    assert status >= 500 and took < 5, (status, took)
    assert "did not arrive" in openai_error(data)["message"]


def test_a_stalled_passthrough_stream_ends_with_an_error_event_at_the_idle_timeout(gw, raw):
    first = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    raw.script = reply(chunked_head() + chunk(first), then_stall=30)
    status, _, data, took = call(gw, "/v1/chat/completions", chat("gpt-x", stream=True))
    assert status == 200 and took < 5, took
    assert data.startswith(first)
    tail = data[len(first):].decode()
    assert tail.startswith("event: error\n") and "idle timeout" in tail


def test_a_silent_upstream_is_not_sent_the_generation_again(gw, raw):
    raw.script = reply(b"", then_stall=30)  # the request is read, then nothing
    status, _, data, took = call(gw, "/v1/chat/completions", chat())
    assert status == 504 and "first byte" in openai_error(data)["message"]
    assert took < 3 and len(raw.requests) == 1  # upstream_max_retries=2, yet one try


def test_a_dropped_connection_after_delivery_is_not_retried(gw, raw):
    raw.script = reply(b"")
    status, _, data, _ = call(gw, "/v1/chat/completions", chat())
    assert status == 502 and len(raw.requests) == 1


# ------------------------------------------------------------------ size limits


def _bomb(size: int) -> bytes:
    return gzip.compress(b" " * size, 9)


def test_a_gzip_bomb_is_a_502_and_memory_stays_bounded(gw, raw):
    bomb = _bomb(400 * 1024 * 1024)  # ~400 KB that inflates to 400 MB
    assert len(bomb) < 1024 * 1024
    raw.script = reply(response("200 OK", bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    status, _, data, _ = call(gw, "/v1/chat/completions", chat())
    assert status == 502 and openai_error(data)["code"] == "upstream_too_large"
    assert _peak_rss_mb(gw) < 250


def test_a_gzip_bomb_stream_ends_with_an_error_event_at_the_decompressed_limit(gw, raw):
    start = anthropic_text_stream().split("event: content_block_delta")[0].encode()
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,' \
            b'"delta":{"type":"text_delta","text":"a"}}\n\n'
    bomb = gzip.compress(start + delta * (100 * 1024 * 1024 // len(delta)), 9)
    raw.script = reply(response("200 OK", bomb, {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}))
    status, _, data, _ = call(gw, "/v1/chat/completions", chat(stream=True), timeout=60)
    assert status == 200
    assert "upstream_max_decompressed_bytes" in data.decode()[-2000:]
    assert _peak_rss_mb(gw) < 250


def test_a_100_mb_body_is_a_502_while_reading(gw, raw):
    async def script(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = chunk(b"x" * (1024 * 1024))
        for _ in range(100):
            writer.write(piece)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
    raw.script = script
    status, _, data, _ = call(gw, "/v1/chat/completions", chat(), timeout=30)
    assert status == 502 and openai_error(data)["code"] == "upstream_too_large"
    assert _peak_rss_mb(gw) < 250


@pytest.mark.parametrize("model", ["claude-x", "gpt-x"], ids=["translated", "passthrough"])
def test_a_body_announced_over_the_limit_is_refused_before_reading(gw, raw, model):
    raw.script = reply(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{",
                       then_stall=30)
    status, _, data, took = call(gw, "/v1/chat/completions", chat(model))
    assert status == 502 and openai_error(data)["code"] == "upstream_too_large" and took < 3


def test_an_error_body_over_the_limit_is_not_read_whole(gw, raw):
    raw.script = reply(response("400 Bad", b'{"error": "' + b"y" * (3 * 1024 * 1024) + b'"}'))
    status, _, data, _ = call(gw, "/v1/messages", messages("claude-x"))  # passthrough, Anthropic client
    assert status == 502 and "upstream_max_error_bytes" in anthropic_error(data)["message"]


def test_an_event_over_the_limit_ends_the_stream_with_an_error_event(gw, raw):
    start = anthropic_text_stream().split("event: content_block_delta")[0].encode()
    huge = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"' \
        + b"z" * 200_000
    raw.script = reply(chunked_head() + chunk(start) + chunk(huge) + b"0\r\n\r\n")
    status, _, data, _ = call(gw, "/v1/chat/completions", chat(stream=True))
    assert status == 200
    text = data.decode()
    assert "upstream_max_event_bytes" in text and "z" * 1000 not in text


def _peak_rss_mb(gw) -> float:
    with open(f"/proc/{gw.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# ------------------------------------------------------------------ wrong-shaped success


@pytest.mark.parametrize("bad", [b"{}", b"[]", b'{"id": 5, "type": "message", "role": "assistant", "model": "m", '
                                                b'"content": "text", "stop_reason": "end_turn", "usage": {}}'],
                         ids=["empty-object", "array", "wrong-types"])
def test_a_malformed_200_is_a_502_in_the_callers_shape(gw, raw, bad):
    raw.script = reply(response("200 OK", bad))
    status, _, data, _ = call(gw, "/v1/chat/completions", chat())
    assert status == 502 and openai_error(data)["code"] == "upstream_malformed"
    status, _, data, _ = call(gw, "/v1/messages", messages("gpt-x"))  # Anthropic client, OpenAI upstream
    assert status == 502 and anthropic_error(data)["type"] == "api_error"


def test_a_malformed_200_on_responses_is_a_502_and_nothing_is_stored(gw, raw):
    raw.script = reply(response("200 OK", b'{"type": "message", "content": null}'))
    status, _, data, _ = call(gw, "/v1/responses", {"model": "claude-x", "input": "hi"})
    assert status == 502 and openai_error(data)["code"] == "upstream_malformed"
    # a well-formed answer is still translated and stored
    raw.script = reply(response("200 OK", json.dumps(anthropic_message("fine")).encode()))
    status, _, data, _ = call(gw, "/v1/responses", {"model": "claude-x", "input": "hi"})
    assert status == 200 and json.loads(data)["status"] == "completed"


def test_a_well_formed_answer_passes(gw, raw):
    raw.script = reply(response("200 OK", json.dumps(openai_chat_completion("ok")).encode()))
    status, _, data, _ = call(gw, "/v1/messages", messages("gpt-x"))
    assert status == 200 and json.loads(data)["content"][0]["text"] == "ok"


# ------------------------------------------------------------------ statuses and heads


@pytest.mark.parametrize("model", ["claude-x", "gpt-x"], ids=["translated", "passthrough"])
@pytest.mark.parametrize("head", [
    b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://169.254.169.254/latest\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 301 Moved\r\nLocation: https://elsewhere.example/v1\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
], ids=["307", "301", "101"])
def test_redirects_and_protocol_switches_are_a_502(gw, raw, model, head):
    raw.script = reply(head)
    status, headers, data, _ = call(gw, "/v1/chat/completions", chat(model))
    assert status == 502, (status, data)
    assert "location" not in {k.lower() for k in headers}
    openai_error(data)


def test_a_head_over_64_kib_in_one_read_is_refused(gw, raw):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"a" * (70 * 1024) \
        + b"\r\nContent-Length: 2\r\n\r\n{}"
    raw.script = reply(head)
    status, _, data, _ = call(gw, "/v1/chat/completions", chat("gpt-x"))
    assert status == 502 and "64 KiB" in openai_error(data)["message"]


# ------------------------------------------------------------------ upstream keys


@pytest.mark.parametrize("path,model", [("/v1/chat/completions", "claude-x"), ("/v1/chat/completions", "gpt-x"),
                                        ("/v1/messages", "claude-x"), ("/v1/messages", "gpt-x")],
                         ids=["chat-translated", "chat-passthrough", "messages-passthrough", "messages-translated"])
def test_an_error_body_echoing_the_upstream_key_is_redacted(gw, raw, path, model):
    echo = {"error": {"type": "invalid_request_error", "message": f"bad key {ANTHROPIC_KEY} / {OPENAI_KEY}"}}
    raw.script = reply(response("400 Bad Request", json.dumps(echo).encode()))
    body = chat(model) if path.endswith("completions") else messages(model)
    status, _, data, _ = call(gw, path, body)
    assert status == 400
    assert ANTHROPIC_KEY.encode() not in data and OPENAI_KEY.encode() not in data
    assert b"[redacted]" in data


def test_a_compressed_passthrough_error_echoing_the_key_is_redacted(gw, raw):
    echo = json.dumps({"error": {"message": f"key {OPENAI_KEY} refused", "type": "invalid_request_error"}}).encode()
    raw.script = reply(response("401 Unauthorized", gzip.compress(echo),
                                {"Content-Type": "application/json", "Content-Encoding": "gzip"}))
    status, headers, data, _ = call(gw, "/v1/chat/completions", chat("gpt-x"), headers={"accept-encoding": "gzip"})
    assert status == 401 and "content-encoding" not in {k.lower() for k in headers}
    assert OPENAI_KEY.encode() not in data and b"[redacted]" in data


def _anthropic_stream_with(delta_line: bytes) -> bytes:
    start = anthropic_text_stream().split("event: content_block_delta")[0].encode()
    return chunked_head() + chunk(start) + chunk(delta_line) + b"0\r\n\r\n"


def test_a_stream_delta_of_the_wrong_type_ends_the_stream_with_an_error_event(gw, raw):
    raw.script = reply(_anthropic_stream_with(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":{"not":"text"}}}\n\n'))
    status, _, data, _ = call(gw, "/v1/chat/completions", chat(stream=True))
    text = data.decode()
    assert status == 200 and "malformed" in text and '"not"' not in text


def test_an_openai_chunk_of_the_wrong_type_ends_the_stream_with_an_error_event(gw, raw):
    good = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":' \
           b'[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    bad = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":' \
          b'[{"index":0,"delta":{"content":12345},"finish_reason":null}]}\n\n'
    raw.script = reply(chunked_head() + chunk(good) + chunk(bad) + b"0\r\n\r\n")
    status, _, data, _ = call(gw, "/v1/messages", messages("gpt-x", stream=True))
    text = data.decode()
    assert status == 200 and "event: error" in text and "malformed" in text and "12345" not in text


def test_an_unknown_delta_kind_passes(gw, raw):
    raw.script = reply(_anthropic_stream_with(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"hologram_delta","hologram":[1,2]}}\n\n'
        + anthropic_text_stream().split("event: content_block_stop")[1].join(["event: content_block_stop", ""]).encode()))
    status, _, data, _ = call(gw, "/v1/chat/completions", chat(stream=True))
    text = data.decode()
    assert status == 200 and "malformed" not in text and text.rstrip().endswith("data: [DONE]")


def test_a_success_body_echoing_the_upstream_key_is_masked_in_every_mode(gw, raw):
    # translated, non-stream
    raw.script = reply(response("200 OK", json.dumps(anthropic_message(f"your key is {ANTHROPIC_KEY}")).encode()))
    status, _, data, _ = call(gw, "/v1/chat/completions", chat())
    assert status == 200 and ANTHROPIC_KEY.encode() not in data
    assert json.loads(data)["choices"][0]["message"]["content"] == "your key is " + "*" * len(ANTHROPIC_KEY)
    # translated stream
    delta = json.dumps({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": f"key {ANTHROPIC_KEY}"}}).encode()
    raw.script = reply(_anthropic_stream_with(b"event: content_block_delta\ndata: " + delta + b"\n\n"))
    status, _, data, _ = call(gw, "/v1/chat/completions", chat(stream=True))
    assert status == 200 and ANTHROPIC_KEY.encode() not in data and b"*" * len(ANTHROPIC_KEY) in data
    # passed through, stream and not: same length, so the upstream's framing still holds
    body = json.dumps(openai_chat_completion(f"key {OPENAI_KEY}")).encode()
    raw.script = reply(response("200 OK", body))
    status, headers, data, _ = call(gw, "/v1/chat/completions", chat("gpt-x"))
    assert status == 200 and OPENAI_KEY.encode() not in data and len(data) == len(body)
    event = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"' \
        + OPENAI_KEY.encode() + b'"}}]}\n\n'
    raw.script = reply(chunked_head() + chunk(event) + b"0\r\n\r\n")
    status, _, data, _ = call(gw, "/v1/chat/completions", chat("gpt-x", stream=True))
    assert status == 200 and OPENAI_KEY.encode() not in data and b"*" * len(OPENAI_KEY) in data


def test_a_key_cut_across_two_reads_of_a_passed_through_stream_is_masked(gw, raw):
    event = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"' \
        + OPENAI_KEY.encode() + b'"}}]}\n\n'
    cut = event.index(OPENAI_KEY.encode()) + 10  # the key's first 10 bytes in one read, the rest in the next

    async def script(reader, writer):
        writer.write(chunked_head() + chunk(event[:cut]))
        await writer.drain()
        await asyncio.sleep(0.3)  # two reads on the gateway's side
        writer.write(chunk(event[cut:]) + b"0\r\n\r\n")
        await writer.drain()
    raw.script = script
    status, _, data, _ = call(gw, "/v1/chat/completions", chat("gpt-x", stream=True))
    assert status == 200 and OPENAI_KEY[:10].encode() not in data
    assert data == event.replace(OPENAI_KEY.encode(), b"*" * len(OPENAI_KEY))


def test_stream_mask_holds_back_only_what_may_start_a_key():
    from engine.server.upstream import StreamMask
    m = StreamMask((b"sk-secret-123",))
    assert m.feed(b"data: x\n\n") == b"data: x\n\n"  # nothing held: an event is not delayed
    assert m.feed(b"a sk-sec") == b"a "
    assert m.feed(b"ret-123 b s") == b"*************" + b" b "
    assert m.flush() == b"s"


def test_mask_and_redact_take_every_key_longest_first_and_mask_searches_once():
    from engine.server.upstream import KeySet, mask, redact, secret_bytes
    a, b = "sk-ant-api03-" + "a" * 90, "sk-proj-" + "b.c|d*(e)" * 12  # a key's regex characters are literal
    keys = secret_bytes([a, b, "short", ""])
    assert isinstance(keys, KeySet) and keys == (b.encode(), a.encode())  # longest first
    text = f"x {a} y {b} z {b[:-1]} {a}".encode()
    assert mask(text, keys) == (f"x {'*' * len(a)} y {'*' * len(b)} z {b[:-1]} {'*' * len(a)}").encode()
    clean = b"data: " + b"." * 300
    assert mask(clean, keys) is clean and mask(text, KeySet(())) is text
    # a long body (a key searched for one by one) and a short one (one search for all)
    for filler in (b"." * 5000, b""):
        assert mask(filler + text + filler, keys) == filler + mask(text, keys) + filler
    # a key inside another: the longer goes whole, in whichever order they came
    inner, outer = b"sk-inner-key", b"prefix-sk-inner-key-suffix"
    for order in ([inner, outer], [outer, inner]):
        assert mask(b"<prefix-sk-inner-key-suffix> sk-inner-key", KeySet(order)) == \
            b"<" + b"*" * 26 + b"> " + b"*" * 12
        assert redact("<prefix-sk-inner-key-suffix> sk-inner-key", [k.decode() for k in order]) == \
            "<[redacted]> [redacted]"
    # the same keys again (another request forwarding one of them): the search is not built again
    assert secret_bytes([b, a]).search is keys.search
