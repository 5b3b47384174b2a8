"""The official openai SDK against `engine serve` and a fake Anthropic upstream on loopback.

Each test asserts on what the SDK returns and on what the upstream received."""
from __future__ import annotations

import asyncio
import json

import openai
import pytest

from support.fake_upstream import (anthropic_message, anthropic_text_stream, anthropic_tool_stream,
                                   error_reply, fixture, json_reply, sse_reply)

MODEL = "claude-sonnet-4-5"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def client_for(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=20)


@pytest.fixture
def client(gateway):
    return client_for(gateway)


@pytest.fixture
async def aclient(gateway):
    # closed in the test's own loop: an async client left to the garbage collector schedules its
    # close on whatever loop runs then (a later test's), where it fails and logs an ERROR
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0,
                                  timeout=20) as client:
        yield client


@pytest.fixture
def upstream(fake_anthropic_session):
    return fake_anthropic_session


def test_text_non_stream(client, upstream):
    upstream.enqueue(json_reply(json.loads(fixture("anthropic-message-text.json"))))
    r = client.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}], temperature=1.6)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    sent = upstream.last
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-upstream-secret"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert sent.json["max_tokens"] == 4096 and sent.json["temperature"] == 1  # clamped from 1.6
    assert "client-key" not in json.dumps(dict(sent.headers))


def test_text_stream_with_usage(client, upstream):
    upstream.enqueue(sse_reply(fixture("anthropic-text-cache-usage-ping.sse"), chunk_size=37))
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert upstream.last.json["stream"] is True


def test_parallel_tool_calls_stream_accumulated_by_the_sdk(client, upstream):
    upstream.enqueue(sse_reply(anthropic_tool_stream(
        [("toolu_01", "get_weather", ['{"ci', 'ty": "Paris"}']),
         ("toolu_02", "get_weather", ['', '{"city": "Rome"}'])], text="Checking both."), chunk_size=50))
    with client.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "Paris and Rome?"}],
                                        tools=[WEATHER_TOOL]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    msg = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert msg.content == "Checking both."
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls] == [
        ("toolu_01", "get_weather", {"city": "Paris"}), ("toolu_02", "get_weather", {"city": "Rome"})]
    sent = upstream.last.json
    assert sent["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                              "input_schema": WEATHER_TOOL["function"]["parameters"]}]


def test_tool_round_trip(client, upstream):
    upstream.enqueue(json_reply(json.loads(fixture("anthropic-message-parallel-tool-use.json"))))
    messages = [{"role": "user", "content": "Weather?"}]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL],
                                       parallel_tool_calls=False, tool_choice="required")
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and len(msg.tool_calls) == 2
    assert upstream.last.json["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    messages.append(msg.model_dump(exclude_none=True))
    for call in msg.tool_calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": f"sunny in {call.id}"})
    messages.append({"role": "user", "content": "Thanks, summarise."})
    upstream.enqueue(json_reply(anthropic_message("All sunny.")))
    r2 = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert r2.choices[0].message.content == "All sunny."
    sent = upstream.last.json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent[1]["content"]] == ["text", "tool_use", "tool_use"]
    results = sent[2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text"]
    assert [b["tool_use_id"] for b in results[:2]] == [c.id for c in msg.tool_calls]


def test_thinking_with_tools_over_two_turns(client, upstream):
    signature = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
    upstream.enqueue(sse_reply(anthropic_tool_stream(
        [("toolu_think", "get_weather", ['{"city": ', '"Oslo"}'])],
        thinking="The user wants Oslo weather.", signature=signature), chunk_size=64))
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    with client.chat.completions.stream(model=MODEL, messages=messages, tools=[WEATHER_TOOL],
                                        reasoning_effort="low", max_completion_tokens=4000,
                                        temperature=0.5) as stream:
        final = stream.get_final_completion()
    first = upstream.last.json
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert first["max_tokens"] == 4000 and "temperature" not in first
    msg = final.choices[0].message
    dumped = msg.model_dump(exclude_none=True)
    assert dumped["reasoning_content"] == "The user wants Oslo weather."
    assert dumped["reasoning_signature"] == signature
    messages.append(dumped)
    messages.append({"role": "tool", "tool_call_id": "toolu_think", "content": "-3C"})
    upstream.enqueue(sse_reply(anthropic_text_stream(["Cold: ", "-3C."])))
    r2 = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL],
                                        reasoning_effort="low", max_completion_tokens=4000, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in r2 if c.choices) == "Cold: -3C."
    assistant = upstream.last.json["messages"][1]
    assert assistant["content"][0] == {"type": "thinking", "thinking": "The user wants Oslo weather.",
                                       "signature": signature}
    assert assistant["content"][1]["type"] == "tool_use"


async def test_async_client_stream_and_not(aclient, upstream):
    upstream.enqueue(sse_reply(anthropic_text_stream(["a", "b", "c"])))
    upstream.enqueue(json_reply(anthropic_message("plain")))
    stream = await aclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                   stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    r = await aclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "y"}])
    assert text == "abc" and r.choices[0].message.content == "plain"


async def test_concurrent_streams_do_not_mix(aclient, upstream):
    upstream.set_default(None)
    for i in range(8):
        upstream.enqueue(sse_reply(anthropic_text_stream([f"s{i}-", "x"], id=f"msg_{i}"), delay=0.01, chunk_size=40))

    async def one():
        s = await aclient.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                  stream=True)
        chunks = [c async for c in s]
        return {c.id for c in chunks}, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    results = await asyncio.gather(*[one() for _ in range(8)])
    assert all(len(ids) == 1 for ids, _ in results)
    assert sorted(t for _, t in results) == sorted(f"s{i}-x" for i in range(8))


