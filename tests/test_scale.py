"""Several gateway instances: two processes on one Redis store, a conversation started on one and
continued through the other (what a load balancer in front of them does to a client)."""
from __future__ import annotations

import openai

from support.fake_upstream import anthropic_message, anthropic_tool_stream, json_reply, sse_reply

REDIS_URL = "redis://127.0.0.1:6379/0"
TOOL = {"type": "function", "name": "lookup", "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}


def test_two_gateways_share_one_redis_store(make_gateway, fake_anthropic):
    env = {"TOKLIGENCE_SESSION_STORE": REDIS_URL}
    a, b = make_gateway(env), make_gateway(env)
    ca = openai.OpenAI(base_url=a.url + "/v1", api_key="k", max_retries=0, timeout=15)
    cb = openai.OpenAI(base_url=b.url + "/v1", api_key="k", max_retries=0, timeout=15)
    fake_anthropic.enqueue(sse_reply(anthropic_tool_stream([("toolu_scale", "lookup", {"word": "gateway"})])))
    with ca.responses.stream(model="claude-sonnet-4-5", input="Define gateway.", tools=[TOOL],
                             instructions="One line.") as stream:
        first = stream.get_final_response()
    assert [o.type for o in first.output] == ["function_call"]
    fake_anthropic.enqueue(json_reply(anthropic_message("A gateway forwards traffic.")))
    second = cb.responses.create(model="claude-sonnet-4-5", previous_response_id=first.id,
                                 input=[{"type": "function_call_output", "call_id": "toolu_scale",
                                         "output": "a node that forwards traffic"}])
    assert second.output_text == "A gateway forwards traffic."
    sent = fake_anthropic.last.json
    assert sent["system"] == [{"type": "text", "text": "One line."}]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][0]["id"] == "toolu_scale"
    assert sent["messages"][2]["content"][0]["tool_use_id"] == "toolu_scale"
    # both instances see both responses
    assert ca.responses.retrieve(second.id).output_text == "A gateway forwards traffic."
    assert cb.responses.retrieve(first.id).id == first.id
    for rid in (first.id, second.id):
        cb.responses.delete(rid)
