"""Codex 0.169's tools beyond plain functions, through the responses-to-messages stream spec:
the functions of a namespace tool (multi_agent_v1) come back as function_call items with their
name and namespace apart, and Anthropic's web search comes back as a web_search_call item.
Streams are built with the fake upstream's builders and every output event is checked against
schemas/openai/responses.event.json."""
from __future__ import annotations

import json

import pytest

from engine import schemas
from engine.stream import StreamTranslator
from support.fake_upstream import anthropic_stream_events, parse_sse, sse_events

NAMESPACE = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.",
             "tools": [{"type": "function", "name": "spawn_agent",
                        "parameters": {"type": "object", "properties": {"message": {"type": "string"}}}}]}
REQ = {"model": "claude-sonnet-4-5", "stream": True,
       "tools": [{"type": "function", "name": "exec_command",
                  "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
                 NAMESPACE, {"type": "web_search", "external_web_access": True}]}


@pytest.fixture(autouse=True)
def _frozen(fixed_clock):
    pass


def replay(catalog, blocks, stop_reason="end_turn") -> list[dict]:
    raw = sse_events(anthropic_stream_events(blocks, stop_reason=stop_reason, id="msg_01T")).encode()
    t = StreamTranslator(catalog.get("responses-to-messages/stream"), req=REQ, cfg={"default_max_tokens": 4096},
                         model="claude-sonnet-4-5", id_base="t0", response_id="resp_t0")
    out = t.encode(t.start()) + t.feed(raw) + t.finish()
    events = [json.loads(ev["data"]) for ev in parse_sse(out)]
    for ev in events:
        assert schemas.first_error("openai/responses.event", ev) is None, (ev, schemas.first_error("openai/responses.event", ev))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def done_items(events):
    return [e["item"] for e in events if e["type"] == "response.output_item.done"]


def test_namespaced_call_streams_with_name_and_namespace_apart(catalog):
    events = replay(catalog, [
        {"type": "tool_use", "id": "toolu_01S", "name": "multi_agent_v1__spawn_agent",
         "partial_json": ['{"message"', ': "hi"}']},
        {"type": "tool_use", "id": "toolu_01E", "name": "exec_command", "partial_json": ['{"cmd": "ls"}']},
    ], stop_reason="tool_use")
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert (added[0]["name"], added[0]["namespace"]) == ("spawn_agent", "multi_agent_v1")
    spawn, exec_ = done_items(events)
    assert spawn["type"] == "function_call" and spawn["call_id"] == "toolu_01S"
    assert (spawn["name"], spawn["namespace"]) == ("spawn_agent", "multi_agent_v1")
    assert json.loads(spawn["arguments"]) == {"message": "hi"}
    assert exec_["name"] == "exec_command" and "namespace" not in exec_
    assert events[-1]["response"]["output"] == [spawn, exec_]


def test_web_search_streams_as_a_web_search_call_item(catalog):
    events = replay(catalog, [
        {"type": "server_tool_use", "id": "srvtoolu_01W", "name": "web_search",
         "partial_json": ['{"query": ', '"rust 2024 edition"}']},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01W",
         "content": [{"type": "web_search_result", "url": "https://example.com", "title": "Rust",
                      "encrypted_content": "EqQ", "page_age": None}]},
        {"type": "text", "text": ["The 2024 edition ", "is stable."]},
    ])
    kinds = [e["type"] for e in events]
    assert kinds.index("response.web_search_call.in_progress") < kinds.index("response.web_search_call.searching") \
        < kinds.index("response.web_search_call.completed")
    search, message = done_items(events)
    assert search == {"id": search["id"], "type": "web_search_call", "status": "completed",
                      "action": {"type": "search", "query": "rust 2024 edition"}}
    assert search["id"].startswith("ws_")
    assert message["type"] == "message" and message["content"][0]["text"] == "The 2024 edition is stable."
    # output_index counts the search item: the message is the second item
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1]
    assert events[-1]["type"] == "response.completed"


def test_local_shell_streams_as_a_local_shell_call_item(catalog):
    req = {**REQ, "tools": [{"type": "local_shell"}]}
    raw = sse_events(anthropic_stream_events([
        {"type": "tool_use", "id": "toolu_01L", "name": "local_shell",
         "partial_json": ['{"command": ["bash", "-lc", ', '"ls"], "workdir": "/tmp"}']}], stop_reason="tool_use")).encode()
    t = StreamTranslator(catalog.get("responses-to-messages/stream"), req=req, cfg={"default_max_tokens": 4096},
                         model="claude-sonnet-4-5", id_base="t0", response_id="resp_t0")
    events = [json.loads(ev["data"]) for ev in parse_sse(t.encode(t.start()) + t.feed(raw) + t.finish())]
    for ev in events:
        assert schemas.first_error("openai/responses.event", ev) is None, ev
    added = next(e["item"] for e in events if e["type"] == "response.output_item.added")
    assert added["type"] == "local_shell_call" and added["status"] == "in_progress"
    (item,) = done_items(events)
    assert item == {"id": item["id"], "type": "local_shell_call", "call_id": "toolu_01L", "status": "completed",
                    "action": {"type": "exec", "command": ["bash", "-lc", "ls"], "timeout_ms": None,
                               "working_directory": "/tmp", "env": None, "user": None}}
    assert events[-1]["response"]["output"] == [item]
