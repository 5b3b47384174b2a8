"""The OpenAI Responses API through the gateway: the official openai SDK against `engine serve`
and a fake Anthropic upstream on loopback.

Each test asserts on what the SDK returns and on what the upstream received. Every streamed event
the gateway sends is also checked against schemas/openai/responses.event.json where a test reads
the raw stream."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import httpx2 as httpx
import openai
import pytest

from engine import schemas
from support.fake_upstream import (anthropic_message, anthropic_text_stream, anthropic_tool_stream, error_reply,
                                   fixture, fixture_json, json_reply, parse_sse, sse_reply)

MODEL = "claude-sonnet-4-5"
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": True}
SHELL_TOOL = {"type": "function", "name": "shell", "description": "Runs a command",
              "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}},
                                                              "workdir": {"type": "string"}},
                             "required": ["command"]}}
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}}
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
REDIS_URL = "redis://127.0.0.1:6379/0"


def client_for(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="client-key", max_retries=0, timeout=20)


@pytest.fixture
def client(gateway):
    return client_for(gateway)


@pytest.fixture
def upstream(fake_anthropic_session):
    return fake_anthropic_session


def raw_stream(gw, body: dict) -> list[dict]:
    """POSTs a streaming request without the SDK; returns the event payloads, each checked
    against the Responses event schema, with strictly increasing sequence numbers from 0."""
    with httpx.Client(timeout=20) as h:
        r = h.post(gw.url + "/v1/responses", json={**body, "stream": True})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        events = []
        for ev in parse_sse(r.content):
            data = json.loads(ev["data"])
            assert ev["event"] == data["type"]
            assert schemas.first_error("openai/responses.event", data) is None, \
                (data["type"], schemas.first_error("openai/responses.event", data))
            events.append(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def request_json(gw, method: str, path: str, body=None):
    req = urllib.request.Request(gw.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


# ---------------------------------------------------------------- text

def test_create_non_stream(client, upstream):
    upstream.enqueue(json_reply(fixture_json("anthropic-message-text.json")))
    r = client.responses.create(model=MODEL, input="Hello", instructions="Be brief.", temperature=1.6,
                                max_output_tokens=300, metadata={"k": "v"}, user="u-1")
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.output_text
    assert [i.type for i in r.output] == ["message"] and r.output[0].id.startswith("msg_")
    assert r.instructions == "Be brief." and r.metadata == {"k": "v"} and r.store is True
    usage = fixture_json("anthropic-message-text.json")["usage"]
    assert r.usage.input_tokens == usage["input_tokens"] + usage["cache_read_input_tokens"] + \
        usage["cache_creation_input_tokens"]
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    sent = upstream.last
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == "sk-ant-upstream-secret"
    assert sent.json["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert sent.json["max_tokens"] == 300 and sent.json["temperature"] == 1
    assert sent.json["metadata"] == {"user_id": "u-1"}
    assert schemas.first_error("anthropic/messages.request", sent.json) is None
    assert schemas.first_error("openai/responses.response", r.model_dump(exclude_none=False)) is None


def test_stream_accumulated_by_the_sdk(client, upstream):
    upstream.enqueue(sse_reply(anthropic_text_stream(["Hel", "lo", " there"], usage={
        "input_tokens": 12, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 7}),
        chunk_size=37))
    with client.responses.stream(model=MODEL, input=[{"role": "user", "content": "Hi"}]) as stream:
        events = [e for e in stream]
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and final.output_text == text and final.status == "completed"
    assert final.usage.input_tokens == 117 and final.usage.input_tokens_details.cached_tokens == 100
    assert final.usage.output_tokens == 7 and final.usage.total_tokens == 124
    assert upstream.last.json["stream"] is True


def test_raw_stream_event_grammar(gateway, upstream):
    upstream.enqueue(sse_reply(fixture("anthropic-text.sse"), chunk_size=11))
    events = raw_stream(gateway, {"model": MODEL, "input": "Hi"})
    types = [e["type"] for e in events]
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"] + ["response.output_text.delta"] * types.count(
        "response.output_text.delta") + ["response.output_text.done", "response.content_part.done",
                                         "response.output_item.done", "response.completed"]
    assert len({e["response"]["id"] for e in events if "response" in e}) == 1


# ---------------------------------------------------------------- tools

def test_function_call_round_trip_by_call_id(client, upstream):
    upstream.enqueue(json_reply(anthropic_message([
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}],
        stop_reason="tool_use")))
    r1 = client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER_TOOL], store=False)
    assert [i.type for i in r1.output] == ["message", "function_call"]
    call = r1.output[1]
    assert call.call_id == "toolu_01A" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert upstream.last.json["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                                            "input_schema": WEATHER_TOOL["parameters"]}]
    upstream.enqueue(json_reply(anthropic_message("It is 15C in Paris.")))
    history = [{"role": "user", "content": "Weather in Paris?"}] + [i.model_dump(exclude_none=True) for i in r1.output]
    r2 = client.responses.create(model=MODEL, tools=[WEATHER_TOOL], store=False, input=history + [
        {"type": "function_call_output", "call_id": call.call_id, "output": "15C"}])
    assert r2.output_text == "It is 15C in Paris."
    sent = upstream.last.json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == [{"type": "text", "text": "Checking."},
                                  {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
                                   "input": {"city": "Paris"}}]
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "15C"}]


def test_function_call_round_trip_by_previous_response_id(client, upstream):
    upstream.enqueue(sse_reply(anthropic_tool_stream([("toolu_01B", "get_weather", ['{"city":', ' "Oslo"}'])])))
    with client.responses.stream(model=MODEL, input="Weather in Oslo?", instructions="Be terse.",
                                 tools=[WEATHER_TOOL]) as stream:
        r1 = stream.get_final_response()
    assert [i.type for i in r1.output] == ["function_call"]
    upstream.enqueue(json_reply(anthropic_message("-3C in Oslo.")))
    r2 = client.responses.create(model=MODEL, previous_response_id=r1.id, tools=[WEATHER_TOOL],
                                 input=[{"type": "function_call_output", "call_id": "toolu_01B", "output": "-3C"}])
    assert r2.output_text == "-3C in Oslo." and r2.previous_response_id == r1.id
    sent = upstream.last.json
    assert sent["system"] == [{"type": "text", "text": "Be terse."}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01B", "name": "get_weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01B", "content": "-3C"}]}]
    # a third turn chains on the second: the whole conversation again
    upstream.enqueue(json_reply(anthropic_message("You are welcome.")))
    client.responses.create(model=MODEL, previous_response_id=r2.id, input="Thanks!", instructions="New rules.")
    sent = upstream.last.json
    assert sent["system"] == [{"type": "text", "text": "New rules."}]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert sent["messages"][-1]["content"] == [{"type": "text", "text": "Thanks!"}]
    assert "tools" in sent  # carried over: the history holds tool_use blocks


def test_two_parallel_function_calls_in_one_streamed_answer(gateway, client, upstream):
    upstream.enqueue(sse_reply(anthropic_tool_stream(
        [("toolu_01", "get_weather", ['{"ci', 'ty": "Paris"}']),
         ("toolu_02", "get_weather", ['', '{"city": "Rome"}'])], text="Checking both."), chunk_size=50))
    with client.responses.stream(model=MODEL, input="Paris and Rome?", tools=[WEATHER_TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    added = [(e.output_index, e.item.type) for e in events if e.type == "response.output_item.added"]
    assert added == [(0, "message"), (1, "function_call"), (2, "function_call")]
    assert final.output_text == "Checking both."
    calls = [(i.call_id, json.loads(i.arguments)) for i in final.output if i.type == "function_call"]
    assert calls == [("toolu_01", {"city": "Paris"}), ("toolu_02", {"city": "Rome"})]
    assert len({i.id for i in final.output}) == 3
    deltas = {e.output_index for e in events if e.type == "response.function_call_arguments.delta"}
    assert deltas == {1, 2}


def test_tool_only_turn_has_no_empty_message_item(gateway, upstream):
    upstream.enqueue(sse_reply(anthropic_tool_stream([("toolu_1", "get_weather", {"city": "Rome"})], text="")))
    events = raw_stream(gateway, {"model": MODEL, "input": "Rome?", "tools": [WEATHER_TOOL]})
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["function_call"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0]


def test_thinking_with_tools_replayed_by_encrypted_content_with_store_false(client, upstream):
    upstream.enqueue(sse_reply(anthropic_tool_stream(
        [("toolu_think", "get_weather", ['{"city": ', '"Oslo"}'])],
        thinking="The user wants Oslo weather.", signature=SIGNATURE), chunk_size=64))
    kw = dict(model=MODEL, tools=[WEATHER_TOOL], reasoning={"effort": "low", "summary": "auto"},
              include=["reasoning.encrypted_content"], store=False, max_output_tokens=4000)
    with client.responses.stream(input="Weather in Oslo?", **kw) as stream:
        events = list(stream)
        r1 = stream.get_final_response()
    first = upstream.last.json
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert first["max_tokens"] == 4000 and "temperature" not in first
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == "The user wants Oslo weather."
    reasoning, call = r1.output
    assert reasoning.type == "reasoning" and reasoning.encrypted_content == SIGNATURE
    assert reasoning.summary[0].text == "The user wants Oslo weather."
    # nothing was stored
    assert request_json_status(client, r1.id) == 404
    upstream.enqueue(sse_reply(anthropic_text_stream(["Cold: ", "-3C."])))
    history = [{"role": "user", "content": "Weather in Oslo?"}] + [i.model_dump(exclude_none=True) for i in r1.output]
    with client.responses.stream(input=history + [{"type": "function_call_output", "call_id": call.call_id,
                                                   "output": "-3C"}], **kw) as stream:
        r2 = stream.get_final_response()
    assert r2.output_text == "Cold: -3C."
    sent = upstream.last.json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assistant = sent["messages"][1]
    assert assistant["content"][0] == {"type": "thinking", "thinking": "The user wants Oslo weather.",
                                       "signature": SIGNATURE}
    assert assistant["content"][1]["type"] == "tool_use"


def test_reasoning_without_include_hides_the_signature_but_the_store_keeps_it(client, upstream):
    upstream.enqueue(json_reply(anthropic_message([
        {"type": "thinking", "thinking": "Let me look.", "signature": SIGNATURE},
        {"type": "tool_use", "id": "toolu_h", "name": "get_weather", "input": {"city": "Rome"}}],
        stop_reason="tool_use")))
    r1 = client.responses.create(model=MODEL, input="Rome?", tools=[WEATHER_TOOL], reasoning={"effort": "low"})
    assert r1.output[0].type == "reasoning" and r1.output[0].encrypted_content is None
    upstream.enqueue(json_reply(anthropic_message("Warm.")))
    client.responses.create(model=MODEL, previous_response_id=r1.id, tools=[WEATHER_TOOL], reasoning={"effort": "low"},
                            input=[{"type": "function_call_output", "call_id": "toolu_h", "output": "25C"}])
    sent = upstream.last.json
    assert sent["thinking"]["type"] == "enabled"
    assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": "Let me look.", "signature": SIGNATURE}


def test_unsigned_tool_turn_turns_thinking_off(client, upstream):
    upstream.enqueue(json_reply(anthropic_message("ok")))
    client.responses.create(model=MODEL, tools=[WEATHER_TOOL], reasoning={"effort": "high"}, input=[
        {"role": "user", "content": "Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "toolu_x", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
        {"type": "function_call_output", "call_id": "toolu_x", "output": "25C"}])
    sent = upstream.last.json
    assert "thinking" not in sent and sent["max_tokens"] == 4096


def test_custom_tool_round_trip(gateway_each, upstream):
    gateway, client = gateway_each, client_for(gateway_each)
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch"
    upstream.enqueue(sse_reply(anthropic_tool_stream([("toolu_p", "apply_patch", ['{"input": ', json.dumps(patch), '}'])])))
    events = raw_stream(gateway, {"model": MODEL, "input": "Add a.txt", "tools": [APPLY_PATCH, WEATHER_TOOL]})
    tool = upstream.last.json["tools"][0]
    assert tool["name"] == "apply_patch" and tool["input_schema"]["required"] == ["input"]
    assert "start: begin_patch hunk+ end_patch" in tool["description"]
    final = events[-1]["response"]
    assert final["output"] == [{"id": final["output"][0]["id"], "type": "custom_tool_call", "status": "completed",
                                "call_id": "toolu_p", "name": "apply_patch", "input": patch}]
    assert [e["input"] for e in events if e["type"] == "response.custom_tool_call_input.done"] == [patch]
    upstream.enqueue(json_reply(anthropic_message("Done.")))
    r2 = client.responses.create(model=MODEL, previous_response_id=final["id"], tools=[APPLY_PATCH], input=[
        {"type": "custom_tool_call_output", "call_id": "toolu_p", "output": "Success."}])
    assert r2.output_text == "Done."
    sent = upstream.last.json["messages"]
    assert sent[1]["content"] == [{"type": "tool_use", "id": "toolu_p", "name": "apply_patch", "input": {"input": patch}}]
    result = {"type": "tool_result", "tool_use_id": "toolu_p", "content": "Success."}
    if gateway.env_overrides.get("TOKLIGENCE_MAPPING_VERSIONS") is None:  # the newest: prompt_cache auto
        result["cache_control"] = {"type": "ephemeral"}  # the gateway's breakpoint on the last block
    assert sent[2]["content"] == [result]


def test_shell_command_string_normalised_to_argv(gateway_each, upstream):
    client = client_for(gateway_each)
    upstream.enqueue(sse_reply(anthropic_tool_stream([("toolu_s", "shell", ['{"command": "ls -la", ', '"workdir": "/tmp"}'])])))
    with client.responses.stream(model=MODEL, input="list files", tools=[SHELL_TOOL]) as stream:
        final = stream.get_final_response()
    assert json.loads(final.output[0].arguments) == {"command": ["bash", "-lc", "ls -la"], "workdir": "/tmp"}


def test_hosted_tools_mapped_or_named_in_the_dropped_header(gateway_each, upstream):
    client = client_for(gateway_each)
    upstream.enqueue(json_reply(anthropic_message("ok")))
    raw = client.responses.with_raw_response.create(model=MODEL, input="hi", tools=[
        WEATHER_TOOL, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "code_interpreter", "container": {"type": "auto"}}, {"type": "local_shell"},
        {"type": "namespace", "name": "ns", "description": "d", "tools": [dict(WEATHER_TOOL, name="inner")]}])
    assert raw.parse().status == "completed"
    tools = upstream.last.json["tools"]
    assert [t["name"] for t in tools] == ["get_weather", "web_search", "local_shell", "ns__inner"]
    assert tools[1]["type"] == "web_search_20250305"
    # what the model never saw is named for the user
    assert raw.headers["x-gateway-dropped"] == "file_search, code_interpreter"


def test_codex_request_translates_to_a_valid_anthropic_request(gateway_each, upstream, fixtures_dir):
    gateway = gateway_each
    body = json.loads((fixtures_dir / "clients" / "codex-0.169-responses-req2.json").read_text())["body"]
    body["model"] = MODEL
    upstream.enqueue(sse_reply(anthropic_text_stream(["hi-stub-responses"])))
    events = raw_stream(gateway, body)
    assert events[-1]["type"] == "response.completed"
    sent = upstream.last.json
    assert schemas.first_error("anthropic/messages.request", sent) is None
    assert len(sent["system"]) == 3  # the developer items
    # functions as they are, the namespace's functions as NAMESPACE__NAME, web_search as Anthropic's
    expected = []
    for t in body["tools"]:
        if t["type"] == "function":
            expected.append(t["name"])
        elif t["type"] == "namespace":
            expected += [f"{t['name']}__{f['name']}" for f in t["tools"]]
        elif t["type"] == "web_search":
            expected.append("web_search")
    assert [t["name"] for t in sent["tools"]] == expected and "multi_agent_v1__spawn_agent" in expected
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][0]["id"] == "call_c8519b7586e34a089ff979af"


def test_structured_output_parsed_by_the_sdk(client, upstream):
    import pydantic

    class Person(pydantic.BaseModel):
        name: str
        age: int

    upstream.enqueue(json_reply(anthropic_message([
        {"type": "tool_use", "id": "toolu_j", "name": "json_response", "input": {"name": "Ada", "age": 36}}],
        stop_reason="tool_use")))
    r = client.responses.parse(model=MODEL, input="Who wrote the first program?", text_format=Person)
    assert r.output_parsed == Person(name="Ada", age=36) and r.status == "completed"
    sent = upstream.last.json
    assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert sent["tools"][0]["input_schema"]["properties"]["age"] == {"title": "Age", "type": "integer"}
    # streamed, the json_response input arrives as output_text deltas
    upstream.enqueue(sse_reply(anthropic_tool_stream([("toolu_j2", "json_response", ['{"name": "Gr', 'ace", "age": 85}'])])))
    with client.responses.stream(model=MODEL, input="And the first compiler?", text_format=Person) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == Person(name="Grace", age=85)
    assert [i.type for i in final.output] == ["message"]


# ---------------------------------------------------------------- stops and failures

def test_max_tokens_gives_incomplete(client, upstream):
    upstream.enqueue(sse_reply(fixture("anthropic-max-tokens-mid-tool-use.sse")))
    with client.responses.stream(model=MODEL, input="x", tools=[WEATHER_TOOL]) as stream:
        events = list(stream)
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete" and last.response.incomplete_details.reason == "max_output_tokens"
    upstream.enqueue(json_reply(anthropic_message("cut", stop_reason="max_tokens")))
    r = client.responses.create(model=MODEL, input="x")
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"


def test_upstream_error_event_gives_error_and_failed(gateway, client, upstream):
    upstream.enqueue(sse_reply(fixture("anthropic-error-mid-stream.sse")))
    with client.responses.stream(model=MODEL, input="x") as stream:
        events = list(stream)
    types = [e.type for e in events]
    assert types[-2:] == ["error", "response.failed"]
    assert events[-2].message == "Overloaded"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.message == "Overloaded" and failed.error.code == "server_error"
    with pytest.raises(RuntimeError):
        stream.get_final_response()


def test_dropped_upstream_connection_gives_failed(gateway, upstream):
    body = anthropic_text_stream(["one ", "two ", "three"])
    upstream.enqueue(sse_reply(body, drop_after=len(body) // 2))
    events = raw_stream(gateway, {"model": MODEL, "input": "x"})
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert "upstream" in events[-1]["response"]["error"]["message"]


@pytest.mark.parametrize("status,exc,out_status", [
    (429, openai.RateLimitError, 429), (529, openai.InternalServerError, 503), (400, openai.BadRequestError, 400)])
def test_upstream_http_errors(client, upstream, status, exc, out_status):
    upstream.enqueue(error_reply(status, message="upstream says no"))
    with pytest.raises(exc) as info:
        client.responses.create(model=MODEL, input="x", stream=True)
    assert info.value.status_code == out_status
    assert set(info.value.body) >= {"message", "type", "param", "code"}


@pytest.mark.parametrize("payload,param", [
    ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": MODEL, "input": "x", "background": True}, "background"),
    ({"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, "input"),
    ({"model": MODEL, "input": "x", "tools": [WEATHER_TOOL], "tool_choice": "required",
      "reasoning": {"effort": "low"}}, "tool_choice"),
])
def test_bad_requests_are_400_naming_the_field(client, upstream, payload, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/responses", body=payload, cast_to=object)
    assert info.value.body["param"].startswith(param)
    assert upstream.requests == []


# ---------------------------------------------------------------- state

def request_json_status(client, rid) -> int:
    try:
        client.responses.retrieve(rid)
        return 200
    except openai.NotFoundError:
        return 404


def test_unknown_previous_response_id_is_404(client, upstream):
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODEL, input="x", previous_response_id="resp_nope")
    assert info.value.body["code"] == "previous_response_not_found"
    assert info.value.body["param"] == "previous_response_id"
    assert upstream.requests == []


def test_get_and_delete(client, upstream):
    upstream.enqueue(json_reply(anthropic_message("stored answer")))
    r = client.responses.create(model=MODEL, input="x")
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == "stored answer" and got.status == "completed"
    client.responses.delete(r.id)
    assert request_json_status(client, r.id) == 404
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="y", previous_response_id=r.id)


def test_streamed_response_is_stored_before_its_final_event(client, upstream):
    upstream.enqueue(sse_reply(anthropic_text_stream(["a", "b"])))
    with client.responses.stream(model=MODEL, input="x") as stream:
        for event in stream:
            if event.type == "response.completed":
                # still inside the stream: the record must already be there
                assert client.responses.retrieve(event.response.id).output_text == "ab"


def test_submit_tool_outputs_continues_the_response(gateway, client, upstream):
    upstream.enqueue(json_reply(anthropic_message([
        {"type": "tool_use", "id": "toolu_s1", "name": "get_weather", "input": {"city": "Lima"}}], stop_reason="tool_use")))
    r1 = client.responses.create(model=MODEL, input="Lima?", tools=[WEATHER_TOOL], instructions="Short.")
    upstream.enqueue(json_reply(anthropic_message("20C in Lima.")))
    status, r2 = request_json(gateway, "POST", f"/v1/responses/{r1.id}/submit_tool_outputs",
                              {"tool_outputs": [{"tool_call_id": "toolu_s1", "output": "20C"}]})
    assert status == 200 and r2["status"] == "completed" and r2["previous_response_id"] == r1.id
    assert r2["output"][0]["content"][0]["text"] == "20C in Lima."
    sent = upstream.last.json
    assert sent["system"] == [{"type": "text", "text": "Short."}] and sent["tools"][0]["name"] == "get_weather"
    assert sent["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_s1", "content": "20C"}]
    # streamed continuation, chained on the continued response
    upstream.enqueue(json_reply(anthropic_message([
        {"type": "tool_use", "id": "toolu_s2", "name": "get_weather", "input": {"city": "Quito"}}], stop_reason="tool_use")))
    r3 = client.responses.create(model=MODEL, previous_response_id=r2["id"], input="And Quito?", tools=[WEATHER_TOOL])
    upstream.enqueue(sse_reply(anthropic_text_stream(["15C ", "in Quito."])))
    with httpx.Client(timeout=20) as h:
        r = h.post(f"{gateway.url}/v1/responses/{r3.id}/submit_tool_outputs",
                   json={"stream": True, "tool_outputs": [{"tool_call_id": "toolu_s2", "output": "15C"}]})
    events = [json.loads(e["data"]) for e in parse_sse(r.content)]
    assert events[-1]["type"] == "response.completed"
    assert len(upstream.last.json["messages"]) == 7
    # an unknown call id is refused
    status, err = request_json(gateway, "POST", f"/v1/responses/{r3.id}/submit_tool_outputs",
                               {"tool_outputs": [{"tool_call_id": "toolu_zz", "output": "?"}]})
    assert status == 400 and err["error"]["param"] == "tool_outputs"
    status, err = request_json(gateway, "POST", "/v1/responses/resp_nope/submit_tool_outputs",
                               {"tool_outputs": [{"tool_call_id": "x", "output": "?"}]})
    assert status == 404


@pytest.mark.parametrize("backend", ["sqlite", REDIS_URL])
def test_previous_response_id_across_a_gateway_restart(make_gateway, fake_anthropic, backend):
    gw = make_gateway({"TOKLIGENCE_SESSION_STORE": backend})
    client = client_for(gw)
    fake_anthropic.enqueue(sse_reply(anthropic_tool_stream([("toolu_r", "get_weather", {"city": "Bern"})],
                                                           thinking="Bern weather.", signature=SIGNATURE)))
    with client.responses.stream(model=MODEL, input="Bern?", tools=[WEATHER_TOOL], instructions="Terse.",
                                 reasoning={"effort": "low"}) as stream:
        r1 = stream.get_final_response()
    gw.restart()
    fake_anthropic.enqueue(json_reply(anthropic_message("8C in Bern.")))
    r2 = client.responses.create(model=MODEL, previous_response_id=r1.id, tools=[WEATHER_TOOL],
                                 reasoning={"effort": "low"},
                                 input=[{"type": "function_call_output", "call_id": "toolu_r", "output": "8C"}])
    assert r2.output_text == "8C in Bern."
    sent = fake_anthropic.last.json
    assert sent["system"] == [{"type": "text", "text": "Terse."}]
    assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": "Bern weather.", "signature": SIGNATURE}
    assert sent["thinking"]["type"] == "enabled"
    assert client.responses.retrieve(r1.id).id == r1.id
    for rid in (r1.id, r2.id):  # leave nothing behind in the shared Redis
        client.responses.delete(rid)


@pytest.mark.parametrize("backend", ["sqlite", REDIS_URL])
def test_stored_responses_expire_after_the_ttl(make_gateway, fake_anthropic, backend):
    gw = make_gateway({"TOKLIGENCE_SESSION_STORE": backend, "TOKLIGENCE_RESPONSE_TTL_SECONDS": "1"})
    client = client_for(gw)
    fake_anthropic.enqueue(json_reply(anthropic_message("short-lived")))
    r = client.responses.create(model=MODEL, input="x")
    assert client.responses.retrieve(r.id).id == r.id
    time.sleep(2.2)
    assert request_json_status(client, r.id) == 404
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="y", previous_response_id=r.id)


# ---------------------------------------------------------------- transport

def test_keepalive_comments_while_the_upstream_is_silent(make_gateway, fake_anthropic):
    gw = make_gateway({"TOKLIGENCE_KEEPALIVE_SECONDS": "0.2"})
    body = anthropic_text_stream(["slow ", "answer"])
    fake_anthropic.enqueue(sse_reply(body, chunk_size="event", delay=0.25))
    with httpx.Client(timeout=20) as h:
        r = h.post(gw.url + "/v1/responses", json={"model": MODEL, "input": "x", "stream": True})
    assert b": keep-alive" in r.content
    events = [json.loads(e["data"]) for e in parse_sse(r.content) if e["data"]]
    assert events[-1]["type"] == "response.completed"


def test_gpt_models_pass_through_to_openai(gateway, fake_openai_session):
    client = client_for(gateway)
    r = client.responses.create(model="gpt-4o", input="hi")
    assert r.output_text
    sent = fake_openai_session.last
    assert sent.path == "/v1/responses" and sent.json == {"model": "gpt-4o", "input": "hi"}
    assert sent.headers["authorization"] == "Bearer sk-openai-upstream-secret"
