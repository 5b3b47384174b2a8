"""A conversation's earlier turns decoded and checked once (engine/server/history.py): each body
reads as the whole decode reads it, a later turn reuses the kept items (the same objects), what
the checks refuse is refused the same and named at its real index, and the memo keeps its
bounds and starts over after a write into a request's objects."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import msgspec
import pytest

from engine import program, schemas
from engine.server import translate
from engine.server.api_errors import ApiError
from engine.server.admission import Admission
from engine.server.history import MARK, History

CLIENTS = Path(__file__).parent / "fixtures" / "clients"
CAPTURES = {  # capture -> (client schema, conversation member)
    "codex-0.169-responses-req1.json": ("openai/responses.request", "input"),
    "codex-0.94-chat-req1.json": ("openai/chat.request", "messages"),
    "claude-code-2.1.332-messages-gpt5-req1.json": ("anthropic/messages.request", "messages"),
}
_TURN = "An earlier turn of the session: code, its output, what was decided. " * 12  # 800 bytes


def _body(name: str) -> dict:
    return json.loads((CLIENTS / name).read_text())["body"]


def _turn(member: str, i: int, text: str | None = None) -> dict:
    role = "user" if i % 2 == 0 else "assistant"
    text = text if text is not None else f"{_TURN}{i}"
    if member == "input":
        return {"type": "message", "role": role,
                "content": [{"type": "input_text" if role == "user" else "output_text", "text": text}]}
    return {"role": role, "content": text}


def _later(name: str, turns: int) -> dict:
    """The capture `turns` turns later: its conversation, then that many more items."""
    body = _body(name)
    member = CAPTURES[name][1]
    body[member] = body[member] + [_turn(member, i) for i in range(turns)]
    return body


def _raw(body: dict, separators=(", ", ": ")) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=separators).encode()


@pytest.fixture
def history(monkeypatch):
    fresh = History()
    monkeypatch.setattr(translate, "HISTORY", fresh)
    yield fresh
    fresh.clear()  # its items are shared no more


def _parse(raw: bytes, schema_id: str) -> dict:
    body = translate.parse_body(raw, schema_id)
    whole = msgspec.json.decode(raw)
    assert body == whole and list(body) == list(whole)
    return body


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_a_later_turn_reuses_the_items_kept_from_the_one_before(history, name):
    schema_id, member = CAPTURES[name]
    first = _parse(_raw(_later(name, 6)), schema_id)
    assert (history.hits, history.misses, len(history.order)) == (0, 1, 1)
    second = _parse(_raw(_later(name, 8)), schema_id)
    n = len(first[member])
    assert history.hits == 1 and all(a is b for a, b in zip(first[member], second[member][:n]))
    assert not any(a is b for a, b in zip(first[member], second[member][n:]))
    # the turn after reuses all eight, and the list of the turn before is no longer kept
    assert len(history.order) == 1
    third = _parse(_raw(_later(name, 9)), schema_id)
    assert history.hits == 2 and all(a is b for a, b in zip(second[member], third[member]))


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_the_same_body_again_reads_whole_from_the_memo(history, name):
    schema_id, member = CAPTURES[name]
    raw = _raw(_later(name, 6))
    first = _parse(raw, schema_id)
    again = _parse(raw, schema_id)  # a list with nothing new still meets the schemas' minItems
    assert history.hits == 1 and all(a is b for a, b in zip(first[member], again[member]))


def test_a_rewritten_last_item_is_read_anew_and_the_rest_reused(history):
    """Claude Code moves its cache breakpoint from the last message to the new last one."""
    name = "claude-code-2.1.332-messages-gpt5-req1.json"
    schema_id = CAPTURES[name][0]
    before = _later(name, 6)
    before["messages"][-1] = {"role": "user", "content": [
        {"type": "text", "text": _TURN, "cache_control": {"type": "ephemeral"}}]}
    first = _parse(_raw(before), schema_id)
    after = copy.deepcopy(before)
    del after["messages"][-1]["content"][0]["cache_control"]
    after["messages"] += [_turn("messages", 1), {"role": "user", "content": [
        {"type": "text", "text": "next", "cache_control": {"type": "ephemeral"}}]}]
    second = _parse(_raw(after), schema_id)
    n = len(first["messages"]) - 1
    assert history.hits == 1
    assert all(a is b for a, b in zip(first["messages"][:n], second["messages"][:n]))
    assert second["messages"][n] is not first["messages"][n]
    assert "cache_control" not in second["messages"][n]["content"][0]


def test_items_laid_out_with_other_whitespace_are_found(history):
    name = "codex-0.94-chat-req1.json"
    schema_id = CAPTURES[name][0]
    for seps in ((",", ":"), (",\n  ", ": ")):
        history.clear()
        first = _parse(_raw(_later(name, 6), seps), schema_id)
        second = _parse(_raw(_later(name, 8), seps), schema_id)
        assert second["messages"][0] is first["messages"][0], seps
    # the same items written otherwise than they were kept: read anew, as they are
    third = _parse(_raw(_later(name, 9)), schema_id)
    assert third["messages"][0] is not second["messages"][0]


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_an_error_in_a_new_item_is_named_at_its_index_in_the_whole_list(history, name):
    schema_id, member = CAPTURES[name]
    _parse(_raw(_later(name, 6)), schema_id)
    bad = _later(name, 8)
    bad[member][-1] = {"role": 42, "content": "x"}
    with pytest.raises(ApiError) as kept:
        translate.parse_body(_raw(bad), schema_id)
    assert history.hits == 1
    history.clear()
    with pytest.raises(ApiError) as whole:
        translate.parse_body(_raw(bad), schema_id)
    assert (kept.value.status, kept.value.message, kept.value.param) == \
        (whole.value.status, whole.value.message, whole.value.param)
    assert str(len(bad[member]) - 1) in (kept.value.param or "") + kept.value.message


def test_kept_items_do_not_hide_a_new_item_nested_too_deep(history):
    name = "codex-0.94-chat-req1.json"
    schema_id = CAPTURES[name][0]
    translate.parse_body(_raw(_later(name, 6)), schema_id, max_depth=30)
    deep = _later(name, 8)
    nested: dict = {}
    for _ in range(40):
        nested = {"a": nested}
    deep["messages"][-1] = {"role": "user", "content": [{"type": "text", "text": "x", "extra": nested}]}
    with pytest.raises(ApiError) as e:
        translate.parse_body(_raw(deep), schema_id, max_depth=30)
    assert history.hits == 1 and "nested deeper than 30 levels" in e.value.message


def test_checks_passed_for_one_schema_are_not_taken_for_another(history):
    """The kept items were valid Responses input; a body of the same items checked against
    another schema is checked whole."""
    name = "codex-0.169-responses-req1.json"
    raw = _raw(_later(name, 6))
    translate.parse_body(raw, "openai/responses.request")
    body = translate.load_json(raw)
    found = history.take(body)
    assert found is not None and found.entry is not None
    assert "openai/responses.request" in found.entry.valid and "openai/chat.request" not in found.entry.valid


def test_a_nested_list_of_the_same_items_reads_as_the_whole_decode(history):
    name = "codex-0.94-chat-req1.json"
    schema_id = CAPTURES[name][0]
    _parse(_raw(_later(name, 6)), schema_id)
    later = _later(name, 6)
    body = {"model": later["model"], "metadata": {"messages": later["messages"]}, **later}
    raw = _raw(body)
    assert raw.find(b'"messages"') < raw.rfind(b'"messages"')  # the nested list comes first
    parsed = translate.load_json(raw)
    # the kept items matched under metadata, where the marker is not the body's list: the body
    # is decoded whole instead
    assert parsed == msgspec.json.decode(raw) and history.hits == 0
    assert MARK not in json.dumps(parsed)


def test_broken_json_after_the_kept_items_is_refused_as_without_them(history):
    name = "codex-0.94-chat-req1.json"
    raw = _raw(_later(name, 6))
    _parse(raw, CAPTURES[name][0])
    broken = raw[:-40]
    with pytest.raises(ApiError) as kept:
        translate.load_json(broken)
    history.clear()
    with pytest.raises(ApiError) as whole:
        translate.load_json(broken)
    assert kept.value.status == whole.value.status == 400 and kept.value.message == whole.value.message


def test_a_write_into_a_request_object_makes_the_memo_start_over(history):
    name = "codex-0.94-chat-req1.json"
    schema_id = CAPTURES[name][0]
    first = _parse(_raw(_later(name, 6)), schema_id)
    program.mutated()
    again = _parse(_raw(_later(name, 6)), schema_id)
    assert history.hits == 0 and again["messages"][0] is not first["messages"][0]


def test_short_bodies_and_one_off_prompts_are_not_kept(history):
    name = "codex-0.94-chat-req1.json"
    schema_id = CAPTURES[name][0]
    _parse(_raw(_body(name)), schema_id)  # a first turn: a few hundred bytes of conversation
    one_off = _body(name)
    one_off["messages"] = [{"role": "user", "content": "x" * 20_000}]
    _parse(_raw(one_off), schema_id)
    assert not history.order and history.misses == 0


def test_the_memo_keeps_its_bounds():
    history = History(max_entries=3, max_bytes=60_000, admission=Admission(every=1))
    for i in range(8):
        body = {"model": "m", "messages": [_turn("messages", k, f"{i}:{_TURN}{k}") for k in range(10)]}
        raw = _raw(body)
        history.learn(msgspec.json.decode(raw), raw)
        assert len(history.order) <= 3 and history.size <= 60_000
        assert history.size == sum(len(e.span) for e in history.order)
        assert sum(len(v) for v in history.by_head.values()) == len(history.order)
    small = History(max_entries=3, max_bytes=100)
    small.learn(msgspec.json.decode(raw), raw)
    assert not small.order and small.size == 0 and not small.by_head


def test_conversations_that_begin_alike_are_told_apart(history):
    """Codex sessions all begin with the same instructions: each finds its own items."""
    name = "codex-0.169-responses-req1.json"
    schema_id = CAPTURES[name][0]
    sessions = []
    for s in range(5):
        body = _later(name, 4)
        body["input"] += [_turn("input", k, f"session {s}: {_TURN}{k}") for k in range(4)]
        sessions.append((body, _parse(_raw(body), schema_id)))
    for s, (body, first) in enumerate(sessions):
        body["input"] += [_turn("input", 9, f"session {s} goes on")]
        later = _parse(_raw(body), schema_id)
        assert all(a is b for a, b in zip(first["input"], later["input"])), s
    # the first turns of sessions 1-4 reused the items they share with an earlier session
    assert history.hits == 4 + 5 and len(history.order) == 5


def test_the_marker_never_reaches_a_body(history):
    name = "codex-0.94-chat-req1.json"
    for turns in (6, 7, 7, 9):
        body = translate.parse_body(_raw(_later(name, turns)), CAPTURES[name][0])
        assert MARK not in json.dumps(body)


def test_items_kept_under_one_nesting_limit_are_checked_again_under_a_lower_one(history):
    name = "codex-0.94-chat-req1.json"
    body = _later(name, 6)
    nested: dict = {}
    for _ in range(20):
        nested = {"a": nested}
    body["messages"][1] = {"role": "user", "content": [{"type": "text", "text": "x", "extra": nested}]}
    raw = _raw(body)
    translate.load_json(raw, max_depth=40)
    translate.load_json(raw, max_depth=40)
    assert history.hits == 1
    with pytest.raises(ApiError) as e:
        translate.load_json(raw, max_depth=20)
    assert history.hits == 2 and "nested deeper than 20 levels" in e.value.message


async def test_serving_a_growing_conversation_sends_what_a_fresh_read_sends(fake_anthropic, fake_openai, tmp_path,
                                                                         monkeypatch):
    """Three turns of each capture's conversation through the running app, streamed and not (and
    stored, for Responses): the upstream gets the same bodies as from a gateway that keeps
    nothing, and every kept value still equals its text."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from conftest import gateway_env
    from engine import config as config_mod
    from engine.catalog import Catalog
    from engine.server.app import create_app
    from support.served import sent_upstream

    routes = {"codex-0.169-responses-req1.json": ("/v1/responses", "claude-sonnet-4-5"),
              "codex-0.94-chat-req1.json": ("/v1/chat/completions", "claude-sonnet-4-5"),
              "claude-code-2.1.332-messages-gpt5-req1.json": ("/v1/messages", "gpt-4o")}

    async def serve(history: History, conversations: int) -> list:
        monkeypatch.setattr(translate, "HISTORY", history)
        env = gateway_env(fake_anthropic, fake_openai, tmp_path)
        env["TOKLIGENCE_HISTORY_MEMO_CONVERSATIONS"] = str(conversations)
        app = create_app(config_mod.load({}, env=env), Catalog.load())
        server = TestServer(app)
        await server.start_server()
        sent = []
        try:
            async with aiohttp.ClientSession() as s:
                for name, (path, model) in sorted(routes.items()):
                    for stream, store in ((False, False), (True, False), (False, True), (True, True)):
                        if store and path != "/v1/responses":
                            continue
                        for turns in (6, 7, 9):
                            body = dict(_later_blocks(name, turns), model=model, stream=stream)
                            if path == "/v1/responses":
                                body["store"] = store
                            upstream = fake_openai if model.startswith("gpt") else fake_anthropic
                            sent.append(await sent_upstream(s, server.make_url(path), _raw(body), upstream))
        finally:
            await server.close()
        return sent

    kept, off = History(), History()
    with_memo = await serve(kept, 64)
    without = await serve(off, 0)  # history_memo_conversations=0: the memo is off
    assert with_memo == without and len(with_memo) == 24
    assert kept.hits >= 10 and (off.hits, off.misses, len(off.order)) == (0, 0, 0)
    for entry in kept.order:
        assert entry.values == msgspec.json.decode(b"[" + entry.span + b"]")


