"""A request's `tools` decoded and checked once per distinct text (engine/server/members.py): the
body is the one a whole decode gives, what the checks refuse is refused the same, the kept value
is never changed by serving it, and the memo stays within its bounds."""
from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from engine import program
from engine.server import translate
from engine.server.admission import Admission
from engine.server.api_errors import ApiError
from engine.server.members import MEMBER, Memo, without_member

CLIENTS = Path(__file__).parent / "fixtures" / "clients"
CAPTURES = {  # capture -> (client schema, path, model the default routes translate)
    "codex-0.169-responses-req1.json": ("openai/responses.request", "/v1/responses", "claude-sonnet-4-5"),
    "codex-0.94-chat-req1.json": ("openai/chat.request", "/v1/chat/completions", "claude-sonnet-4-5"),
    "claude-code-2.1.332-messages-gpt5-req1.json": ("anthropic/messages.request", "/v1/messages", "gpt-4o"),
}


def _raw(name: str, **change) -> bytes:
    body = json.loads((CLIENTS / name).read_text())["body"]
    body.update(change)
    return json.dumps(body, ensure_ascii=False).encode()


@pytest.fixture
def memo(monkeypatch):
    fresh = Memo()
    monkeypatch.setattr(translate, "MEMO", fresh)
    yield fresh
    fresh.clear()  # its values leave program.SHARED with it


def _error(raw: bytes, schema_id: str) -> tuple:
    with pytest.raises(ApiError) as e:
        translate.parse_body(raw, schema_id)
    return e.value.status, e.value.message, e.value.param


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_a_split_body_is_the_whole_decode_and_its_tools_are_kept(memo, name):
    raw = _raw(name)
    first, entry = memo.load(raw)
    assert first == msgspec.json.decode(raw) and list(first) == list(msgspec.json.decode(raw))
    again, same = memo.load(raw)
    assert same is entry and again[MEMBER] is first[MEMBER] and again == first
    assert (memo.hits, memo.misses) == (1, 1)


def test_bodies_it_does_not_split():
    memo = Memo()
    tools = [{"type": "function", "name": f"t{i}", "parameters": {"type": "object"}} for i in range(40)]
    assert memo.load(json.dumps({"model": "m", "input": "x" * 4000}).encode()) is None  # no tools
    assert memo.load(json.dumps({"model": "m", "tools": tools[:1]}).encode()) is None  # short body
    assert memo.load(json.dumps({"tools": tools[:1], "input": "x" * 4000}).encode()) is None  # short member
    assert memo.load(json.dumps([{"tools": tools}]).encode()) is None  # not an object
    assert memo.load(b'{"tools": ' + json.dumps(tools).encode() + b', "x": "\\ud800"}') is None  # lone surrogate
    assert memo.load(b'{"tools": ' + json.dumps(tools).encode() + b', "x": NaN}') is None
    assert not memo.entries


def test_duplicate_keys_and_big_integers_read_as_a_whole_decode_reads_them(memo):
    tools = json.dumps([{"type": "function", "name": f"t{i}", "n": 10 ** 30} for i in range(40)]).encode()
    raw = b'{"model": "a", "tools": [], "model": "b", "max": 123456789012345678901234567890, "tools": ' \
        + tools + b', "pad": "' + b"x" * 2048 + b'"}'
    body, _ = memo.load(raw)
    assert body == msgspec.json.decode(raw) and list(body) == list(msgspec.json.decode(raw))
    assert body["max"] == 123456789012345678901234567890 and body[MEMBER][0]["n"] == 10 ** 30


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_known_tools_do_not_hide_an_error_elsewhere_in_the_body(memo, name):
    schema_id = CAPTURES[name][0]
    translate.parse_body(_raw(name), schema_id)  # the tools are now known and valid
    bad = _raw(name, model=42)
    got = _error(bad, schema_id)
    assert memo.hits == 1
    memo.clear()
    assert got == _error(bad, schema_id) and got[2] == "model"


