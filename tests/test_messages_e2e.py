"""The official anthropic SDK against `engine serve` with Claude model names aliased to OpenAI models
and a fake OpenAI upstream on loopback (the messages-to-chat specs).

Each test asserts on what the SDK returns and on what the upstream received."""
from __future__ import annotations

import json

import urllib.error
import urllib.request

import anthropic
import pytest

from conftest import UPSTREAM_OPENAI_KEY, gateway_env
from support.fake_upstream import (error_reply, json_reply, openai_chat_completion, openai_chat_stream,
                                   sse_events, sse_reply, stall_reply)
from support.gateway import GatewayProcess

# the SDK warns about older Claude model names; here they are only aliases of OpenAI models
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

MODEL = "claude-sonnet-4-5"            # aliased to gpt-4o
REASONING_MODEL = "claude-opus-4-5"    # aliased to o4-mini
ALIASES = "claude-sonnet-4-5=>gpt-4o, claude-haiku-4-5*=>gpt-4o-mini, claude-opus-4-5=>o4-mini"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}


@pytest.fixture(scope="module")
def gw(fake_anthropic_session, fake_openai_session, tmp_path_factory):
    env = gateway_env(fake_anthropic_session, fake_openai_session, tmp_path_factory.mktemp("gw-messages"))
    env["TOKLIGENCE_MODEL_ALIASES"] = ALIASES
    env["TOKLIGENCE_KEEPALIVE_SECONDS"] = "0.2"
    gw = GatewayProcess(env)
    gw.start()
    yield gw
    gw.close()


@pytest.fixture
def client(gw):
    return anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0, timeout=20)


@pytest.fixture
def aclient(gw):
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key="client-key", max_retries=0, timeout=20)


@pytest.fixture
def upstream(fake_openai_session):
    return fake_openai_session