def test_a_schema_that_does_not_judge_items_alone_is_checked_on_the_whole_list(history, monkeypatch):
    name = "codex-0.94-chat-req1.json"
    schema_id = CAPTURES[name][0]
    checked = []
    first_error = schemas.first_error
    monkeypatch.setattr(schemas, "first_error",
                        lambda sid, body: checked.append(len(body["messages"])) or first_error(sid, body))
    raw = _raw(_later(name, 6))
    whole = len(msgspec.json.decode(raw)["messages"])
    translate.parse_body(raw, schema_id)
    translate.parse_body(raw, schema_id)
    assert checked == [whole, 1]  # the kept items left out, their last one kept for minItems
    monkeypatch.setattr(schemas, "items_alone", lambda sid, member: False)
    translate.parse_body(raw, schema_id)
    assert history.hits == 2 and checked[-1] == whole


@pytest.mark.parametrize("member_schema, alone", [
    ({"type": "array", "minItems": 1, "items": {"type": "object"}}, True),
    ({"type": ["string", "array"], "items": {"$ref": "#/$defs/item"}}, True),
    ({"$ref": "#/$defs/list"}, True),
    ({"$ref": "other#/$defs/list"}, True),
    ({"type": "array", "maxItems": 3, "items": {"type": "object"}}, False),
    ({"type": "array", "minItems": 2, "items": {"type": "object"}}, False),
    ({"type": "array", "prefixItems": [{"type": "object"}], "items": {"type": "object"}}, False),
    ({"type": "array", "contains": {"type": "object"}, "items": {"type": "object"}}, False),
    ({"type": "array", "uniqueItems": True, "items": {"type": "object"}}, False),
    ({"type": "array"}, False),
    ({"$ref": "#/$defs/capped"}, False),
])
def test_which_schemas_judge_each_item_alone(monkeypatch, member_schema, alone):
    defs = {"item": {"type": "object"}, "list": {"type": "array", "items": {"type": "object"}},
            "capped": {"type": "array", "maxItems": 2, "items": {"type": "object"}}}
    docs = {"x/req": {"type": "object", "properties": {"messages": member_schema}, "$defs": defs},
            "x/other": {"$defs": defs},
            "x/guarded": {"type": "object", "properties": {"messages": member_schema},
                          "allOf": [{"properties": {"messages": {"maxItems": 3}}}], "$defs": defs}}
    monkeypatch.setattr(schemas, "_load", lambda: schemas._Loaded(documents=docs))
    schemas.items_alone.cache_clear()
    try:
        assert schemas.items_alone("x/req", "messages") is alone
        assert schemas.items_alone("x/guarded", "messages") is False  # a top-level allOf may count them
    finally:
        schemas.items_alone.cache_clear()


