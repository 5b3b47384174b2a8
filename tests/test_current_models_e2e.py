"""The openai SDK (chat and Responses) through the gateway's newest specs against a fake Anthropic
upstream that refuses what the real API refuses per model generation: adaptive thinking,
parameters the model refuses dropped and named in x-gateway-dropped, native structured output
(streamed and not), the thinking round trip with tools, reasoning_tokens, prompt caching."""
from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from support.fake_upstream import (anthropic_message, anthropic_stream_events, anthropic_text_stream,
                                   anthropic_tool_stream, sse_events, sse_reply, json_reply)

OPUS, SONNET = "claude-opus-4-7", "claude-sonnet-4-5"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
ANSWER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "celsius": {"type": "integer"}},
                 "required": ["city", "celsius"], "additionalProperties": False}


class Answer(BaseModel):
    city: str
    celsius: int


@pytest.fixture
def client(gateway_latest):
    return openai.OpenAI(base_url=gateway_latest.url + "/v1", api_key="k", max_retries=0, timeout=20)


@pytest.fixture
def upstream(fake_anthropic_session):
    return fake_anthropic_session


def sent(upstream) -> list[dict]:
    reqs = upstream.requests_to("/v1/messages")
    assert not [r.refused for r in reqs if r.refused], [r.refused for r in reqs]
    return [r.json for r in reqs]


@pytest.mark.parametrize("model", [OPUS, SONNET])
def test_chat_reasoning_and_sampling_per_generation(client, upstream, model):
    upstream.enqueue(json_reply(anthropic_message(
        [{"type": "thinking", "thinking": "", "signature": "EqSig=="}, {"type": "text", "text": "Hi."}],
        model=model, usage={"output_tokens": 40, "output_tokens_details": {"thinking_tokens": 25}})))
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], reasoning_effort="high",
        temperature=0.3, top_p=0.9)
    r = raw.parse()
    assert r.choices[0].message.content == "Hi."
    assert r.usage.completion_tokens_details.reasoning_tokens == 25
    body = sent(upstream)[0]
    assert "temperature" not in body
    if model == OPUS:
        assert body["thinking"] == {"type": "adaptive"} and body["output_config"] == {"effort": "high"}
        assert "top_p" not in body
        assert raw.headers["x-gateway-dropped"] == "temperature, top_p"
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384} and body["top_p"] == 0.95
        assert raw.headers["x-gateway-dropped"] == "temperature"


def test_chat_nothing_dropped_means_no_header(client, upstream):
    raw = client.chat.completions.with_raw_response.create(model=SONNET, temperature=0.5,
                                                           messages=[{"role": "user", "content": "Hi"}])
    assert "x-gateway-dropped" not in raw.headers
    assert sent(upstream)[0]["temperature"] == 0.5


def test_chat_prefill_dropped_on_opus_47_stream(client, upstream):
    upstream.enqueue(sse_reply(anthropic_text_stream(["[1, 2]"], model=OPUS)))
    raw = client.chat.completions.with_raw_response.create(
        model=OPUS, stream=True, messages=[{"role": "user", "content": "A list"}, {"role": "assistant", "content": "["}])
    assert raw.headers["x-gateway-dropped"] == "prefill"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "[1, 2]"
    assert [m["role"] for m in sent(upstream)[0]["messages"]] == ["user"]