def test_tools_that_failed_are_checked_again_every_time(memo):
    name = "codex-0.94-chat-req1.json"
    body = json.loads((CLIENTS / name).read_text())["body"]
    body["tools"][0]["type"] = 7
    raw = json.dumps(body).encode()
    first = _error(raw, "openai/chat.request")
    assert first == _error(raw, "openai/chat.request") and memo.hits == 1
    assert first[2].startswith("tools[0]")
    assert not next(iter(memo.entries.values())).valid


def test_known_tools_do_not_hide_a_body_nested_too_deep(memo):
    name = "codex-0.169-responses-req1.json"
    translate.parse_body(_raw(name), "openai/responses.request", max_depth=30)
    deep = {}
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(ApiError) as e:
        translate.parse_body(_raw(name, metadata=deep), "openai/responses.request", max_depth=30)
    assert "nested deeper than 30 levels" in e.value.message and memo.hits == 1
    # and tools that are themselves too deep for a lower limit are refused under it
    with pytest.raises(ApiError) as e:
        translate.parse_body(_raw(name), "openai/responses.request", max_depth=4)
    assert "nested deeper than 4 levels" in e.value.message


def test_a_write_into_a_request_object_makes_the_memo_start_over(memo):
    raw = _raw("codex-0.94-chat-req1.json")
    first, entry = memo.load(raw)
    assert memo.entry_of(first[MEMBER]) is entry
    program.mutated()
    assert memo.entry_of(first[MEMBER]) is None
    again, other = memo.load(raw)
    assert other is not entry and again[MEMBER] is not first[MEMBER] and memo.misses == 2


def test_the_memo_keeps_its_bounds():
    memo = Memo(max_entries=3, max_bytes=40_000, admission=Admission(every=1))
    texts = []
    for i in range(6):
        tools = [{"type": "function", "name": f"tool{i}_{k}", "parameters": {"type": "object"}} for k in range(60)]
        raw = json.dumps({"model": "m", "tools": tools}).encode()
        body, entry = memo.load(raw)
        texts.append((raw, body[MEMBER]))
        assert len(memo.entries) <= 3 and memo.size <= 40_000
        assert memo.size == sum(len(t) for t in memo.entries)
        assert set(memo.by_id) == {id(e.value) for e in memo.entries.values()}
    assert memo.entry_of(texts[0][1]) is None and memo.entry_of(texts[-1][1]) is not None
    small = Memo(max_entries=3, max_bytes=100, admission=Admission(every=1))  # a text over the byte bound is not kept
    small.load(texts[0][0])
    assert not small.entries and small.size == 0 and not small.by_id
    # ...nor does it push out those that fit
    kept = list(memo.entries)
    big = [{"type": "function", "name": f"big_{k}", "parameters": {"type": "object"}} for k in range(900)]
    body, entry = memo.load(json.dumps({"model": "m", "tools": big}).encode())
    assert entry is None and body[MEMBER] == big and list(memo.entries) == kept


