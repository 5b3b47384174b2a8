"""The memos of client bodies sized from the config (history_memo_*, tools_memo_*, memo_*), turned
off with 0, and what /metrics says of them (engine_memo_*)."""
from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from conftest import gateway_env
from engine.catalog import Catalog
from engine.config import ConfigError, load
from engine.nodes import ItemMemo
from engine.server import translate
from engine.server.app import create_app
from engine.server.history import History
from engine.server.members import Memo
from support.served import sent_upstream

SMALL = {"TOKLIGENCE_HISTORY_MEMO_CONVERSATIONS": "2", "TOKLIGENCE_TOOLS_MEMO_TEXTS": "2",
         "TOKLIGENCE_MEMO_ADMIT_ONE_IN": "1000", "TOKLIGENCE_MEMO_IDLE_SECONDS": "1h"}
OFF = {"TOKLIGENCE_HISTORY_MEMO_CONVERSATIONS": "0", "TOKLIGENCE_TOOLS_MEMO_TEXTS": "0"}


@pytest.fixture
def fresh(monkeypatch):
    """Memos of the gateway's own for the test; the item memo's bounds put back afterwards."""
    made = History(), Memo()
    monkeypatch.setattr(translate, "HISTORY", made[0])
    monkeypatch.setattr(translate, "MEMO", made[1])
    monkeypatch.setattr(ItemMemo, "LIMIT", ItemMemo.LIMIT)
    monkeypatch.setattr(ItemMemo, "LISTS", ItemMemo.LISTS)
    yield made
    for memo in made:
        memo.clear()  # their values leave program.SHARED with them


def test_the_memo_keys_default_to_the_memos_own_bounds():
    cfg = load(env={})
    assert (cfg.history_memo_conversations, cfg.history_memo_max_bytes, cfg.tools_memo_texts,
            cfg.tools_memo_max_bytes, cfg.memo_idle_seconds, cfg.memo_admit_one_in) == \
        (64, 8 << 20, 128, 4 << 20, 300.0, 64)


def test_the_memo_keys_come_from_the_ini_file_and_the_environment(tmp_path):
    ini = tmp_path / "gateway.ini"
    ini.write_text("history_memo_conversations=256\nhistory_memo_max_bytes=32M\ntools_memo_max_bytes=512K\n"
                   "memo_idle_seconds=90s\n")
    cfg = load(env={"TOKLIGENCE_CONFIG": str(ini), "TOKLIGENCE_TOOLS_MEMO_TEXTS": "0",
                    "TOKLIGENCE_MEMO_ADMIT_ONE_IN": "16"})
    assert (cfg.history_memo_conversations, cfg.history_memo_max_bytes, cfg.tools_memo_texts,
            cfg.tools_memo_max_bytes, cfg.memo_idle_seconds, cfg.memo_admit_one_in) == \
        (256, 32 << 20, 0, 512 << 10, 90.0, 16)
    assert cfg.sources["tools_memo_texts"] == "env TOKLIGENCE_TOOLS_MEMO_TEXTS"


@pytest.mark.parametrize("key, value", [("tools_memo_texts", "-1"), ("history_memo_conversations", "many"),
                                        ("memo_admit_one_in", "0"), ("history_memo_max_bytes", "8 parsecs"),
                                        ("memo_idle_seconds", "soon")])
def test_a_bad_memo_value_stops_the_gateway_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"invalid {key}='{value}' from flag --set {key}"):
        load({"set": [f"{key}={value}"]}, env={})


def test_the_app_sizes_the_memos_as_configured(fresh, tmp_path):
    cfg = load({"set": ["history_memo_conversations=5", "history_memo_max_bytes=1M", "tools_memo_texts=3",
                        "tools_memo_max_bytes=64K", "memo_idle_seconds=30s", "memo_admit_one_in=8"]},
               env={"TOKLIGENCE_DATA_DIR": str(tmp_path)})
    create_app(cfg, Catalog.load())
    history, tools = fresh
    assert (history.max_entries, history.max_bytes, tools.max_entries, tools.max_bytes) == (5, 1 << 20, 3, 64 << 10)
    for memo in fresh:
        assert (memo.admission.every, memo.admission.stale_after) == (8, 30.0)
    # what each `each` keeps has room for both: 256 items a conversation, 128 tools a text
    assert (ItemMemo.LIMIT, ItemMemo.LISTS) == (128 * 10, 2 * 3)


def _body(client: int) -> bytes:
    """A chat request of a client with tools of its own (1.5 KB) and a conversation of its own
    (six messages of 1 KB, from the first), as clients in turn on a shared gateway send."""
    tools = [{"type": "function", "function": {
        "name": f"tool_{k}", "description": f"Tool {k} of client {client}. " + "It does a thing. " * 20,
        "parameters": {"type": "object", "properties": {"arg": {"type": "string"}}}}} for k in range(4)]
    messages = [{"role": "user" if i % 2 == 0 else "assistant",
                 "content": f"Client {client}, turn {i}: " + "what was said and done. " * 40} for i in range(6)]
    return json.dumps({"model": "claude-sonnet-4-5", "messages": messages, "tools": tools}).encode()


async def _serve_in_turn(fake_anthropic, fake_openai, tmp_path, env: dict) -> tuple[list, dict]:
    """Five clients in turn, twice, through a gateway with `env` on top of the standard one:
    (what the upstream got, each time; the engine_memo_* samples of /metrics afterwards)."""
    app = create_app(load({}, env={**gateway_env(fake_anthropic, fake_openai, tmp_path), **env}), Catalog.load())
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            sent = [await sent_upstream(s, server.make_url("/v1/chat/completions"), _body(client), fake_anthropic)
                    for _ in range(2) for client in range(5)]
            async with s.get(server.make_url("/metrics")) as r:
                text = await r.text()
    finally:
        await server.close()
    samples = {(s.name, s.labels["memo"]): s.value for f in text_string_to_metric_families(text)
               if f.name.startswith("engine_memo_") for s in f.samples}
    return sent, samples


async def test_a_full_memo_keeps_its_configured_entries_and_counts_the_newcomers_it_refused(
        fresh, fake_anthropic, fake_openai, tmp_path):
    _, seen = await _serve_in_turn(fake_anthropic, fake_openai, tmp_path, SMALL)
    for memo in ("history", "tools"):
        # clients 0 and 1 learned, 2-4 refused (the memo full of entries used within the hour,
        # one newcomer in 1000 taken); the second round finds 0 and 1 again
        assert seen[("engine_memo_entries", memo)] == 2
        assert (seen[("engine_memo_hits_total", memo)], seen[("engine_memo_misses_total", memo)],
                seen[("engine_memo_refused_total", memo)]) == (2, 8, 6), memo
        assert seen[("engine_memo_bytes", memo)] > 1000
    history, tools = fresh
    assert len(history.order) == len(tools.order) == 2


async def test_memos_turned_off_keep_nothing_and_send_the_same_upstream_bodies(
        fresh, fake_anthropic, fake_openai, tmp_path, monkeypatch):
    kept, seen_on = await _serve_in_turn(fake_anthropic, fake_openai, tmp_path, {})
    assert seen_on[("engine_memo_hits_total", "history")] == seen_on[("engine_memo_hits_total", "tools")] == 5
    monkeypatch.setattr(translate, "HISTORY", History())
    monkeypatch.setattr(translate, "MEMO", Memo())
    plain, seen_off = await _serve_in_turn(fake_anthropic, fake_openai, tmp_path, OFF)
    assert plain == kept and len(plain) == 10
    assert set(seen_off.values()) == {0}
    assert not translate.HISTORY.order and not translate.MEMO.order