SPECS = {"codex-0.169-responses-req1.json": "responses-to-messages/request",
         "codex-0.94-chat-req1.json": "chat-to-messages/request",
         "claude-code-2.1.332-messages-gpt5-req1.json": "messages-to-chat/request"}
CONVERSATION = {"messages-to-chat/request": "template.messages.concat[1]"}  # else defs.conversation.input
SCOPE = {"model": "claude-sonnet-4-5", "cfg": {"default_max_tokens": 4096, "prompt_cache": "auto"}}


def _later_blocks(name: str, turns: int) -> dict:
    """_later, each turn's text in a content block where the client sends blocks (Claude Code)."""
    body = _later(name, turns)
    member = CAPTURES[name][1]
    if member == "messages" and type(_body(name)[member][-1]["content"]) is list:
        for m in body[member]:
            if type(m["content"]) is str:
                m["content"] = [{"type": "text", "text": m["content"]}]
    return body


def _translated(spec, raw: bytes, schema_id: str) -> dict:
    sc = spec.scope(src=_parse(raw, schema_id), **SCOPE)
    assert spec.check(sc) is None
    return spec.template(sc)


def _fresh(spec, raw: bytes) -> dict:
    """The same body translated with nothing kept: a private decode, no shared items."""
    return spec.template(spec.scope(src=json.loads(raw), **SCOPE))


