"""The wire schemas (schemas/) and their cached validators (engine/schemas.py).

- every schema file is a valid draft 2020-12 schema, ids match paths;
- every recorded fixture and every captured client request validates;
- bad requests and events give one precise first error (exact OpenAI-style `param` path);
- the cached validator class agrees with plain Draft202012Validator (its speed is measured by
  `engine bench --micro-only`, not here).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from engine import schemas
from engine.schemas import Issue, errors, first_error, schema, schema_ids, validator

FIXTURES = Path(__file__).parent / "fixtures"
CLIENTS = FIXTURES / "clients"

WIRE_SCHEMAS = [
    "anthropic/count_tokens.request",
    "anthropic/error",
    "anthropic/messages.request",
    "anthropic/messages.response",
    "anthropic/stream-event",
    "openai/chat.chunk",
    "openai/chat.request",
    "openai/chat.response",
    "openai/error",
    "openai/responses.event",
    "openai/responses.item",
    "openai/responses.request",
    "openai/responses.response",
]


def sse_payloads(path: Path) -> list[dict]:
    """The JSON `data:` payloads of an SSE file (events split on blank lines; `[DONE]` skipped)."""
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    payloads = []
    for block in text.split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if not data:
            continue
        body = "\n".join(data)
        if body.strip() == "[DONE]":
            continue
        payloads.append(json.loads(body))
    return payloads


def sse_schema(name: str) -> str:
    if name.startswith("anthropic-"):
        return "anthropic/stream-event"
    if name.startswith("openai-"):  # openai-chat-*.sse and Anthropic's OpenAI-compatible stream
        return "openai/chat.chunk"
    if name.startswith("responses-"):
        return "openai/responses.event"
    raise AssertionError(f"no schema for SSE fixture {name}")


JSON_FIXTURES = {
    "anthropic-message-parallel-tool-use.json": "anthropic/messages.response",
    "anthropic-message-text.json": "anthropic/messages.response",
    "anthropic-request-parallel-tool-results.json": "anthropic/messages.request",
    "anthropic-request-tools.json": "anthropic/messages.request",
    "anthropic-request-with-tool-result.json": "anthropic/messages.request",
    "openai-chat-completion.json": "openai/chat.response",
    "openai-error-insufficient-quota.json": "openai/error",
    "openai-error-unsupported-parameter.json": "openai/error",
    "responses-reasoning-function-call.json": "openai/responses.response",
}

CLIENT_SCHEMAS = {
    "/v1/chat/completions": "openai/chat.request",
    "/v1/responses": "openai/responses.request",
    "/v1/messages": "anthropic/messages.request",
}

SSE_FILES = sorted(p.name for p in FIXTURES.glob("*.sse"))
CLIENT_FILES = sorted(p.name for p in CLIENTS.glob("*.json"))


def client_body(name: str) -> dict:
    return json.loads((CLIENTS / name).read_text(encoding="utf-8"))["body"]


def client_schema(name: str) -> str:
    return CLIENT_SCHEMAS[json.loads((CLIENTS / name).read_text(encoding="utf-8"))["path"]]


# --- the schema files -----------------------------------------------------------------------


def test_schema_files_are_valid_2020_12_schemas():
    files = sorted(schemas.SCHEMA_DIR.rglob("*.json"))
    assert len(files) >= len(WIRE_SCHEMAS)
    for file in files:
        doc = json.loads(file.read_text(encoding="utf-8"))
        assert doc.get("$schema") == "https://json-schema.org/draft/2020-12/schema", file
        jsonschema.Draft202012Validator.check_schema(doc)


@pytest.mark.parametrize("schema_id", WIRE_SCHEMAS)
def test_wire_schema_id_is_its_path(schema_id):
    file = schemas.SCHEMA_DIR / f"{schema_id}.json"
    assert json.loads(file.read_text(encoding="utf-8"))["$id"] == schema_id
    assert schema(schema_id)["$id"] == schema_id


def test_schema_ids_lists_every_file():
    ids = schema_ids()
    assert ids == sorted(ids)
    assert set(WIRE_SCHEMAS) <= set(ids)
    assert len(ids) == len(list(schemas.SCHEMA_DIR.rglob("*.json")))


@pytest.mark.parametrize("schema_id", WIRE_SCHEMAS)
def test_validator_is_built_once_and_every_ref_resolves(schema_id):
    v = validator(schema_id)
    assert validator(schema_id) is v
    assert isinstance(v, jsonschema.protocols.Validator)
    # walking a minimal instance through the schema resolves the refs on the way; an unresolvable
    # $ref would raise here rather than report an error
    errors(schema_id, {})


def test_unknown_schema_id():
    with pytest.raises(KeyError, match="unknown schema id 'openai/nope'"):
        validator("openai/nope")


# --- recorded fixtures and client captures validate -----------------------------------------


def test_every_fixture_is_covered():
    assert SSE_FILES and CLIENT_FILES
    top_json = sorted(p.name for p in FIXTURES.glob("*.json"))
    assert top_json == sorted(JSON_FIXTURES)
    for name in SSE_FILES:
        sse_schema(name)


@pytest.mark.parametrize("name", SSE_FILES)
def test_sse_fixture_events_validate(name):
    schema_id = sse_schema(name)
    payloads = sse_payloads(FIXTURES / name)
    assert payloads
    for number, payload in enumerate(payloads):
        assert errors(schema_id, payload) == [], f"{name} event {number}: {payload}"


@pytest.mark.parametrize("name", sorted(JSON_FIXTURES))
def test_json_fixture_validates(name):
    body = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert errors(JSON_FIXTURES[name], body) == []


@pytest.mark.parametrize("name", CLIENT_FILES)
def test_client_request_validates(name):
    assert errors(client_schema(name), client_body(name)) == []


@pytest.mark.parametrize("name", [n for n in CLIENT_FILES if n.startswith("claude-code")])
def test_count_tokens_request_from_claude_code_body(name):
    body = client_body(name)
    request = {k: body[k] for k in ("model", "messages", "system", "tools", "thinking")}
    assert errors("anthropic/count_tokens.request", request) == []
    assert first_error("anthropic/count_tokens.request", {"model": "claude-sonnet-4-5"}) == Issue(
        "messages", "'messages' is a required property"
    )


def test_responses_items_validate_one_by_one():
    for name in CLIENT_FILES:
        if client_schema(name) == "openai/responses.request":
            for item in client_body(name)["input"]:
                assert errors("openai/responses.item", item) == []


# --- what must still be accepted ------------------------------------------------------------

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
ANTHROPIC = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}]}
RESPONSES = {"model": "gpt-5", "input": "Hi"}


def chat(**fields):
    return {**copy.deepcopy(CHAT), **fields}


def anthropic(**fields):
    return {**copy.deepcopy(ANTHROPIC), **fields}


def responses(**fields):
    return {**copy.deepcopy(RESPONSES), **fields}


TOOL_TURN = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_abc", "content": "15C"},
]

ACCEPTED = [
    ("openai/chat.request", chat(messages=TOOL_TURN, brand_new_field={"x": 1})),
    ("openai/chat.request", chat(messages=[
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "developer", "content": "d", "name": "ops"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?", "cache_control": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-abc"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "refusal", "refusal": "no"}]},
        {"role": "function", "name": "legacy", "content": None},
    ])),
    ("openai/chat.request", chat(
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": True}},
               {"type": "custom", "custom": {"name": "patch"}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False, temperature=2, top_p=0, n=1, stop="END", max_completion_tokens=5,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}},
        stream=True, stream_options={"include_usage": True}, reasoning_effort="minimal", seed=7,
        logprobs=True, top_logprobs=3, metadata={"k": "v"}, user="u", logit_bias={"50256": -100})),
    ("openai/chat.request", chat(tool_choice="required", stop=["a", "b"], temperature=None, max_tokens=None)),
    ("openai/chat.request", chat(tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}})),
    ("anthropic/messages.request", anthropic(
        system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}, "title": "t"},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "EqQB"},
                {"type": "redacted_thinking", "data": "EmwK"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                 "content": [{"type": "text", "text": "boom"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2"},
                {"type": "text", "text": "go on"}]},
            {"role": "assistant", "content": "prefill"},
        ],
        tools=[{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}},
               {"type": "custom", "name": "t2", "input_schema": {"type": "object"}, "strict": True},
               {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
               {"type": "bash_20250124", "name": "bash"}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 1024}, temperature=1, top_k=5,
        stop_sequences=["\n\nHuman:"], metadata={"user_id": "u"}, service_tier="auto",
        mcp_servers=[{"type": "url", "url": "https://mcp.example", "name": "x"}], future_field=1)),
    ("anthropic/messages.request", anthropic(thinking={"type": "adaptive"}, tool_choice={"type": "tool", "name": "x"})),
    ("openai/responses.request", responses(input=[
        {"role": "user", "content": "Hi"},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
            {"type": "input_file", "file_id": "file-1", "filename": "x.pdf"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "ok", "annotations": []}, {"type": "refusal", "refusal": "no"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "s"}], "encrypted_content": "gAAA"},
        {"type": "function_call", "call_id": "call_1", "name": "calc", "arguments": "{}", "id": "fc_1"},
        {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "19"}]},
        {"type": "item_reference", "id": "msg_0"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {}},
    ])),
    ("openai/responses.request", responses(
        instructions="be brief", store=False, stream=True, max_output_tokens=16, truncation="auto",
        tools=[{"type": "function", "name": "calc", "parameters": {"type": "object"}, "strict": True},
               {"type": "web_search_preview"}, {"type": "mcp", "server_label": "x", "server_url": "https://x"}],
        tool_choice={"type": "function", "name": "calc"}, reasoning={"effort": "xhigh", "summary": "auto"},
        text={"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True},
              "verbosity": "low"},
        include=["reasoning.encrypted_content"], previous_response_id="resp_1")),
    ("openai/responses.request", responses(tool_choice={"type": "allowed_tools", "mode": "auto", "tools": []})),
    ("openai/chat.chunk", {"error": {"message": "m", "type": "server_error", "param": None, "code": None}}),
    ("openai/responses.event", {"type": "error", "sequence_number": 3, "code": "server_error",
                                "message": "m", "param": None}),
    ("anthropic/stream-event", {"type": "content_block_start", "index": 2,
                                "content_block": {"type": "redacted_thinking", "data": "EmwK"}}),
    ("anthropic/stream-event", {"type": "content_block_start", "index": 3,
                                "content_block": {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}}),
    ("anthropic/stream-event", {"type": "content_block_delta", "index": 0,
                                "delta": {"type": "citations_delta", "citation": {"type": "char_location"}}}),
    # upstream APIs grow: a stop reason, finish reason, event or delta type added later passes
    ("anthropic/stream-event", {"type": "message_begin"}),
    ("anthropic/stream-event", {"type": "content_block_delta", "index": 0, "delta": {"type": "audio_delta", "data": "x"}}),
    ("anthropic/stream-event", {"type": "message_delta", "delta": {"stop_reason": "compaction"}, "usage": {"output_tokens": 1}}),
    ("anthropic/messages.response", {**json.loads((FIXTURES / "anthropic-message-text.json").read_text()),
                                     "stop_reason": "compaction"}),
    ("openai/chat.chunk", {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "compaction"}]}),
    ("anthropic/error", {"type": "error", "error": {"type": "not_found_error", "message": "model: claude-x"},
                         "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}),
]


@pytest.mark.parametrize("schema_id, instance", ACCEPTED, ids=[f"{s}#{i}" for i, (s, _) in enumerate(ACCEPTED)])
def test_accepts(schema_id, instance):
    assert errors(schema_id, instance) == []


# --- what must be rejected, with the exact first error ---------------------------------------

REJECTED = [
    # (schema id, instance, Issue.path, Issue.message)
    ("openai/chat.request", {"model": "gpt-4o"},
     "messages", "'messages' is a required property"),
    ("openai/chat.request", {"messages": CHAT["messages"]},
     "model", "'model' is a required property"),
    ("openai/chat.request", chat(messages=[{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]),
     "messages[1].role",
     "messages[1].role: 'robot' is not one of ['system', 'developer', 'user', 'assistant', 'tool', 'function']"),
    ("openai/chat.request", chat(messages=[*TOOL_TURN[:2], {"role": "tool", "content": "15C"}]),
     "messages[2].tool_call_id", "messages[2]: 'tool_call_id' is a required property"),
    ("openai/chat.request", chat(temperature=3),
     "temperature", "temperature: 3 is greater than the maximum of 2"),
    ("openai/chat.request", chat(temperature=-0.5),
     "temperature", "temperature: -0.5 is less than the minimum of 0"),
    ("openai/chat.request", chat(temperature="hot"),
     "temperature", "temperature: 'hot' is not of type 'number', 'null'"),
    ("openai/chat.request", chat(n=0),
     "n", "n: 0 is less than the minimum of 1"),
    ("openai/chat.request", chat(n=1.5),
     "n", "n: 1.5 is not of type 'integer', 'null'"),
    ("openai/chat.request", chat(max_tokens=0),
     "max_tokens", "max_tokens: 0 is less than the minimum of 1"),
    ("openai/chat.request", chat(max_tokens=1e30),
     "max_tokens", "max_tokens: 1e+30 is greater than the maximum of 2147483647"),
    ("openai/chat.request", chat(max_completion_tokens=2**31),
     "max_completion_tokens", "max_completion_tokens: 2147483648 is greater than the maximum of 2147483647"),
    ("openai/chat.request", chat(messages=[]),
     "messages", "messages: [] should be non-empty"),
    ("openai/chat.request", chat(messages="Hi"),
     "messages", "messages: 'Hi' is not of type 'array'"),
    ("openai/chat.request", chat(messages=["Hi"]),
     "messages[0]", "messages[0]: 'Hi' is not of type 'object'"),
    ("openai/chat.request", chat(messages=[{"content": "Hi"}]),
     "messages[0].role", "messages[0]: 'role' is a required property"),
    ("openai/chat.request", chat(messages=[{"role": "user"}]),
     "messages[0].content", "messages[0]: 'content' is a required property"),
    ("openai/chat.request", chat(messages=[{"role": "user", "content": [{"type": "txt", "text": "x"}]}]),
     "messages[0].content[0].type",
     "messages[0].content[0].type: 'txt' is not one of ['text', 'image_url', 'input_audio', 'file']"),
    ("openai/chat.request", chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "https://x"}]}]),
     "messages[0].content[0].image_url",
     "messages[0].content[0].image_url: 'https://x' is not of type 'object'"),
    ("openai/chat.request", chat(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]),
     "messages[0].content[0].type", "messages[0].content[0].type: 'text' was expected"),
    ("openai/chat.request", chat(messages=[{"role": "developer", "content": [{"type": "text"}]}]),
     "messages[0].content[0].text", "messages[0].content[0]: 'text' is a required property"),
    ("openai/chat.request", chat(messages=[TOOL_TURN[0], {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]),
     "messages[1].tool_calls[0].function", "messages[1].tool_calls[0]: 'function' is a required property"),
    ("openai/chat.request", chat(messages=[TOOL_TURN[0], {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"city": "Paris"}}}]}]),
     "messages[1].tool_calls[0].function.arguments",
     "messages[1].tool_calls[0].function.arguments: {'city': 'Paris'} is not of type 'string'"),
    ("openai/chat.request", chat(tools=[{"type": "function", "function": {"name": "get.weather"}}]),
     "tools[0].function.name",
     "tools[0].function.name: 'get.weather' does not match '^[a-zA-Z0-9_-]{1,64}$'"),
    ("openai/chat.request", chat(tools=[{"type": "function", "name": "f"}]),
     "tools[0].function", "tools[0]: 'function' is a required property"),
    ("openai/chat.request", chat(tools=[{"type": "retrieval"}]),
     "tools[0].type", "tools[0].type: 'retrieval' is not one of ['function', 'custom']"),
    ("openai/chat.request", chat(tool_choice="sometimes"),
     "tool_choice", "tool_choice: 'sometimes' is not one of ['none', 'auto', 'required']"),
    ("openai/chat.request", chat(tool_choice={"type": "function"}),
     "tool_choice.function", "tool_choice: 'function' is a required property"),
    ("openai/chat.request", chat(tool_choice={"type": "function", "function": {}}),
     "tool_choice.function.name", "tool_choice.function: 'name' is a required property"),
    ("openai/chat.request", chat(response_format={"type": "json_schema"}),
     "response_format.json_schema", "response_format: 'json_schema' is a required property"),
    ("openai/chat.request", chat(stop=["a", "b", "c", "d", "e"]),
     "stop", "stop: ['a', 'b', 'c', 'd', 'e'] is too long"),
    ("openai/chat.request", chat(reasoning_effort="max"),
     "reasoning_effort",
     "reasoning_effort: 'max' is not one of ['none', 'minimal', 'low', 'medium', 'high', 'xhigh', None]"),
    ("openai/chat.request", [],
     "", "[] is not of type 'object'"),

    ("anthropic/messages.request", {"model": "claude-sonnet-4-5", "messages": ANTHROPIC["messages"]},
     "max_tokens", "'max_tokens' is a required property"),
    ("anthropic/messages.request", anthropic(max_tokens=0),
     "max_tokens", "max_tokens: 0 is less than the minimum of 1"),
    ("anthropic/messages.request", anthropic(messages=[{"role": "tool", "content": "s"}]),
     "messages[0].role", "messages[0].role: 'tool' is not one of ['user', 'assistant', 'system']"),
    ("anthropic/messages.request", anthropic(max_tokens=1e30),
     "max_tokens", "max_tokens: 1e+30 is greater than the maximum of 2147483647"),
    ("anthropic/messages.request", anthropic(temperature=1.5),
     "temperature", "temperature: 1.5 is greater than the maximum of 1"),
    ("anthropic/messages.request", anthropic(messages=[{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]),
     "messages[0].content[0].tool_use_id", "messages[0].content[0]: 'tool_use_id' is a required property"),
    ("anthropic/messages.request", anthropic(messages=[ANTHROPIC["messages"][0], {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": "{\"a\":1}"}]}]),
     "messages[1].content[0].input", "messages[1].content[0].input: '{\"a\":1}' is not of type 'object'"),
    ("anthropic/messages.request", anthropic(messages=[{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/bmp", "data": "Qk0"}}]}]),
     "messages[0].content[0].source.media_type",
     "messages[0].content[0].source.media_type: 'image/bmp' is not one of "
     "['image/jpeg', 'image/png', 'image/gif', 'image/webp']"),
    ("anthropic/messages.request", anthropic(system=[{"type": "image", "source": {"type": "url", "url": "u"}}]),
     "system[0].type", "system[0].type: 'text' was expected"),
    ("anthropic/messages.request", anthropic(system=[{"type": "text", "text": 42}]),
     "system[0].text", "system[0].text: 42 is not of type 'string'"),
    ("anthropic/messages.request", anthropic(tool_choice={"type": "tool"}),
     "tool_choice.name", "tool_choice: 'name' is a required property"),
    ("anthropic/messages.request", anthropic(tool_choice="auto"),
     "tool_choice", "tool_choice: 'auto' is not of type 'object'"),
    ("anthropic/messages.request", anthropic(tools=[{"name": "f", "input_schema": {"type": "array"}}]),
     "tools[0].input_schema.type", "tools[0].input_schema.type: 'object' was expected"),
    ("anthropic/messages.request", anthropic(tools=[{"name": "f"}]),
     "tools[0].input_schema", "tools[0]: 'input_schema' is a required property"),
    ("anthropic/messages.request", anthropic(tools=[{"name": "my tool", "input_schema": {"type": "object"}}]),
     "tools[0].name", "tools[0].name: 'my tool' does not match '^[a-zA-Z0-9_-]{1,128}$'"),
    ("anthropic/messages.request", anthropic(thinking={"type": "enabled", "budget_tokens": 100}),
     "thinking.budget_tokens", "thinking.budget_tokens: 100 is less than the minimum of 1024"),

    ("openai/responses.request", {"input": "Hi"},
     "model", "'model' is a required property"),
    ("openai/responses.request", responses(input=[{"type": "function_call_output", "output": "19"}]),
     "input[0].call_id", "input[0]: 'call_id' is a required property"),
    ("openai/responses.request", responses(input=[{"role": "user", "content": [{"type": "text", "text": "x"}]}]),
     "input[0].content[0].type",
     "input[0].content[0].type: 'text' is not one of "
     "['input_text', 'input_image', 'input_file', 'input_audio', 'output_text', 'refusal']"),
    ("openai/responses.request", responses(input=[{"role": "tool", "content": "x"}]),
     "input[0].role", "input[0].role: 'tool' is not one of ['user', 'assistant', 'system', 'developer']"),
    ("openai/responses.request", responses(input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]),
     "input[0].arguments", "input[0].arguments: {} is not of type 'string'"),
    ("openai/responses.request", responses(tools=[{"type": "function", "function": {"name": "f"}}]),
     "tools[0].name", "tools[0]: 'name' is a required property"),
    ("openai/responses.request", responses(tool_choice={"type": "function"}),
     "tool_choice.name", "tool_choice: 'name' is a required property"),
    ("openai/responses.request", responses(max_output_tokens=8),
     "max_output_tokens", "max_output_tokens: 8 is less than the minimum of 16"),
    ("openai/responses.request", responses(max_output_tokens=1e30),
     "max_output_tokens", "max_output_tokens: 1e+30 is greater than the maximum of 2147483647"),
    ("openai/responses.request", responses(temperature=3),
     "temperature", "temperature: 3 is greater than the maximum of 2"),
    ("openai/responses.request", responses(text={"format": {"type": "json_schema", "schema": {}}}),
     "text.format.name", "text.format: 'name' is a required property"),
    ("openai/responses.request", responses(reasoning={"effort": "max"}),
     "reasoning.effort",
     "reasoning.effort: 'max' is not one of ['none', 'minimal', 'low', 'medium', 'high', 'xhigh', None]"),

    ("anthropic/stream-event", {"type": 7},
     "type", "type: 7 is not of type 'string'"),
    ("anthropic/stream-event", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}},
     "delta.text", "delta: 'text' is a required property"),
    ("anthropic/stream-event", {"type": "content_block_stop"},
     "index", "'index' is a required property"),
    ("anthropic/stream-event", {"type": "message_delta", "delta": {"stop_reason": 1}, "usage": {"output_tokens": 1}},
     "delta.stop_reason", "delta.stop_reason: 1 is not of type 'string', 'null'"),
    ("anthropic/stream-event", {"type": "error", "error": {"type": "overloaded", "message": "m"}},
     "error.type",
     "error.type: 'overloaded' is not one of ['invalid_request_error', 'authentication_error', "
     "'billing_error', 'permission_error', 'not_found_error', 'request_too_large', 'rate_limit_error', "
     "'api_error', 'timeout_error', 'overloaded_error']"),
    ("anthropic/messages.response", {**json.loads((FIXTURES / "anthropic-message-text.json").read_text()), "stop_reason": None},
     "stop_reason", "stop_reason: None is not of type 'string'"),

    ("openai/chat.chunk", {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"},
     "choices", "'choices' is a required property"),
    ("openai/chat.chunk", {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                           "choices": [{"index": 0, "delta": {}, "finish_reason": 3}]},
     "choices[0].finish_reason", "choices[0].finish_reason: 3 is not valid under any of the given schemas"),
    ("openai/chat.chunk", {"error": {"message": "m", "type": "t", "code": None}},
     "error.param", "error: 'param' is a required property"),
    ("openai/responses.event", {"type": "response.output_text.delta", "item_id": "m", "output_index": 0,
                                "content_index": 0, "delta": "x"},
     "sequence_number", "'sequence_number' is a required property"),
    ("openai/responses.event", {"type": "response.output_text.delta", "sequence_number": 4,
                                "output_index": 0, "content_index": 0, "delta": "x"},
     "item_id", "'item_id' is a required property"),
    ("openai/responses.event", {"type": "response.completed", "sequence_number": 9, "response": {
        "id": "resp_1", "object": "response", "created_at": 1, "status": "in_progress", "model": "m", "output": []}},
     "response.status", "response.status: 'completed' was expected"),
]


@pytest.mark.parametrize(
    "schema_id, instance, path, message", REJECTED, ids=[f"{r[0]}->{r[2] or 'root'}" for r in REJECTED]
)
def test_rejects_with_exact_first_error(schema_id, instance, path, message):
    issue = first_error(schema_id, instance)
    assert issue == Issue(path=path, message=message)
    found = errors(schema_id, instance)
    assert found[0] == issue
    assert len(found) == len(set(found))


def test_errors_lists_every_problem_best_first():
    instance = chat(temperature=3, messages=[{"role": "robot", "content": "x"}, {"role": "tool", "content": "r"}])
    found = errors("openai/chat.request", instance)
    assert [i.path for i in found] == ["temperature", "messages[1].tool_call_id", "messages[0].role"]
    assert first_error("openai/chat.request", instance) == found[0]


def test_valid_instance_has_no_issue():
    assert first_error("openai/chat.request", CHAT) is None
    assert errors("openai/chat.request", CHAT) == []


def test_long_instances_are_abbreviated_in_messages():
    issue = first_error("openai/chat.request", chat(messages={"role": "user", "content": "x" * 10_000}))
    assert issue.path == "messages"
    assert issue.message.endswith("... is not of type 'array'")
    assert len(issue.message) < 120


# --- the cached validator class ---------------------------------------------------------------


def _all_instances():
    for name in SSE_FILES:
        for payload in sse_payloads(FIXTURES / name):
            yield sse_schema(name), payload
    for name, schema_id in JSON_FIXTURES.items():
        yield schema_id, json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    for name in CLIENT_FILES:
        yield client_schema(name), client_body(name)
    yield from ACCEPTED
    for schema_id, instance, _, _ in REJECTED:
        yield schema_id, instance


def _plain(schema_id):
    return jsonschema.Draft202012Validator(schemas.registry().contents(schema_id), registry=schemas.registry())


def _error_set(v, instance):
    return sorted((list(e.absolute_path).__repr__(), e.message) for e in v.iter_errors(instance))


def test_cached_validator_agrees_with_plain_draft202012():
    checked = 0
    for schema_id, instance in _all_instances():
        cached, plain = validator(schema_id), _plain(schema_id)
        assert cached.is_valid(instance) == plain.is_valid(instance), (schema_id, instance)
        assert _error_set(cached, instance) == _error_set(plain, instance), (schema_id, instance)
        best_cached = jsonschema.exceptions.best_match(cached.iter_errors(instance))
        best_plain = jsonschema.exceptions.best_match(plain.iter_errors(instance))
        assert (best_cached is None) == (best_plain is None)
        if best_cached is not None:
            assert (list(best_cached.absolute_path), best_cached.message) == (
                list(best_plain.absolute_path), best_plain.message)
        checked += 1
    assert checked > 700


def test_serving_valid_specs_and_bodies_never_loads_the_python_validator():
    """jsonschema (with referencing, attrs' rpds) words rejected specs and bodies only: a gateway
    that compiles valid specs and sees valid bodies does not import it."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from engine import config, schemas\n"
            "from engine.server.app import create_app\n"
            "cfg = config.load({}, env={'TOKLIGENCE_ANTHROPIC_API_KEY': 'k'})\n"
            "create_app(cfg)\n"
            "assert schemas.first_error('openai/chat.request', {'model': 'm', 'messages': [{'role': 'user', 'content': 'hi'}]}) is None\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jsonschema', 'referencing')))\n"
            "print(schemas.first_error('openai/chat.request', {'model': 'm'}).path)\n"
            "print('jsonschema' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["[]", "messages", "True"], out.stdout
