"""The bench's hand-written floor (engine/bench/floor.py): what it sends upstream is a valid
Messages request, what it answers is valid Chat Completions, streamed or not, in the shapes the
project's schemas give; the openai SDK reads it; bad bodies get a 400 before any upstream call."""
from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from engine.bench import floor, runner
from engine.bench.upstream import FakeAnthropic, message_body, model_name, sse_frames, stream_events
from engine.schemas import is_valid

CODEX_CHAT = runner.CLIENTS / runner.REAL[runner.FLOOR_REAL][1]

# a conversation with what Codex sends after a tool ran: an assistant tool call and its result
TOOL_TURN = {
    "model": "claude-bench-text-n3", "temperature": 0.2, "stop": "END", "tool_choice": "auto",
    "max_completion_tokens": 300,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use the shell."},
        {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": '{"command":["ls"]}'}},
            {"id": "call_2", "type": "function", "function": {"name": "shell", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "b.txt"}]},
    ],
    "tools": [{"type": "function", "function": {"name": "shell", "description": "Run a command",
                                                "parameters": {"type": "object"}}}],
}


def test_the_codex_chat_capture_becomes_a_valid_messages_request():
    body = json.loads(CODEX_CHAT.read_text())["body"]
    assert is_valid("openai/chat.request")(body)
    req, headers = floor.messages_request(body, "sk-test")
    assert is_valid("anthropic/messages.request")(req)
    assert headers["x-api-key"] == "sk-test" and headers["anthropic-version"]
    system = [m["content"] for m in body["messages"] if m["role"] in ("system", "developer")]
    assert req["system"] == "\n\n".join(system)
    # the three user messages in a row are one user turn, as Messages wants turns to alternate
    assert [m["role"] for m in req["messages"]] == ["user"]
    assert len(req["messages"][0]["content"]) == 3
    assert [t["name"] for t in req["tools"]] == [t["function"]["name"] for t in body["tools"]]
    assert req["tools"][0]["input_schema"] == body["tools"][0]["function"]["parameters"]
    assert req["stream"] is True and req["max_tokens"] == floor.DEFAULT_MAX_TOKENS


def test_tool_calls_and_their_results_become_tool_use_and_tool_result_blocks():
    req, _ = floor.messages_request(TOOL_TURN, "k")
    assert is_valid("anthropic/messages.request")(req)
    assert [m["role"] for m in req["messages"]] == ["user", "assistant", "user"]
    uses = req["messages"][1]["content"]
    assert uses == [{"type": "tool_use", "id": "call_1", "name": "shell", "input": {"command": ["ls"]}},
                    {"type": "tool_use", "id": "call_2", "name": "shell", "input": {}}]
    assert req["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "b.txt"}]
    assert req["system"] == "Be brief.\n\nUse the shell."
    assert (req["max_tokens"], req["temperature"], req["stop_sequences"], req["tool_choice"]) == \
        (300, 0.2, ["END"], {"type": "auto"})
    for choice, want in (("required", {"type": "any"}), ("none", {"type": "none"}),
                         ({"type": "function", "function": {"name": "shell"}}, {"type": "tool", "name": "shell"})):
        assert floor.messages_request(dict(TOOL_TURN, tool_choice=choice), "k")[0]["tool_choice"] == want


@pytest.mark.parametrize("kind", ["text", "tools"])
def test_a_messages_answer_becomes_a_valid_chat_completion(kind):
    model = model_name(kind, n=5, k=2)
    msg = message_body(model)
    out = floor.chat_answer(msg)
    assert is_valid("openai/chat.response")(out)
    choice = out["choices"][0]
    if kind == "text":
        assert choice["message"]["content"] == msg["content"][0]["text"] and choice["finish_reason"] == "stop"
    else:
        calls = choice["message"]["tool_calls"]
        assert [json.loads(c["function"]["arguments"]) for c in calls] == [b["input"] for b in msg["content"]]
        assert choice["finish_reason"] == "tool_calls"
    assert out["usage"]["total_tokens"] == msg["usage"]["input_tokens"] + msg["usage"]["output_tokens"]


@pytest.mark.parametrize("kind", ["text", "tools"])
@pytest.mark.parametrize("piece", [7, 4096])
def test_a_stream_becomes_valid_chunks_whatever_its_reads(kind, piece):
    model = model_name(kind, n=6, k=2)
    raw = b"".join(sse_frames(model))
    chunks = floor.Chunks(include_usage=True)
    out = b"".join(chunks.feed(raw[i:i + piece]) for i in range(0, len(raw), piece))
    frames = out.decode().split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    docs = [json.loads(f[len("data: "):]) for f in frames[:-2]]
    for d in docs:
        assert is_valid("openai/chat.chunk")(d), d
    events = stream_events(model)
    deltas = [d["choices"][0]["delta"] for d in docs if d["choices"]]
    if kind == "text":
        want = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
        assert "".join(d.get("content") or "" for d in deltas) == want
    else:
        args: dict = {}
        for d in deltas:
            for call in d.get("tool_calls") or ():
                args[call["index"]] = args.get(call["index"], "") + call["function"]["arguments"]
        want = {}
        for e in events:
            if e["type"] == "content_block_delta":
                want[e["index"]] = want.get(e["index"], "") + e["delta"]["partial_json"]
        assert args == want
    finishes = [d["choices"][0]["finish_reason"] for d in docs if d["choices"]]
    assert finishes[-1] == ("stop" if kind == "text" else "tool_calls") and set(finishes[:-1]) == {None}
    assert docs[-1]["choices"] == [] and docs[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("client", ["aiohttp", "engine"])
async def test_the_openai_sdk_reads_the_floor_and_bad_bodies_get_a_400(client):
    up = FakeAnthropic()
    port = await up.start()
    server = TestServer(floor.create_app(f"http://127.0.0.1:{port}", "k", client))
    await server.start_server()
    sdk = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0)
    try:
        model = model_name("text", n=4)
        messages = [{"role": "user", "content": "hi"}]
        text = "".join(e["delta"]["text"] for e in stream_events(model) if e["type"] == "content_block_delta")
        answer = await sdk.chat.completions.create(model=model, messages=messages)
        assert answer.choices[0].message.content == text
        stream = await sdk.chat.completions.create(model=model, messages=messages, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == text
        before = up.requests
        with pytest.raises(openai.BadRequestError):
            await sdk.chat.completions.create(model=model, messages="not a list")
        async with aiohttp.ClientSession() as s:  # not JSON at all
            async with s.post(server.make_url("/v1/chat/completions"), data=b"{nope") as resp:
                assert resp.status == 400 and "not JSON" in (await resp.json())["error"]["message"]
        assert up.requests == before  # refused before any upstream call
    finally:
        await sdk.close()
        await server.close()
        await up.stop()