def test_error_event_mid_stream_raises_in_the_sdk(client, upstream):
    upstream.enqueue(sse_reply(fixture("anthropic-error-mid-stream.sse")))
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    got = []
    with pytest.raises(openai.APIError, match="Overloaded"):
        for c in stream:
            got.append(c)
    assert got and got[0].choices[0].delta.role == "assistant"


def test_dropped_upstream_connection_raises_in_the_sdk(client, upstream):
    body = anthropic_text_stream(["one ", "two ", "three"])
    upstream.enqueue(sse_reply(body, drop_after=len(body) // 2))
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.APIError, match="upstream"):
        for _ in stream:
            pass


def test_max_tokens_inside_a_tool_call_gives_length(client, upstream):
    upstream.enqueue(sse_reply(fixture("anthropic-max-tokens-mid-tool-use.sse")))
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                 stream=True, tools=[WEATHER_TOOL]))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


@pytest.mark.parametrize("status,headers,exc,out_status", [
    (429, {"retry-after": "7"}, openai.RateLimitError, 429),
    (529, {}, openai.InternalServerError, 503),
    (500, {}, openai.InternalServerError, 502),
    (400, {}, openai.BadRequestError, 400),
    (401, {}, openai.AuthenticationError, 401),
])
def test_upstream_http_errors(client, upstream, status, headers, exc, out_status):
    upstream.enqueue(error_reply(status, headers=headers, message="upstream says no"))
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == out_status
    body = info.value.body
    assert set(body) >= {"message", "type", "param", "code"}
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"
    if status == 400:
        assert "upstream says no" in body["message"]
    if status == 401:
        assert "sk-ant-upstream-secret" not in body["message"] and "API key" in body["message"]


@pytest.mark.parametrize("payload,param", [
    ({"model": MODEL}, "messages"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "audio": {"voice": "alloy", "format": "mp3"},
      "modalities": ["text", "audio"]}, "audio"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e30}, "max_tokens"),
    ({"model": MODEL, "tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "15C"},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "15C again"}]}, "messages"),
])
def test_bad_input_is_a_400_naming_the_field_before_any_upstream_call(client, upstream, payload, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", body=payload, cast_to=object)
    assert info.value.body["param"].startswith(param)
    assert upstream.requests == []


def test_invalid_json_and_unknown_model(gateway, upstream):
    import urllib.error
    import urllib.request
    req = urllib.request.Request(gateway.url + "/v1/chat/completions", data=b"{not json", method="POST",
                                 headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req)
    assert info.value.code == 400 and "not valid JSON" in json.load(info.value)["error"]["message"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="llama-3", messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["code"] == "model_not_found" and "claude*" in nf.value.body["message"]
    assert upstream.requests == []
    # and the server keeps serving
    upstream.enqueue(json_reply(anthropic_message("still here")))
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}]) \
        .choices[0].message.content == "still here"


def test_models_and_health(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    ids = [m.id for m in client.models.list()]
    assert "claude*" in ids and "gpt*" in ids


def test_json_schema_response_format_returns_clean_json(client, upstream):
    upstream.enqueue(json_reply(anthropic_message([
        {"type": "tool_use", "id": "toolu_j", "name": "json_response", "input": {"name": "Ada", "age": 36}}],
        stop_reason="tool_use")))
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "who?"}],
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "person", "schema": schema}})
    assert json.loads(r.choices[0].message.content) == {"name": "Ada", "age": 36}
    assert r.choices[0].finish_reason == "stop" and not r.choices[0].message.tool_calls
    sent = upstream.last.json
    assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert sent["tools"][0]["input_schema"] == schema


def test_legacy_functions_stream_and_not(gateway_each, upstream):
    """Legacy functions / function_call: the model sees the functions as tools, and the call comes
    back as message.function_call (delta.function_call in a stream), finish_reason function_call."""
    client = client_for(gateway_each)
    fn = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    upstream.enqueue(json_reply(anthropic_message([{"type": "tool_use", "id": "toolu_01L", "name": "get_weather",
                                                    "input": {"city": "Paris"}}], stop_reason="tool_use")))
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Paris?"}],
                                       functions=[fn], function_call="auto")
    assert r.choices[0].finish_reason == "function_call"
    assert r.choices[0].message.function_call.name == "get_weather"
    assert json.loads(r.choices[0].message.function_call.arguments) == {"city": "Paris"}
    assert not r.choices[0].message.tool_calls
    sent = upstream.last.json
    assert [t["name"] for t in sent["tools"]] == ["get_weather"]
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}

    upstream.enqueue(sse_reply(anthropic_tool_stream([("toolu_01M", "get_weather", ['{"city": ', '"Rome"}'])])))
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Rome?"}],
                                                 functions=[fn], stream=True))
    calls = [c.choices[0].delta.function_call for c in chunks if c.choices and c.choices[0].delta.function_call]
    assert calls[0].name == "get_weather"
    assert json.loads("".join(c.arguments or "" for c in calls)) == {"city": "Rome"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["function_call"]


def test_fields_not_sent_are_named_in_a_header(gateway_each, upstream):
    client = client_for(gateway_each)
    upstream.enqueue(json_reply(json.loads(fixture("anthropic-message-text.json"))))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], logit_bias={"1234": -100}, seed=7)
    assert raw.headers["x-gateway-dropped"] == "logit_bias, seed"
    assert raw.parse().choices[0].message.content
    assert "logit_bias" not in upstream.last.json and "seed" not in upstream.last.json