@pytest.mark.parametrize("model", [OPUS, SONNET])
def test_chat_structured_output_streamed_beside_tools_and_thinking(client, upstream, model):
    answer = '{"city": "Paris", "celsius": 15}'
    upstream.enqueue(sse_reply(sse_events(anthropic_stream_events(
        [{"type": "thinking", "thinking": "", "signature": "EqSig=="},
         {"type": "text", "text": [answer[:10], answer[10:]]}], model=model,
        final_usage={"output_tokens": 30, "output_tokens_details": {"thinking_tokens": 12}}))))
    stream = client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True}, reasoning_effort="low",
        tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Paris as JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "strict": True,
                                                                "schema": ANSWER_SCHEMA}})
    chunks = list(stream)
    assert Answer.model_validate_json("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 12
    body = sent(upstream)[0]
    assert body["output_config"]["format"] == {"type": "json_schema", "schema": ANSWER_SCHEMA}
    assert [t["name"] for t in body["tools"]] == ["get_weather"] and body["tools"][0]["strict"] is True
    assert body.get("tool_choice", {"type": "auto"}) == {"type": "auto"}  # nothing forced


@pytest.mark.parametrize("model", [OPUS, SONNET])
def test_chat_parse_with_pydantic(client, upstream, model):
    upstream.enqueue(json_reply(anthropic_message('{"city": "Oslo", "celsius": -3}', model=model)))
    parsed = client.chat.completions.parse(model=model, messages=[{"role": "user", "content": "Oslo?"}],
                                           response_format=Answer)
    assert parsed.choices[0].message.parsed == Answer(city="Oslo", celsius=-3)
    body = sent(upstream)[0]
    assert body["output_config"]["format"]["type"] == "json_schema" and "tools" not in body


@pytest.mark.parametrize("model", [OPUS, SONNET])
def test_chat_thinking_round_trip_with_tools(client, upstream, model):
    upstream.enqueue(sse_reply(anthropic_tool_stream([("toolu_rt_1", "get_weather", {"city": "Paris"})],
                                                     thinking="", signature="EqRoundTrip==", model=model)))
    upstream.enqueue(json_reply(anthropic_message("15C in Paris.", model=model)))
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    chunks = list(client.chat.completions.create(model=model, messages=messages, tools=[WEATHER],
                                                 reasoning_effort="medium", stream=True))
    signature = "".join(getattr(c.choices[0].delta, "reasoning_signature", None) or "" for c in chunks if c.choices)
    call = next(c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    messages += [{"role": "assistant", "content": None, "reasoning_content": "", "reasoning_signature": signature,
                  "tool_calls": [{"id": call.id, "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                 {"role": "tool", "tool_call_id": call.id, "content": "15C"}]
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER],
                                            reasoning_effort="medium")
    assert second.choices[0].message.content == "15C in Paris."
    first_body, second_body = sent(upstream)
    assert second_body["messages"][1]["content"][0] == {"type": "thinking", "thinking": "",
                                                        "signature": "EqRoundTrip=="}
    assert second_body["thinking"]["type"] == ("adaptive" if model == OPUS else "enabled")


def test_chat_forced_tool_with_reasoning_is_a_400_naming_tool_choice(client, upstream):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=OPUS, messages=[{"role": "user", "content": "Hi"}], tools=[WEATHER],
                                       tool_choice="required", reasoning_effort="low")
    assert e.value.body["param"] == "tool_choice"
    assert upstream.requests_to("/v1/messages") == []


@pytest.mark.parametrize("model", [OPUS, SONNET])
def test_responses_structured_output_streamed_with_reasoning(client, upstream, model):
    answer = '{"city": "Rome", "celsius": 21}'
    upstream.enqueue(sse_reply(sse_events(anthropic_stream_events(
        [{"type": "thinking", "thinking": "Short summary.", "signature": "EqResp=="},
         {"type": "text", "text": [answer[:7], answer[7:]]}], model=model,
        final_usage={"output_tokens": 50, "output_tokens_details": {"thinking_tokens": 20}}))))
    with client.responses.with_streaming_response.create(
            model=model, input="Rome?", stream=True, reasoning={"effort": "high", "summary": "auto"},
            include=["reasoning.encrypted_content"], temperature=0.2,
            text={"format": {"type": "json_schema", "name": "answer", "strict": True, "schema": ANSWER_SCHEMA}}) as raw:
        header = raw.headers.get("x-gateway-dropped")
        events = list(raw.parse())
    done = events[-1]
    assert done.type == "response.completed"
    assert json.loads(done.response.output_text) == {"city": "Rome", "celsius": 21}
    assert done.response.usage.output_tokens_details.reasoning_tokens == 20
    reasoning = [i for i in done.response.output if i.type == "reasoning"][0]
    assert reasoning.encrypted_content == "EqResp=="
    body = sent(upstream)[0]
    assert header == "temperature"
    assert body["output_config"]["format"] == {"type": "json_schema", "schema": ANSWER_SCHEMA}
    if model == OPUS:
        assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
        assert body["output_config"]["effort"] == "high"
    else:
        assert body["thinking"]["type"] == "enabled" and "effort" not in body["output_config"]


def test_responses_cache_usage_reported(client, upstream):
    upstream.enqueue(json_reply(anthropic_message("ok", model=SONNET, usage={
        "input_tokens": 10, "cache_read_input_tokens": 5000, "cache_creation_input_tokens": 300})))
    r = client.responses.create(model=SONNET, input="Hi", instructions="You are terse.")
    assert r.usage.input_tokens == 5310 and r.usage.input_tokens_details.cached_tokens == 5000
    body = sent(upstream)[0]
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_pinned_previous_version_is_still_served(make_gateway, fake_anthropic):
    """mapping_versions pins 2025-06-01: the mid-2025 translation (budget thinking, no breakpoints)."""
    gw = make_gateway({"TOKLIGENCE_MAPPING_VERSIONS": "chat-to-messages=2025-06-01"})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=20)
    c.chat.completions.create(model=SONNET, messages=[{"role": "system", "content": "S"},
                                                      {"role": "user", "content": "Hi"}], reasoning_effort="low")
    body = fake_anthropic.requests_to("/v1/messages")[0].json
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and body["max_tokens"] == 6144
    assert "cache_control" not in json.dumps(body)