def _marked(member: str, i: int) -> dict:
    """A user turn whose text part carries the client's own cache breakpoint."""
    turn = _turn(member, 2 * i)
    if member == "input":
        turn["content"][0]["cache_control"] = {"type": "ephemeral"}
    else:
        turn["content"] = [{"type": "text", "text": turn["content"], "cache_control": {"type": "ephemeral"}}]
    return turn


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_later_turn_translates_only_its_new_items(history, name):
    """The items kept from the turn before are translated once: the next turn's messages are
    the very objects made for them, and equal a translation with nothing kept."""
    from engine.catalog import Catalog
    spec = Catalog.load().get(SPECS[name])
    schema_id, member = CAPTURES[name]
    outs = []
    for turns in (6, 7, 9):
        raw = _raw(_later_blocks(name, turns))
        outs.append(_translated(spec, raw, schema_id))
        assert outs[-1] == _fresh(spec, raw)
    memo = spec.item_memos[CONVERSATION.get(SPECS[name], "defs.conversation.input")]
    assert memo.roots == () and memo.cache
    assert memo.members == (() if SPECS[name] == "messages-to-chat/request" else ("client_marks",))
    second, third = outs[1]["messages"], outs[2]["messages"]
    # the messages made of earlier turns are the very objects made for them a turn before
    assert sum(a is b for a, b in zip(second[:-2], third)) >= 4


