"""API pairs as data: a pair declared in mappings/<pair>/pair.yaml (with its specs and schemas) is
served by `engine serve` with no Python; the tokens a pair reports come from its specs' `usage:`."""
from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from engine.catalog import MAPPINGS_DIR, Catalog
from engine.pairs import PairError, load_dir
from support.fake_upstream import anthropic_message, anthropic_text_stream, json_reply, sse_reply
from test_ops import metrics, post

TOY = Path(__file__).parent / "pairs" / "prompt-to-messages"


@pytest.fixture
def toy_mappings(tmp_path):
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, root)
    shutil.copytree(TOY, root / TOY.name)
    return root


def test_a_toy_pair_declared_in_yaml_is_served_by_engine_serve(make_gateway, fake_anthropic, toy_mappings):
    gw = make_gateway({"TOKLIGENCE_MAPPINGS_DIR": str(toy_mappings), "TOKLIGENCE_LOG_FORMAT": "json"})
    fake_anthropic.set_default(json_reply(anthropic_message("Hi there.", usage={"input_tokens": 11,
                                                                                "output_tokens": 4})))
    status, _, raw = post(gw, "/v1/prompt", {"model": "claude-sonnet-4-5", "prompt": "Say hi", "max_tokens": 50})
    assert status == 200, raw
    answer = json.loads(raw)
    assert answer["text"] == "Hi there." and answer["tokens"] == {"input": 11, "output": 4}
    sent = fake_anthropic.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.json == {"model": "claude-sonnet-4-5", "max_tokens": 50,
                         "messages": [{"role": "user", "content": "Say hi"}]}

    fake_anthropic.set_default(sse_reply(anthropic_text_stream(["Hel", "lo"], usage={"input_tokens": 7,
                                                                                   "output_tokens": 2})))
    status, headers, raw = post(gw, "/v1/prompt", {"model": "claude-sonnet-4-5", "prompt": "x", "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert events == [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}, {"type": "done"}]

    # the declared request schema: a 400 naming the field, before any upstream call
    before = len(fake_anthropic.requests)
    status, _, raw = post(gw, "/v1/prompt", {"model": "claude-sonnet-4-5", "prompt": 3})
    assert status == 400 and json.loads(raw)["error"]["param"] == "prompt"
    assert len(fake_anthropic.requests) == before
    # the specs' declared usage: both answers counted
    m = metrics(gw)
    assert m['engine_tokens_total{direction="in",model="claude*"}'] == 11 + 7
    assert m['engine_tokens_total{direction="out",model="claude*"}'] == 4 + 2
    # the shipped pairs are still served from the same folder
    fake_anthropic.set_default(json_reply(anthropic_message("ok")))
    status, _, _ = post(gw, "/v1/chat/completions", {"model": "claude-sonnet-4-5",
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200


def test_translated_messages_streams_report_their_tokens(make_gateway, fake_openai):
    """messages-to-chat: the stream's usage, as its stream spec declares it, reaches the metrics."""
    from support.fake_upstream import openai_chat_stream
    gw = make_gateway({"TOKLIGENCE_MODEL_ALIASES": "claude-*=>gpt-4o"})
    fake_openai.set_default(sse_reply(openai_chat_stream(["Hi"], usage={"prompt_tokens": 13,
                                                                       "completion_tokens": 5})))
    status, _, raw = post(gw, "/v1/messages", {"model": "claude-x", "max_tokens": 20, "stream": True,
                                               "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and b"message_stop" in raw
    tokens = {k: v for k, v in metrics(gw).items() if k.startswith("engine_tokens_total")}
    assert sum(v for k, v in tokens.items() if 'direction="in"' in k) == 13, tokens
    assert sum(v for k, v in tokens.items() if 'direction="out"' in k) == 5, tokens


def test_the_shipped_pairs_are_declared():
    declared = Catalog.load().declared
    assert sorted(declared) == ["chat-to-messages", "messages-to-chat", "responses-to-messages"]
    assert declared["messages-to-chat"].keepalive.startswith(b"event: ping")
    assert declared["messages-to-chat"].upstream_path == "/chat/completions"


def test_a_bad_declaration_names_file_line_and_field(tmp_path):
    (tmp_path / "x").mkdir()
    text = (TOY / "pair.yaml").read_text().replace("name: prompt-to-messages", "name: x")
    (tmp_path / "x" / "pair.yaml").write_text(text.replace("path: /v1/messages", "path: v1/messages"))
    with pytest.raises(PairError) as e:
        load_dir(tmp_path)
    assert re.search(r"x/pair\.yaml:\d+:\d+: upstream\.path: ", str(e.value)), str(e.value)
    (tmp_path / "x" / "pair.yaml").write_text(text + "usage: {input: src.usage.input_tokens}\n")
    with pytest.raises(PairError) as e:
        load_dir(tmp_path)
    # the tokens a pair reports are its specs' `usage:` (tests/bad_specs/usage_reads_the_event.yaml)
    assert re.search(r"x/pair\.yaml:\d+:\d+: <root>: .*usage", str(e.value)), str(e.value)