def post(url: str, body: dict, headers: dict | None = None):
    """(status, headers, body text) of a raw POST, for what the SDK hides (framing, pings)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def chunks_sse(*deltas, finish="stop", usage=None, model="gpt-4o-2024-08-06", done=True) -> str:
    """A Chat stream from raw deltas (for shapes the builders do not make: reasoning, errors)."""
    base = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": model}
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    if finish:
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage:
        events.append({**base, "choices": [], "usage": usage})
    return sse_events(events, event_lines=False, done=done)


# ---------------------------------------------------------------- text


def test_text_non_stream(client, upstream):
    upstream.enqueue(json_reply(openai_chat_completion("Hi there!", usage={
        "prompt_tokens": 20, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 8}})))
    msg = client.messages.create(
        model=MODEL, max_tokens=256, extra_body={"temperature": 0.3, "top_k": 5}, stop_sequences=["END"],
        metadata={"user_id": "user-42"},
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Answer in English."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello",
                                                "cache_control": {"type": "ephemeral"}}]}])
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "Hi there!"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (12, 8, 5)
    sent = upstream.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"
    assert "client-key" not in json.dumps(dict(sent.headers))
    assert sent.json == {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Be brief.\n\nAnswer in English."},
                     {"role": "user", "content": "Hello"}],
        "max_completion_tokens": 256, "temperature": 0.3, "stop": ["END"], "user": "user-42"}


def test_text_stream_accumulates_with_usage(client, upstream):
    upstream.enqueue(sse_reply(openai_chat_stream(["Hel", "lo", " world"], usage={
        "prompt_tokens": 30, "completion_tokens": 3}), chunk_size=41))
    with client.messages.stream(model=MODEL, max_tokens=100,
                                messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello world"
    assert final.content[0].text == "Hello world" and final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 30 and final.usage.output_tokens == 3
    sent = upstream.last.json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_raw_stream_grammar(gw, upstream):
    upstream.enqueue(sse_reply(openai_chat_stream(["a", "b"]), chunk_size=9))
    status, headers, text = post(gw.url + "/v1/messages", {
        "model": MODEL, "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        {"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert [e for e in events if e != "ping"] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]


async def test_async_client_and_anthropic_prefix(gw, upstream):
    upstream.enqueue(sse_reply(openai_chat_stream(["x", "y"])))
    upstream.enqueue(json_reply(openai_chat_completion("plain")))
    async with anthropic.AsyncAnthropic(base_url=gw.url + "/anthropic", api_key="k", max_retries=0,
                                        timeout=20) as client:  # closed in this loop, not a later test's
        async with client.messages.stream(model=MODEL, max_tokens=10,
                                          messages=[{"role": "user", "content": "x"}]) as stream:
            final = await stream.get_final_message()
        r = await client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "y"}])
    assert final.content[0].text == "xy" and r.content[0].text == "plain"
    assert [q.path for q in upstream.requests] == ["/v1/chat/completions"] * 2


# ---------------------------------------------------------------- tools


def test_tool_round_trip_with_two_parallel_calls(client, upstream):
    upstream.enqueue(sse_reply(openai_chat_stream(
        ["Checking both."],
        tool_calls=[("call_1", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}']),
                    ("call_2", "get_weather", '{"city": "Rome"}')]), chunk_size=64))
    messages = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    with client.messages.stream(model=MODEL, max_tokens=1000, messages=messages, tools=[WEATHER_TOOL],
                                tool_choice={"type": "any", "disable_parallel_tool_use": False}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert [(b.id, b.name, b.input) for b in final.content[1:]] == [
        ("call_1", "get_weather", {"city": "Paris"}), ("call_2", "get_weather", {"city": "Rome"})]
    first = upstream.last.json
    assert first["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER_TOOL["input_schema"]}}]
    assert first["tool_choice"] == "required" and "parallel_tool_calls" not in first

    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "15C", "cache_control": {"type": "ephemeral"}},
        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "no data"}],
         "is_error": True},
        {"type": "text", "text": "Which is warmer?"}]})
    upstream.enqueue(json_reply(openai_chat_completion("Paris, as far as I know.")))
    r = client.messages.create(model=MODEL, max_tokens=1000, messages=messages, tools=[WEATHER_TOOL],
                               tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert r.content[0].text == "Paris, as far as I know."
    sent = upstream.last.json
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "tool", "user"]
    assistant = sent["messages"][1]
    assert assistant["content"] == "Checking both."
    assert [(c["id"], json.loads(c["function"]["arguments"])) for c in assistant["tool_calls"]] == [
        ("call_1", {"city": "Paris"}), ("call_2", {"city": "Rome"})]
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "15C"}
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_2", "content": "[tool error] no data"}
    assert sent["messages"][4] == {"role": "user", "content": "Which is warmer?"}
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False


def test_tool_calls_non_stream(client, upstream):
    upstream.enqueue(json_reply(openai_chat_completion(None, tool_calls=[
        ("call_a", "get_weather", {"city": "Oslo"}), ("call_b", "get_weather", '{"city": "Bergen"}')])))
    r = client.messages.create(model=MODEL, max_tokens=100, tools=[WEATHER_TOOL],
                               tool_choice={"type": "tool", "name": "get_weather"},
                               messages=[{"role": "user", "content": "Oslo and Bergen?"}])
    assert r.stop_reason == "tool_use"
    assert [(b.type, b.id, b.input) for b in r.content] == [
        ("tool_use", "call_a", {"city": "Oslo"}), ("tool_use", "call_b", {"city": "Bergen"})]
    assert upstream.last.json["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


# ---------------------------------------------------------------- thinking


def test_thinking_becomes_reasoning_effort_and_reasoning_a_thinking_block(client, upstream):
    upstream.enqueue(sse_reply(chunks_sse({"role": "assistant", "content": ""},
                                          {"reasoning_content": "Let me think"},
                                          {"reasoning_content": " about it."},
                                          {"content": "42"},
                                          usage={"prompt_tokens": 9, "completion_tokens": 50}, model="o4-mini")))
    with client.messages.stream(model=REASONING_MODEL, max_tokens=4096, extra_body={"temperature": 1},
                                thinking={"type": "enabled", "budget_tokens": 2048},
                                messages=[{"role": "user", "content": "Meaning of life?"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Let me think about it." and final.content[1].text == "42"
    assert "thinking" in events and final.usage.output_tokens == 50
    sent = upstream.last.json
    assert sent["model"] == "o4-mini" and sent["reasoning_effort"] == "low"
    assert "temperature" not in sent and "thinking" not in sent


def test_thinking_is_not_sent_to_a_model_without_reasoning(client, upstream):
    upstream.enqueue(json_reply(openai_chat_completion("ok")))
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=32000, thinking={"type": "enabled", "budget_tokens": 31999},
        messages=[{"role": "user", "content": "x"},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                      {"type": "text", "text": "earlier"}]},
                  {"role": "user", "content": "y"}])
    sent = upstream.last.json
    assert "reasoning_effort" not in sent
    assert sent["max_completion_tokens"] == 16384  # gpt-4o's profile maximum
    assert sent["messages"][1] == {"role": "assistant", "content": "earlier"}
    # what was not sent is named, for the user to see
    assert raw.headers["x-gateway-dropped"] == "thinking, thinking blocks"
    assert raw.parse().content[0].text == "ok"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("status,headers,exc,out_status,etype", [
    (429, {"retry-after": "7"}, anthropic.RateLimitError, 429, "rate_limit_error"),
    (503, {}, anthropic.InternalServerError, 529, "overloaded_error"),
    (500, {}, anthropic.InternalServerError, 502, "api_error"),
    (400, {}, anthropic.BadRequestError, 400, "invalid_request_error"),
    (401, {}, anthropic.AuthenticationError, 401, "authentication_error"),
    (404, {}, anthropic.NotFoundError, 404, "not_found_error"),
])
def test_upstream_http_errors(client, upstream, status, headers, exc, out_status, etype):
    upstream.enqueue(error_reply(status, headers=headers, message="upstream says no"))
    with pytest.raises(exc) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == out_status
    body = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == etype
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"
    if status in (400, 404):
        assert "upstream says no" in body["error"]["message"]
    if status == 401:
        assert UPSTREAM_OPENAI_KEY not in body["error"]["message"] and "API key" in body["error"]["message"]


@pytest.mark.parametrize("payload,param", [
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"model": MODEL, "max_tokens": 1e30, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": MODEL, "max_tokens": 5, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a"},
                                     {"type": "tool_result", "tool_use_id": "toolu_1", "content": "b"}]}],
      "tools": [{"name": "f", "input_schema": {"type": "object"}}]}, "messages"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "temperature": 1.5},
     "temperature"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]}, "messages"),
    ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]}]}, "messages"),
])
def test_bad_input_is_an_anthropic_400_before_any_upstream_call(client, upstream, payload, param):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.post("/v1/messages", body=payload, cast_to=object)
    err = info.value.body
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert err["error"]["message"].startswith(param)
    assert upstream.requests == []


def test_unknown_model_is_an_anthropic_404(client, upstream):
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="llama-3", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "not_found_error"
    assert upstream.requests == []


def test_error_payload_mid_stream_raises_in_the_sdk(client, upstream):
    body = chunks_sse({"role": "assistant", "content": ""}, {"content": "partial"}, finish=None, done=False)
    body += 'data: {"error": {"message": "The server had an error", "type": "server_error", "code": null}}\n\n'
    upstream.enqueue(sse_reply(body))
    got = []
    with pytest.raises(anthropic.APIStatusError, match="The server had an error"):
        with client.messages.stream(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
            for text in s.text_stream:
                got.append(text)
    assert got == ["partial"]


def test_dropped_upstream_connection_raises_in_the_sdk(client, upstream):
    body = openai_chat_stream(["one ", "two ", "three"])
    upstream.enqueue(sse_reply(body, drop_after=len(body) // 2))
    with pytest.raises(anthropic.APIStatusError, match="upstream"):
        with client.messages.stream(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
            for _ in s:
                pass


def test_length_stop_is_max_tokens(client, upstream):
    upstream.enqueue(sse_reply(openai_chat_stream(["cut"], finish_reason="length")))
    with client.messages.stream(model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "x"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens" and upstream.last.json["max_completion_tokens"] == 3


def test_ping_while_the_upstream_is_silent(gw, upstream):
    upstream.enqueue(stall_reply(0.7, then=openai_chat_stream(["late"])))
    _, _, text = post(gw.url + "/v1/messages", {"model": MODEL, "max_tokens": 10, "stream": True,
                                                "messages": [{"role": "user", "content": "x"}]})
    assert text.startswith("event: message_start\n")
    assert 'event: ping\ndata: {"type": "ping"}\n\n' in text
    assert text.index("event: ping") < text.index("event: content_block_start")
    assert text.rstrip().endswith('data: {"type":"message_stop"}')


# ---------------------------------------------------------------- count_tokens


def test_count_tokens_is_estimated_on_a_translated_route(client, upstream):
    r = client.messages.count_tokens(model=MODEL, system="You are terse.", tools=[WEATHER_TOOL],
                                     messages=[{"role": "user", "content": "What is the weather in Paris? " * 10}])
    assert 80 < r.input_tokens < 250
    raw = client.messages.with_raw_response.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-gateway-token-count"] == "estimate"
    assert upstream.requests == []


def test_estimate_counts_text_tools_images_and_skips_bookkeeping():
    from engine.server.messages import estimate_tokens
    text = {"model": "m", "messages": [{"role": "user", "content": "a" * 400}]}
    assert estimate_tokens(text) == 100 + 4
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x" * 100000}}
    with_image = {"model": "m", "messages": [{"role": "user", "content": [image]}]}
    assert estimate_tokens(with_image) == 1600 + 4
    cached = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a" * 400, "cache_control": {"type": "ephemeral"}}]}]}
    assert estimate_tokens(cached) == estimate_tokens(text)
    assert estimate_tokens({**text, "tools": [WEATHER_TOOL]}) > estimate_tokens(text) + 30
