"""Each custom JMESPath function and named transform, through the same compiler specs use."""
from __future__ import annotations

import pytest

from engine import functions
from engine.expr import compile_expr
from engine.functions import TranslationError, merge_tool_messages, merge_turns


def ev(expr, **scope):
    fn, _ = compile_expr(expr)
    return fn(scope)


def test_from_json_parses_objects_and_empty_is_empty_object():
    assert ev("from_json(a)", a='{"x": [1, 2]}') == {"x": [1, 2]}
    assert ev("from_json(a)", a="") == {}
    assert ev("from_json(a)", a=None) == {}


def test_from_json_rejects_invalid_text():
    with pytest.raises(TranslationError, match="not valid JSON"):
        ev("from_json(a)", a='{"x": ')


def test_to_json_is_compact_and_keeps_unicode_and_order():
    assert ev("to_json(a)", a={"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'


def test_data_url_splits_media_type_and_data():
    assert ev("data_url(u)", u="data:image/png;base64,iVBOR") == {"media_type": "image/png", "data": "iVBOR"}
    assert ev("data_url(u)", u="https://example.com/a.png") is None
    assert ev("data_url(u)", u="data:text/plain,hello") is None  # not base64: not an inline image


def test_clamp_limits_and_keeps_null():
    assert ev("clamp(t, `0`, `1`)", t=1.7) == 1
    assert ev("clamp(t, `0`, `1`)", t=-2) == 0
    assert ev("clamp(t, `0`, `1`)", t=0.3) == 0.3
    assert ev("clamp(t, `0`, `1`)", t=None) is None


def test_get_reads_computed_keys_and_numbers_as_strings():
    assert ev("get(m, k)", m={"3": "x"}, k=3) == "x"
    assert ev("get(m, k)", m={"a": 1}, k="b") is None
    assert ev("get(m, k)", m=None, k="a") is None
    assert ev("get(m, k)", m=True, k="a") is None and ev("get(m, k)", m=[1], k="0") is None


def test_new_id_has_prefix_and_is_random(monkeypatch):
    a, b = ev("new_id('msg_')"), ev("new_id('msg_')")
    assert a.startswith("msg_") and len(a) == 28 and a != b
    monkeypatch.setattr(functions, "random_bytes", lambda n: bytes(range(n)))
    assert ev("new_id('x')") == "x" + functions._ALNUM[:24]


def test_now_uses_the_replaceable_clock(monkeypatch):
    monkeypatch.setattr(functions, "clock", lambda: 1234.9)
    assert ev("now()") == 1234


def test_type_tests():
    assert ev("is_string(a)", a="x") is True and ev("is_string(a)", a=1) is False
    assert ev("is_object(a)", a={}) is True and ev("is_object(a)", a=[]) is False
    assert ev("is_array(a)", a=[]) is True and ev("is_array(a)", a="[]") is False


def test_duplicates_lists_repeated_values_once_each():
    assert ev("duplicates(a)", a=["c1", "c2", "c1", "c3", "c1", "c2"]) == ["c1", "c2"]
    assert ev("duplicates(a)", a=["c1", None, None, "c2"]) == []
    assert ev("duplicates(a)", a=None) == []
    assert ev("duplicates(a[].id)", a=[{"id": "x"}, {"id": "x"}]) == ["x"]


def test_json_or_parses_or_falls_back():
    assert ev("json_or(a, `{}`)", a='{"x": 1}') == {"x": 1}
    assert ev("json_or(a, `{}`)", a='{"x": ') == {}
    assert ev("json_or(a, `{}`)", a="") == {}
    assert ev("json_or(a, `{}`)", a=None) == {}


def test_minus_subtracts_with_null_as_zero():
    assert ev("minus(a, b)", a=10, b=3) == 7
    assert ev("minus(a, b)", a=10, b=None) == 10
    assert ev("minus(a, b)", a=None, b=None) == 0


def test_merge_turns_hands_back_a_turn_it_leaves_as_it_is_and_changes_no_turn_in_place():
    """A kept translation of an earlier turn stays the kept object (written from its kept
    text); merging or reordering works on copies."""
    import copy
    alone = {"role": "user", "content": [{"type": "text", "text": "one"}]}
    first = {"role": "assistant", "content": [{"type": "text", "text": "a"}]}
    second = {"role": "assistant", "content": [{"type": "text", "text": "b"}]}
    ordered = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}, {"type": "text", "text": "x"}]}
    unordered = {"role": "user", "content": [{"type": "text", "text": "y"}, {"type": "tool_result", "tool_use_id": "u"}]}
    msgs = [alone, first, second, ordered, {"role": "assistant", "content": [{"type": "text", "text": "c"}]}, unordered]
    before = copy.deepcopy(msgs)
    out = merge_turns(msgs)
    assert msgs == before  # no turn changed in place
    assert out[0] is alone and out[2] is ordered  # left as they were: the same objects
    assert out[1] is not first and out[1]["content"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert out[4] is not unordered and [b["type"] for b in out[4]["content"]] == ["tool_result", "text"]
    assert merge_turns([{"role": "user", "content": "s"}])[0]["content"] == [{"type": "text", "text": "s"}]


def test_merge_turns_takes_the_turns_made_of_the_last_lists_items_when_a_list_begins_with_them(monkeypatch):
    """A conversation a turn later: the turns made of its earlier items are taken as they were,
    but the last one, which the new items may merge into; the answer is what a fresh merge gives."""
    import copy
    from engine import functions, program
    monkeypatch.setattr(functions, "_MERGED", [])

    def turn(role, text):
        return {"role": role, "content": [{"type": "text", "text": text}]}
    convo = [turn("user" if i % 2 == 0 else "assistant", f"t{i}") for i in range(9)]  # ends on a user turn
    first = merge_turns(convo)
    before = copy.deepcopy(first)
    later = convo + [turn("user", "more"), turn("assistant", "answer")]  # "more" merges into t8's turn
    second = merge_turns(later)
    assert first == before  # nothing it handed out changed
    monkeypatch.setattr(functions, "_MERGED", [])
    assert second == merge_turns(later)
    assert all(x is y for x, y in zip(second[:8], first[:8]))
    assert second[8] is not first[8] and [b["text"] for b in second[8]["content"]] == ["t8", "more"]
    # turns made anew (a string's text block): taken while MUTATIONS holds, made again after
    texts = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"s{i}"} for i in range(9)]
    made = merge_turns(texts)
    again = merge_turns(texts + [turn("assistant", "x")])
    assert again[0] is made[0] and again[0]["content"] == [{"type": "text", "text": "s0"}]
    program.mutated()  # a write into a request's objects: nothing taken
    after = merge_turns(texts + [turn("assistant", "x")])
    assert after == again and after[0] is not again[0]


def test_merge_turns_merges_same_role_and_puts_tool_results_first():
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": [{"type": "text", "text": "again"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                                          {"type": "tool_use", "id": "t2", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "text", "text": "note"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "1"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "2"}]},
        {"role": "assistant", "content": []},
    ]
    out = merge_turns(msgs)
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[0]["content"] == [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]
    assert [b.get("tool_use_id") or b["text"] for b in out[2]["content"]] == ["t1", "t2", "note"]
    assert msgs[0]["content"] == "hi"  # inputs are not mutated


def test_merge_tool_messages_flattens_and_drops_empty_user_turns():
    out = merge_tool_messages([[{"role": "tool", "content": "1"}, {"role": "user", "content": []}],
                               {"role": "user", "content": "x"}, None])
    assert out == [{"role": "tool", "content": "1"}, {"role": "user", "content": "x"}]
