"""Structured output and stop reasons of chat-to-messages through the openai SDK against
`engine serve` and a fake Anthropic upstream, streamed and not.

The answer to a response_format request comes back as the forced json_response tool call; the
client must see it as `content`, never as a tool call. A stop reason the spec's table does not
know maps to `stop`, never to a null finish_reason."""
from __future__ import annotations

import json

import openai
import pytest

from support.fake_upstream import anthropic_message, anthropic_stream_events, json_reply, sse_events, sse_reply

MODEL = "claude-sonnet-4-5"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
FORMATS = {
    "json_schema": {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
    "json_object": {"type": "json_object"},
}
ANSWER = {"name": "Ada", "age": 36}


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=20)


@pytest.fixture
def upstream(fake_anthropic_session):
    return fake_anthropic_session


def _json_tool_stream(fragments):
    return sse_events(anthropic_stream_events(
        [{"type": "tool_use", "id": "toolu_j", "name": "json_response", "partial_json": fragments}],
        stop_reason="tool_use"))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_streamed_structured_output_is_content(client, upstream, fmt):
    upstream.enqueue(sse_reply(_json_tool_stream(['{"name": "A', 'da", "a', 'ge": 36}']), chunk_size=41))
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "who?"}], stream=True, response_format=FORMATS[fmt]))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not any(d.tool_calls for d in deltas), [d.tool_calls for d in deltas if d.tool_calls]
    assert json.loads("".join(d.content or "" for d in deltas)) == ANSWER
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert upstream.last.json["tool_choice"] == {"type": "tool", "name": "json_response"}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_streamed_structured_output_accumulated_by_the_sdk(client, upstream, fmt):
    upstream.enqueue(sse_reply(_json_tool_stream(['{"name": "Ada",', ' "age": 36}']), chunk_size=29))
    with client.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "who?"}],
                                        response_format=FORMATS[fmt]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    msg = final.choices[0].message
    assert json.loads(msg.content) == ANSWER and not msg.tool_calls
    assert final.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_non_stream_structured_output_is_content(client, upstream, fmt):
    upstream.enqueue(json_reply(anthropic_message([
        {"type": "tool_use", "id": "toolu_j", "name": "json_response", "input": ANSWER}], stop_reason="tool_use")))
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "who?"}],
                                       response_format=FORMATS[fmt])
    assert json.loads(r.choices[0].message.content) == ANSWER and not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "stop"


def test_unknown_stop_reason_non_stream_is_stop(client, upstream):
    upstream.enqueue(json_reply(anthropic_message("All done.", stop_reason="some_new_reason")))
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.content == "All done."
    assert r.choices[0].finish_reason == "stop"


def test_unknown_stop_reason_stream_is_one_stop(client, upstream):
    upstream.enqueue(sse_reply(sse_events(anthropic_stream_events(
        [{"type": "text", "text": ["All ", "done."]}], stop_reason="some_new_reason")), chunk_size=33))
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "All done."
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    # one finish chunk, on the message_delta: none with a null finish_reason before it
    assert finish == ["stop"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and not c.choices[0].delta.content
            and not c.choices[0].delta.role] == ["stop"]
