"""Upstream connections are kept across streamed answers (the official SDKs against `engine
serve`, fake upstreams on loopback).

An upstream may write a stream's last event and the end of its chunked body apart (two TCP
segments). The gateway answers its client at the last event and reads that end afterwards, so
the connection serves the next request instead of being closed (with TLS, a new handshake per
stream). An end that does not come within a second is not waited for: the connection is closed,
and the client's answer never waits for it."""
from __future__ import annotations

import time

import anthropic
import openai
import pytest

from support.fake_upstream import anthropic_text_stream, openai_chat_stream, sse_reply


def _chat(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=20)


def _chat_stream_text(client) -> str:
    chunks = client.chat.completions.create(model="claude-sonnet-4-5", stream=True,
                                            messages=[{"role": "user", "content": "Hi"}])
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _settled(rec):
    # the upstream wrote the end of its body, and the gateway had time to read it
    assert rec.wait_done(5)
    time.sleep(0.2)


def test_a_stream_whose_end_comes_after_its_last_event_keeps_the_upstream_connection(make_gateway,
                                                                                       fake_anthropic):
    gw = make_gateway()
    client = _chat(gw)
    for words in (["Hello", " there"], ["Second", " answer"]):
        fake_anthropic.enqueue(sse_reply(anthropic_text_stream(words), chunk_size="event", end_delay=0.05))
        assert _chat_stream_text(client) == "".join(words)
        _settled(fake_anthropic.requests[-1])
    first, second = fake_anthropic.requests
    assert first.peer == second.peer and not first.client_disconnected


def test_the_client_does_not_wait_for_an_upstream_end_that_does_not_come(make_gateway, fake_anthropic):
    gw = make_gateway()
    client = _chat(gw)
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["Quick"]), chunk_size="event", end_delay=2.5))
    t0 = time.monotonic()
    assert _chat_stream_text(client) == "Quick"
    assert time.monotonic() - t0 < 1.0
    first = fake_anthropic.requests[-1]
    # the gateway closed the connection before the end was due (after about a second)
    assert first.wait_done(5) and first.client_disconnected
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream(["Next"]), chunk_size="event"))
    assert _chat_stream_text(client) == "Next"
    assert fake_anthropic.requests[-1].peer != first.peer


def test_an_openai_stream_ending_late_after_done_keeps_the_connection(make_gateway, fake_openai):
    gw = make_gateway()
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0, timeout=20)
    for words in (["One", " two"], ["Three"]):
        fake_openai.enqueue(sse_reply(openai_chat_stream(words, model="gpt-4o"), chunk_size="event",
                                      end_delay=0.05))
        with client.messages.stream(model="gpt-4o", max_tokens=64,
                                    messages=[{"role": "user", "content": "Hi"}]) as stream:
            assert "".join(stream.text_stream) == "".join(words)
        _settled(fake_openai.requests[-1])
    first, second = fake_openai.requests
    assert first.peer == second.peer and not first.client_disconnected


@pytest.mark.parametrize("end_delay", [0.0, 0.05])
def test_streams_one_after_another_use_one_connection(make_gateway, fake_anthropic, end_delay):
    gw = make_gateway()
    client = _chat(gw)
    for i in range(4):
        fake_anthropic.enqueue(sse_reply(anthropic_text_stream([f"n{i}"]), end_delay=end_delay))
        assert _chat_stream_text(client) == f"n{i}"
        _settled(fake_anthropic.requests[-1])
    assert len({r.peer for r in fake_anthropic.requests}) == 1