@pytest.mark.parametrize("name", sorted(set(SPECS) - {"claude-code-2.1.332-messages-gpt5-req1.json"}))
def test_a_kept_translation_follows_a_change_of_what_it_is_keyed_on(history, name):
    """An earlier item's own cache breakpoint is sent while the client has at most 4 of them:
    past 4, the kept items are translated again, without theirs."""
    from engine.catalog import Catalog
    spec = Catalog.load().get(SPECS[name])
    schema_id, member = CAPTURES[name]
    body = _later(name, 6)
    body[member].append(_marked(member, 10))
    outs = []
    for extra in (0, 1, 4):
        grown = dict(body, **{member: body[member] + [_marked(member, 11 + k) for k in range(extra)]})
        raw = _raw(grown)
        out = _translated(spec, raw, schema_id)
        assert out == _fresh(spec, raw)
        outs.append(out)

    def marked_blocks(out):
        return [b for m in out["messages"] if type(m["content"]) is list
                for b in m["content"] if "cache_control" in b]
    assert len(marked_blocks(outs[1])) >= 2  # the client's own, kept (4 at most)
    assert len(marked_blocks(outs[2])) == 1  # 5: the client's are left out, the gateway's last one stays


def test_kept_items_are_shared_while_an_entry_holds_them(history):
    """A conversation's items are shared items (what an `each` makes of them is kept) while an
    entry holds them: the entry of the next turn takes them over from the one it replaces."""
    name = "codex-0.94-chat-req1.json"
    schema_id, member = CAPTURES[name]
    first = _parse(_raw(_later(name, 6)), schema_id)[member]
    assert all(program.SHARED_ITEMS[id(x)][0] is x for x in first)
    later = _parse(_raw(_later(name, 7)), schema_id)[member]
    assert later[0] is first[0] and len(history.order) == 1  # the turn before's entry went
    assert all(program.SHARED_ITEMS[id(x)][0] is x for x in later)
    history.clear()
    assert not any(id(x) in program.SHARED_ITEMS for x in later)


def test_an_evicted_conversation_is_no_longer_shared(monkeypatch):
    name = "codex-0.94-chat-req1.json"
    schema_id, member = CAPTURES[name]
    history = History(max_entries=1, admission=Admission(every=1))
    monkeypatch.setattr(translate, "HISTORY", history)
    a = _parse(_raw(_later(name, 6)), schema_id)[member]
    other = {"model": "gpt-x", member: [_turn(member, i, f"{_TURN}another session {i}") for i in range(6)]}
    b = _parse(_raw(other), schema_id)[member]
    assert len(history.order) == 1 and all(id(x) in program.SHARED_ITEMS for x in b)
    assert not any(id(x) in program.SHARED_ITEMS for x in a)