async def test_serving_never_changes_a_kept_value(fake_anthropic, fake_openai, tmp_path, monkeypatch):
    """Every capture through the running app, streamed and not, three times: the later ones reuse
    the tools, the answers match the first, and every kept value still equals its text."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from conftest import gateway_env
    from engine import config as config_mod
    from engine.catalog import Catalog
    from engine.server.app import create_app
    from support.served import sent_upstream

    memo = Memo()
    monkeypatch.setattr(translate, "MEMO", memo)
    app = create_app(config_mod.load({}, env=gateway_env(fake_anthropic, fake_openai, tmp_path)), Catalog.load())
    server = TestServer(app)
    await server.start_server()
    sent: dict = {}
    try:
        async with aiohttp.ClientSession() as s:
            for name, (_, path, model) in sorted(CAPTURES.items()):
                for stream in (False, True):
                    raw = _raw(name, model=model, stream=stream, store=False) if "responses" in name \
                        else _raw(name, model=model, stream=stream)
                    for turn in range(3):
                        upstream = fake_openai if model.startswith("gpt") else fake_anthropic
                        body = await sent_upstream(s, server.make_url(path), raw, upstream)
                        sent.setdefault((name, stream), body)
                        assert body == sent[(name, stream)]
    finally:
        await server.close()
    assert memo.hits >= 12 and memo.entries
    for text, entry in memo.entries.items():
        assert entry.value == msgspec.json.decode(text)


def test_an_echoed_kept_value_is_written_from_text_kept_once(memo):
    from engine import serialize
    from engine.jsontext import dumps

    body, entry = memo.load(_raw("codex-0.169-responses-req1.json"))
    tools = body[MEMBER]
    assert program.SHARED[id(tools)][1] is None
    assert serialize.enc(tools) == dumps(tools) == program.SHARED[id(tools)][1]
    wide = {f"k{i}": i for i in range(20)} | {"tools": tools}
    assert program.Echo(body).dumps(wide) == dumps(wide)
    # a value some rule may have changed is written afresh, and the memo lets it go
    program.mutated()
    assert program.shared_text(tools) is None
    tools.append({"type": "function", "name": "changed"})
    assert serialize.enc(tools) == dumps(tools) != program.SHARED[id(tools)][1]
    memo.load(_raw("codex-0.94-chat-req1.json"))
    assert id(tools) not in program.SHARED


def test_values_the_memo_lets_go_are_no_longer_shared():
    memo = Memo(max_entries=1, admission=Admission(every=1))
    first, _ = memo.load(_raw("codex-0.94-chat-req1.json"))
    assert id(first[MEMBER]) in program.SHARED
    second, _ = memo.load(_raw("codex-0.169-responses-req1.json"))
    assert id(first[MEMBER]) not in program.SHARED and id(second[MEMBER]) in program.SHARED
    memo.clear()
    assert id(second[MEMBER]) not in program.SHARED


def test_an_answer_holding_a_shared_value_encodes_to_the_same_bytes(memo):
    from engine.jsontext import dumpb
    from engine.server.members import shared_members

    body, _ = memo.load(_raw("codex-0.169-responses-req1.json"))
    answer = {"id": "resp_1", "tools": body[MEMBER], "text": {"format": {"type": "text"}}}
    swapped = shared_members(answer)
    assert swapped is not answer and type(swapped["tools"]) is msgspec.Raw and answer["tools"] is body[MEMBER]
    assert dumpb(swapped) == dumpb(answer)
    plain = {"id": "resp_2", "tools": json.loads(json.dumps(body[MEMBER]))}
    assert shared_members(plain) is plain


def test_texts_of_the_same_length_are_told_apart():
    memo = Memo()
    bodies = []
    for name in ("alpha", "bravo"):  # same length, other text
        tools = [{"type": "function", "name": f"{name}{k:02d}", "parameters": {"type": "object"}} for k in range(40)]
        bodies.append(json.dumps({"model": "m", "tools": tools}).encode())
    assert len(bodies[0]) == len(bodies[1])
    a, ea = memo.load(bodies[0])
    b, eb = memo.load(bodies[1])
    assert ea is not eb and a[MEMBER][0]["name"] == "alpha00" and b[MEMBER][0]["name"] == "bravo00"
    assert memo.load(bodies[0])[1] is ea and memo.load(bodies[1])[1] is eb and memo.hits == 2
    assert len(memo.by_len) == 1 and len(next(iter(memo.by_len.values()))) == 2


def test_every_kept_text_is_found_without_splitting_the_body(monkeypatch):
    """However many texts are kept and however the client spaces its JSON, a body whose tools
    are one of them is read around them: the split that would otherwise find them never runs."""
    from engine.server import members
    memo = Memo()
    # as clients of one kind send them: the same first tools, then their own
    sets = [[{"type": "function", "name": f"t{k}", "parameters": {"type": "object"}} for k in range(30)]
            + [{"type": "function", "name": f"client{i}", "parameters": {"type": "object"}}] for i in range(8)]
    bodies = [json.dumps({"model": "m", "input": "hi", "tools": t}).encode() for t in sets]
    entries = [memo.load(b)[1] for b in bodies]
    assert memo.misses == 8

    def no_split(raw):
        raise AssertionError("the body was split")
    monkeypatch.setattr(members, "_split", no_split)
    for body, entry in zip(bodies, entries):  # the oldest first: seven texts were kept after it
        got, found = memo.load(body)
        assert found is entry and got == msgspec.json.decode(body) and got[MEMBER] is entry.value
    text = entries[0].text
    for spaced in (b'{"model": "m", "tools" :\n\t ' + text + b' , "input": "' + b"x" * 2048 + b'"}',
                   b'{"tools":' + text + b',"model":"m","input":"' + b"x" * 2048 + b'"}'):
        got, found = memo.load(spaced)
        assert found is entries[0] and got == msgspec.json.decode(spaced)
    assert memo.hits == 10 and memo.misses == 8
    # the texts begin alike: the one used last is looked at first
    alike = memo.by_head[text[:members.HEAD]]
    assert len(alike) == 8 and alike[-1] is entries[0]
    memo.load(bodies[3])
    assert alike[-1] is entries[3]


def test_an_each_keeps_lists_for_every_kept_text_and_as_many_again():
    """A full members memo takes in one text for one it lets go: the lists of those let go wait
    for a prune, beside those of the texts kept (test_item_memo.py)."""
    from engine import program
    from engine.nodes import ItemMemo
    from engine.server import members
    assert members.MAX_ENTRIES == program.KEPT_TEXTS and ItemMemo.LISTS == 2 * program.KEPT_TEXTS
    assert ItemMemo.LIMIT >= 128 * program.KEPT_TEXTS  # every tool of every kept text


@pytest.mark.parametrize("shape", ["nested", "other_key", "duplicate_first", "duplicate_last", "twice"])
def test_a_kept_text_found_elsewhere_in_a_body_reads_as_the_whole_decode(shape):
    memo = Memo()
    raw = _raw("codex-0.94-chat-req1.json")
    known, entry = memo.load(raw)
    text = entry.text
    other = json.dumps([{"type": "function", "function": {"name": f"other{k}"}} for k in range(30)]).encode()
    bodies = {
        "nested": b'{"model": "m", "metadata": {"copy": ' + text + b'}, "tools": ' + other + b'}',
        "other_key": b'{"model": "m", "tools_before": ' + text + b', "tools": ' + other + b'}',
        "duplicate_first": b'{"model": "m", "tools": ' + text + b', "tools": ' + other + b'}',
        "duplicate_last": b'{"model": "m", "tools": ' + other + b', "tools": ' + text + b'}',
        "twice": b'{"model": "m", "metadata": {"copy": ' + text + b'}, "tools": ' + text + b'}',
    }
    body = bodies[shape]
    got, got_entry = memo.load(body)
    assert got == msgspec.json.decode(body) and list(got) == list(msgspec.json.decode(body))
    assert (got[MEMBER] is known[MEMBER]) == (shape in ("duplicate_last", "twice"))
    assert (got_entry is entry) == (shape in ("duplicate_last", "twice"))


def test_a_body_with_a_kept_text_that_msgspec_refuses_goes_to_the_whole_decode_path():
    memo = Memo()
    raw = _raw("codex-0.94-chat-req1.json")
    memo.load(raw)
    bad = raw[:-1] + b', "x": NaN}'
    assert memo.load(bad) is None
    with pytest.raises(ApiError) as e:
        translate.load_json(bad)
    assert e.value.status == 400


def test_key_positions_gives_every_key_once_the_front_first_then_from_the_end():
    from engine.server import members
    key, front = members.MEMBER_KEY, members.FRONT
    for starts in ([], [0], [5, 100], [front - len(key)], [front - len(key) + 1], [front - 1, front],
                   [3, front - 4, front + 50, 9000, 20000 - len(key)]):
        raw = bytearray(b"x" * 20000)
        for s in starts:
            raw[s:s + len(key)] = key
        raw = bytes(raw)
        every = sorted(i for i in range(len(raw)) if raw.startswith(key, i))
        got = list(members._key_positions(raw))
        head = [i for i in every if i + len(key) <= front]
        assert got == head + sorted(set(every) - set(head), reverse=True), starts


def test_tools_after_a_long_conversation_are_found_without_splitting(monkeypatch, memo):
    """A later request of a session: its tools come after 150 KB of conversation, in which
    messages may hold a `"tools":` key of their own, before and after the kept text."""
    from engine.server import members
    raw = _raw("codex-0.94-chat-req1.json")
    known, entry = memo.load(raw)
    body = json.loads(raw)
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "a turn of the session " * 100}
             for i in range(70)]
    nested = {"role": "user", "content": [{"type": "text", "text": "x"}], "tools": [{"type": "function"}]}
    later = dict(body, messages=[nested, *turns, nested, *body["messages"]])
    later["metadata"] = {"tools": [1, 2]}  # after the tools: looked at first, and passed over
    text = json.dumps(later, ensure_ascii=False).encode()
    assert len(text) > 150_000 and text.rfind(members.MEMBER_KEY) > text.find(entry.text)

    def no_split(raw):
        raise AssertionError("the body was split")
    monkeypatch.setattr(members, "_split", no_split)
    got, found = memo.load(text)
    assert found is entry and got[MEMBER] is known[MEMBER] and got == msgspec.json.decode(text)


def _client_tools(i: int) -> bytes:
    tools = [{"type": "function", "name": f"tool_{k}", "description": f"client {i}", "parameters": {"type": "object"}}
             for k in range(40)]
    return json.dumps({"model": "m", "tools": tools}).encode()


def test_a_full_memo_learns_one_new_text_in_every():
    """More clients with tools of their own than the memo holds, in turn: learning every text,
    it let each go before it came back; learning one in `every`, it keeps most of what it holds
    until it comes back (engine/server/admission.py)."""
    counts = {}
    for every in (1, 8):
        memo = Memo(max_entries=4, admission=Admission(every))
        for _ in range(12):
            for i in range(12):
                body, entry = memo.load(_client_tools(i))
                assert body == json.loads(_client_tools(i))
        full = memo.admission.full_misses
        counts[every] = (memo.hits, memo.misses - (full - full // every))  # (reused, learned)
        memo.clear()
    assert counts[1] == (0, 144)
    hits, learned = counts[8]
    assert hits > learned  # each text learned was reused, on average


def test_a_stale_text_makes_room_at_once():
    now = [0.0]
    memo = Memo(max_entries=1, admission=Admission(100, stale_after=60.0, clock=lambda: now[0]))
    first, _ = memo.load(_client_tools(0))
    now[0] = 50.0
    assert memo.load(_client_tools(0))[1] is not None  # reused: used 50 s after it was learned
    now[0] = 70.0
    _, entry = memo.load(_client_tools(1))
    assert entry is None and memo.entry_of(first[MEMBER]) is not None  # used 20 s ago: not stale
    now[0] = 111.0
    second, entry = memo.load(_client_tools(2))
    assert entry is not None and memo.entry_of(first[MEMBER]) is None and memo.entry_of(second[MEMBER]) is entry


def test_without_member_is_a_copy_without_the_tools():
    tools = [{"type": "function", "name": "f"}]
    body = {"model": "m", MEMBER: tools, "input": "hi", "store": False}
    out = without_member(body)
    assert out == {"model": "m", "input": "hi", "store": False}
    assert list(out) == ["model", "input", "store"]  # the order of the rest kept
    assert body == {"model": "m", MEMBER: tools, "input": "hi", "store": False} and body[MEMBER] is tools
    assert without_member({"model": "m"}) == {"model": "m"}
