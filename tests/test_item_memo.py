"""An `each` over shared items (a client's tools, sent again with every request) keeps what its
body made of each item (nodes.ItemMemo): which bodies the compiler lets keep it, and that a kept
value is always what the body would make now."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import msgspec
import pytest

from engine import program
from engine.catalog import Catalog
from engine.jsontext import dumpb
from engine.server.members import shared_members
from engine.program import share, unshare
from test_compiler import compile_text

CLIENTS = Path(__file__).parent / "fixtures" / "clients"

ANALYSED = """
helpers: [new_id]
defs:
  reads_vars: {n: vars.k}
  reads_item: {n: t.name}
  reads_param: {n: label}
vars:
  k: src.k
template:
  item_and_profile: {each: src.xs, as: t, map: {n: t.name, p: profile.strict_tools, c: cfg.c, m: model}}
  reads_a_var: {each: src.xs, as: t, map: {n: t.name, k: vars.k}}
  reads_vars_whole: {each: src.xs, as: t, map: {n: t.name, k: "keys(vars)"}}
  reads_the_request: {each: src.xs, as: t, map: {n: t.name, k: src.k}}
  volatile: {each: src.xs, as: t, map: {id: "new_id('x_')"}}
  var_through_a_block: {each: src.xs, as: t, map: {use: reads_vars}}
  item_through_a_block: {each: src.xs, as: t, map: {use: reads_item}}
  bound_block_param: {each: src.xs, as: t, map: {use: reads_param, with: {label: t.name}}}
  nested:
    each: src.xs
    as: t
    map: {n: t.name, ys: {each: t.ys, as: y, map: {y: y, n: t.name}}}
  indexed: {each: src.xs, as: t, index: i, map: {n: t.name, i: i}}
  shadowed:
    each: src.xs
    as: t
    map: {k: src.k, inner: {each: t.ys, as: src, map: {v: src}}}
"""

REBOUND = """
defs:
  profiled: {each: src.xs, as: t, map: {p: profile.strict_tools}}
template:
  rebound: {use: profiled, with: {profile: src.other}}
"""


def _roots(spec) -> dict:
    return {path: memo.roots for path, memo in spec.item_memos.items()}


def test_only_a_body_reading_its_item_and_stable_names_keeps_its_values():
    spec, errors = compile_text(ANALYSED)
    assert not errors, "\n".join(map(str, errors))
    roots = _roots(spec)
    assert roots["template.item_and_profile"] == ("cfg", "model", "profile")
    assert roots["template.item_through_a_block"] == ()
    assert roots["template.bound_block_param"] == ()
    assert roots["template.nested"] == ()
    # a member of vars is a key too: its value, read when the `each` runs
    assert roots["template.reads_a_var"] == () and spec.item_memos["template.reads_a_var"].members == ("k",)
    assert roots["template.var_through_a_block"] == ()
    assert spec.item_memos["template.var_through_a_block"].members == ("k",)
    assert spec.item_memos["template.item_and_profile"].members == ()
    # vars read whole, a name of the request, or new_id: never kept
    assert roots["template.reads_vars_whole"] is None
    assert roots["template.reads_the_request"] is None
    assert roots["template.volatile"] is None
    assert roots["template.nested.map.ys"] is None  # reads the outer item
    # `as: src` inside the body hides the scope's src from the analysis: not kept
    assert roots["template.shadowed"] is None
    # with an index, a value is kept for the item at its place
    assert roots["template.indexed"] == ()


def test_a_stable_name_some_with_binds_is_not_a_key():
    """A name a `with` binds is a local in generated code, not the scope the key is read from."""
    spec, errors = compile_text(REBOUND)
    assert not errors, "\n".join(map(str, errors))
    assert _roots(spec) == {"defs.profiled": None}


RECURSIVE = """
defs:
  part:
    switch: b.type
    cases:
      doc: {each: b.parts, as: b, flatten: true, map: {use: part}}
      text: [{t: b.text, k: vars.k}]
  # src bound to a constant for the first level only: a nested document reads the request's
  pinned: {use: walk, with: {src: {const: {k: 0}}}}
  walk:
    switch: b.type
    cases:
      doc: {each: b.parts, as: b, flatten: true, map: {use: walk}}
      text: [{t: b.text, k: src.k}]
vars:
  k: src.k
template:
  parts: {each: src.xs, as: b, flatten: true, map: {use: part}}
  leaky: {each: src.xs, as: b, flatten: true, map: {use: pinned}}
"""


def test_a_block_that_uses_itself_is_read_through_whole(shared):
    """A document inside a document: the block reached again counts with all it reads."""
    spec, errors = compile_text(RECURSIVE)
    assert not errors, "\n".join(map(str, errors))
    assert _roots(spec)["template.parts"] == () and spec.item_memos["template.parts"].members == ("k",)
    assert _roots(spec)["template.leaky"] is None  # the request's src, read one document down
    xs = shared([{"type": "doc", "parts": [{"type": "text", "text": "a"}, {"type": "doc", "parts": [
        {"type": "text", "text": "b"}]}]}, {"type": "text", "text": "c"}, {"type": "text", "text": "d"}])
    first = _apply(spec, {"xs": xs, "k": 1})["parts"]
    assert first == [{"t": "a", "k": 1}, {"t": "b", "k": 1}, {"t": "c", "k": 1}, {"t": "d", "k": 1}]
    assert _apply(spec, {"xs": xs, "k": 1})["parts"][0] is first[0]
    assert _apply(spec, {"xs": xs, "k": 2})["parts"][0] == {"t": "a", "k": 2}


def _apply(spec, body, **scope):
    sc = spec.scope(src=body, **scope)
    assert spec.check(sc) is None
    return spec.template(sc)


@pytest.fixture
def shared():
    kept = []

    def make(value):
        share(value)
        kept.append(value)
        return value
    yield make
    for v in kept:
        unshare(v)


def test_kept_values_are_reused_only_while_item_key_and_mutations_hold(shared):
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, map: {n: t.name, p: profile.strict_tools}}}")
    assert not errors
    xs = shared([{"name": "a"}, {"name": "b"}])
    profile = {"strict_tools": True}
    first = _apply(spec, {"xs": xs}, profile=profile)["out"]
    again = _apply(spec, {"xs": xs}, profile=profile)["out"]
    assert again == first == [{"n": "a", "p": True}, {"n": "b", "p": True}]
    assert all(x is y for x, y in zip(again, first))  # from the memo

    other = _apply(spec, {"xs": xs}, profile={"strict_tools": False})["out"]  # another key: made anew
    assert other == [{"n": "a", "p": False}, {"n": "b", "p": False}]

    program.mutated()  # a stream rule wrote into a request: nothing kept is trusted
    after = _apply(spec, {"xs": xs}, profile=profile)["out"]
    assert after == first and not any(x is y for x, y in zip(after, first))


def test_a_kept_value_is_keyed_on_the_members_of_vars_its_body_reads(shared):
    spec, errors = compile_text("""
    vars: {k: src.k, other: src.other}
    template: {out: {each: src.xs, as: t, map: {n: t.name, k: vars.k}}}
    """)
    assert not errors
    assert spec.item_memos["template.out"].members == ("k",)
    xs = shared([{"name": "a"}, {"name": "b"}])
    first = _apply(spec, {"xs": xs, "k": 1, "other": 1})["out"]
    again = _apply(spec, {"xs": xs, "k": 1, "other": 2})["out"]  # a member it does not read
    assert again == first == [{"n": "a", "k": 1}, {"n": "b", "k": 1}]
    assert all(x is y for x, y in zip(again, first))
    changed = _apply(spec, {"xs": xs, "k": 2, "other": 2})["out"]
    assert changed == [{"n": "a", "k": 2}, {"n": "b", "k": 2}]


def test_with_an_index_a_kept_value_is_keyed_on_the_items_place(shared):
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, index: i, map: {n: t.name, i: i}}}")
    assert not errors
    a, b = {"name": "a"}, {"name": "b"}
    both = shared([a, b])
    first = _apply(spec, {"xs": both})["out"]
    assert first == [{"n": "a", "i": 0}, {"n": "b", "i": 1}]
    assert all(x is y for x, y in zip(_apply(spec, {"xs": both})["out"], first))
    moved = shared([b, a])  # the same items, in other places
    assert _apply(spec, {"xs": moved})["out"] == [{"n": "b", "i": 0}, {"n": "a", "i": 1}]


def test_a_list_that_begins_with_the_last_one_takes_what_was_made_of_it(shared, monkeypatch):
    """A conversation a turn later: the values made for the last list's items are taken as they
    are (the list compared whole), its last item rewritten or not; anything else maps as usual."""
    from engine.nodes import ItemMemo
    monkeypatch.setattr(ItemMemo, "RUN", 3)
    spec, errors = compile_text("""
    vars: {k: src.k}
    template: {out: {each: src.xs, as: t, flatten: true, map: {use: twice}}}
    defs:
      twice: {when: "t.name != 'skip'", value: [{n: t.name, k: vars.k}, {n: t.name}]}
    """)
    assert not errors
    memo = spec.item_memos["template.out"]
    a, b, skip, c = ({"name": n} for n in ("a", "b", "skip", "c"))
    turn1 = shared([a, b, skip, c])
    first = _apply(spec, {"xs": turn1, "k": 1})["out"]
    assert first == [{"n": "a", "k": 1}, {"n": "a"}, {"n": "b", "k": 1}, {"n": "b"}, {"n": "c", "k": 1}, {"n": "c"}]
    memo.cache.clear()  # from here on, only the comparison with the last list can give kept values
    d = {"name": "d"}
    turn2 = shared([a, b, skip, c, d])
    second = _apply(spec, {"xs": turn2, "k": 1})["out"]
    assert second[:6] == first and all(x is y for x, y in zip(second, first))
    assert second[6:] == [{"n": "d", "k": 1}, {"n": "d"}]
    c2 = {"name": "c2"}  # the last item rewritten: made anew, the ones before taken
    turn3 = shared([a, b, skip, c, c2, {"name": "e"}])
    third = _apply(spec, {"xs": turn3, "k": 1})["out"]
    assert all(x is y for x, y in zip(third[:6], second[:6])) and third[6:8] == [{"n": "c2", "k": 1}, {"n": "c2"}]
    # another key, or another list: mapped as usual
    other = _apply(spec, {"xs": turn3, "k": 2})["out"]
    assert other[0] == {"n": "a", "k": 2}
    fresh = shared([{"name": "x"}, {"name": "y"}, {"name": "z"}])
    assert _apply(spec, {"xs": fresh, "k": 2})["out"][0] == {"n": "x", "k": 2}
    program.mutated()  # a write into a request's objects: nothing taken from the last list
    after = _apply(spec, {"xs": turn3, "k": 2})["out"]
    assert after == other and after[0] is not other[0]


def test_a_full_memo_lets_go_of_items_no_longer_shared_before_starting_over(shared, monkeypatch):
    """Many clients' tools in turn: a tools text the members memo let go of leaves room for the
    next, and the items still shared keep their values."""
    from engine.nodes import ItemMemo
    monkeypatch.setattr(ItemMemo, "LIMIT", 4)
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, map: {n: t.name}}}")
    assert not errors
    live = shared([{"name": "a"}, {"name": "b"}])
    gone = [{"name": "c"}, {"name": "d"}]
    share(gone)
    first = _apply(spec, {"xs": live})["out"]
    _apply(spec, {"xs": gone})
    unshare(gone)  # its text left the members memo
    _apply(spec, {"xs": shared([{"name": "e"}])})  # the memo is full: c and d make room
    again = _apply(spec, {"xs": live})["out"]
    assert again == first and all(x is y for x, y in zip(again, first))
    # when every kept item is still shared, a new one starts the memo over
    _apply(spec, {"xs": shared([{"name": "f"}, {"name": "g"}])})
    after = _apply(spec, {"xs": live})["out"]
    assert after == first and not any(x is y for x, y in zip(after, first))


def test_what_was_made_of_items_no_longer_shared_goes_long_before_the_memo_is_full(monkeypatch):
    """Conversations the history memo let go: their turns' values go once the memo holds more
    than twice as many values as there are shared items (and SLACK more), not at LIMIT."""
    from engine import nodes
    from engine.nodes import ItemMemo
    fresh: dict = {}
    monkeypatch.setattr(program, "SHARED_ITEMS", fresh)
    monkeypatch.setattr(nodes, "SHARED_ITEMS", fresh)
    monkeypatch.setattr(ItemMemo, "SLACK", 2)
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, map: {n: t.name}}}")
    assert not errors
    memo = next(iter(spec.item_memos.values()))
    for k in range(10):
        xs = [{"name": f"{k}-{i}"} for i in range(4)]
        share(xs)
        assert _apply(spec, {"xs": xs})["out"] == [{"n": f"{k}-{i}"} for i in range(4)]
        assert _apply(spec, {"xs": xs})["out"][0] is _apply(spec, {"xs": xs})["out"][0]  # kept meanwhile
        unshare(xs)
        assert len(memo.cache) <= 2 * 4 + 2 + 4  # never the 40 values made in all
    assert len(memo.cache) < 40 <= ItemMemo.LIMIT


def test_a_full_memo_of_lists_lets_go_of_lists_no_longer_shared_first(shared, monkeypatch):
    from engine.nodes import ItemMemo
    monkeypatch.setattr(ItemMemo, "LISTS", 2)
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, map: {n: t.name}}}")
    assert not errors
    memo = next(iter(spec.item_memos.values()))
    live = shared([{"name": "a"}])
    gone = [{"name": "b"}]
    share(gone)
    first = _apply(spec, {"xs": live})["out"]
    _apply(spec, {"xs": gone})
    unshare(gone)
    _apply(spec, {"xs": shared([{"name": "c"}])})  # two lists kept: the one no longer shared goes
    assert len(memo.lists) == 2 and _apply(spec, {"xs": live})["out"] is first
    _apply(spec, {"xs": shared([{"name": "d"}])})  # both still shared: the memo starts over
    assert len(memo.lists) == 1 and _apply(spec, {"xs": live})["out"] is not first


def test_a_client_taking_another_ones_place_in_the_members_memo_keeps_the_others_lists(shared):
    """The members memo keeps KEPT_TEXTS tools texts and, full, lets one go for each it learns
    (admission.py): the lists made of the others' tools stay kept, not started over."""
    from engine.program import KEPT_TEXTS
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, map: {n: t.name}}}")
    assert not errors
    clients = [shared([{"name": f"tool of client {i}"}]) for i in range(KEPT_TEXTS)]
    made = [_apply(spec, {"xs": xs})["out"] for xs in clients]
    for i in range(8):  # one client gone, a new one in its place, eight times
        unshare(clients[i])
        _apply(spec, {"xs": shared([{"name": f"tool of new client {i}"}])})
    assert all(_apply(spec, {"xs": clients[i]})["out"] is made[i] for i in range(8, KEPT_TEXTS))


def test_items_not_shared_are_mapped_every_time(shared):
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, map: {n: t.name}}}")
    assert not errors
    xs = [{"name": "a"}]
    first = _apply(spec, {"xs": xs})["out"]
    again = _apply(spec, {"xs": xs})["out"]
    assert first == again == [{"n": "a"}] and first[0] is not again[0]
    # a filter's new list of shared items still finds them kept
    ys = shared([{"name": "a", "keep": True}, {"name": "b"}])
    spec, errors = compile_text("template: {out: {each: 'src.ys[?keep]', as: t, map: {n: t.name}}}")
    assert not errors
    one = _apply(spec, {"ys": ys})["out"]
    two = _apply(spec, {"ys": ys})["out"]
    assert one == two == [{"n": "a"}] and one[0] is two[0]


def test_a_kept_value_is_written_from_its_kept_text_while_it_is_kept(shared):
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, map: {n: t.name, big: 12345678901234567890123}}}")
    assert not errors
    xs = shared([{"name": "a"}, {"name": "é\u2028"}])
    out = _apply(spec, {"xs": xs})["out"]
    mixed = out + [{"n": "new"}]  # a last item made anew (a cache breakpoint merged into it)
    raw = program.shared_list_raw(mixed)
    assert bytes(raw) == dumpb(mixed)
    # the first or the middle item decides (a conversation's first turns may be merged anew)
    later = [{"n": "new"}] + out
    assert bytes(program.shared_list_raw(later)) == dumpb(later)
    assert program.shared_list_raw([{"n": "new"}, {"n": "new too"}, out[0]]) is None
    assert dumpb(shared_members({"tools": mixed, "model": "m"})) == dumpb({"tools": mixed, "model": "m"})

    # the memo starting over gives its values' texts up
    assert all(id(v) in program.SHARED for v in out)
    next(iter(spec.item_memos.values())).clear()
    assert not any(id(v) in program.SHARED for v in out)
    assert program.shared_list_raw(mixed) is None

    again = _apply(spec, {"xs": xs})["out"]
    assert program.shared_list_raw(again) is not None
    program.mutated()  # nothing kept is trusted after a write into a request
    assert program.shared_list_raw(again) is None


def test_an_each_over_a_shared_list_keeps_the_list_it_made(shared):
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, map: {n: t.name, p: profile.sampling}}}")
    assert not errors
    xs = shared([{"name": "a"}, {"name": "b"}])
    first = _apply(spec, {"xs": xs}, profile={"sampling": 1})["out"]
    assert _apply(spec, {"xs": xs}, profile={"sampling": 1})["out"] is first  # the same list
    assert program.shared_text(first) == json.dumps(first, separators=(",", ":"))
    other = _apply(spec, {"xs": xs}, profile={"sampling": 2})["out"]  # another key: made anew
    assert other is not first and other == [{"n": "a", "p": 2}, {"n": "b", "p": 2}]
    assert id(first) not in program.SHARED  # the list it replaced is given up
    assert _apply(spec, {"xs": list(xs)}, profile={"sampling": 2})["out"] is not other  # a copy: not the kept list
    program.mutated()
    assert _apply(spec, {"xs": xs}, profile={"sampling": 2})["out"] is not other


FILTERS = """
helpers: [new_id]
template:
  functions: "src.xs[?type=='function']"
  names: "src.xs[?type=='function'].name"
  chained: "src.xs[?type=='function'] | [?strict]"
  count: "length(src.xs[?strict] || `[]`)"
  volatile: "src.xs[?type=='function'].join('', [name, new_id('x_')])"
  mapped: {each: "src.xs[?type=='function']", as: t, map: {n: t.name}}
  alone: {concat: ["src.xs[?type=='function']", src.missing]}
  two: {concat: ["src.xs[?type=='function']", "src.xs[?type=='custom']"]}
"""


def test_a_filter_over_a_shared_list_keeps_what_it_made(shared):
    import jmespath
    spec, errors = compile_text(FILTERS)
    assert not errors, errors
    xs = shared([{"type": "function", "name": "a", "strict": True}, {"type": "custom", "name": "b"},
                 {"type": "function", "name": "c"}])
    first = _apply(spec, {"xs": xs})
    for key, text in (("functions", "xs[?type=='function']"), ("names", "xs[?type=='function'].name"),
                      ("chained", "xs[?type=='function'] | [?strict]")):
        assert first[key] == jmespath.search(text, {"xs": xs})  # what the interpreter gives
    assert first["count"] == 1 and first["mapped"] == [{"n": "a"}, {"n": "c"}]
    again = _apply(spec, {"xs": xs})
    assert first["alone"] == first["functions"] and first["two"] == [xs[0], xs[2], xs[1]]
    for key in ("functions", "names", "chained", "mapped", "alone"):
        assert again[key] is first[key], key  # kept; an each over a kept filter keeps its list, so does a concat of it alone
    assert again["two"] is not first["two"]  # two lists joined: a new list
    assert again["volatile"] is not first["volatile"] and again["volatile"] != first["volatile"]

    copy_ = _apply(spec, {"xs": [dict(x) for x in xs]})  # not shared: made every time
    assert copy_["functions"] == first["functions"] and copy_["functions"] is not first["functions"]

    program.mutated()  # a write into a request: nothing kept is trusted
    assert _apply(spec, {"xs": xs})["functions"] is not first["functions"]


def test_a_filter_result_goes_with_its_list(shared):
    spec, errors = compile_text("template: {f: \"src.xs[?k]\", g: \"src.xs[?k] | [?j]\"}")
    assert not errors
    xs = shared([{"k": True, "j": 1}, {"k": False}])
    out = _apply(spec, {"xs": xs})
    assert out == {"f": [xs[0]], "g": [xs[0]]}
    # xs, and the first filter's list in g (each filter keeps its own), which the second filtered
    chain = [base for base, sites in program.FILTERED.items() if any(v[0] is xs for v in sites.values())]
    assert chain == [id(xs)] and len(program.FILTERED[id(xs)]) == 2
    inner = next(v[2] for v in program.FILTERED[id(xs)].values() if v[2] is not out["f"])
    assert program.FILTERED[id(inner)] and id(out["g"]) in program.SHARED
    unshare(xs)
    assert id(xs) not in program.FILTERED and id(inner) not in program.FILTERED
    assert id(out["f"]) not in program.SHARED and id(out["g"]) not in program.SHARED
    assert _apply(spec, {"xs": xs})["f"] is not out["f"]


def test_an_unshared_value_is_no_longer_kept(shared):
    spec, errors = compile_text("template: {out: {each: src.xs, as: t, map: {n: t.name}}}")
    assert not errors
    xs = shared([{"name": "a"}])
    first = _apply(spec, {"xs": xs})["out"]
    unshare(xs)
    again = _apply(spec, {"xs": xs})["out"]
    assert again == first and again[0] is not first[0]


CAPTURES = [
    ("responses-to-messages/request", "codex-0.169-responses-req1.json", "claude-sonnet-4-5"),
    ("chat-to-messages/request", "codex-0.94-chat-req1.json", "claude-sonnet-4-5"),
    ("messages-to-chat/request", "claude-code-2.1.197-messages-req1.json", "gpt-5"),
]


@pytest.mark.parametrize("name,capture,model", CAPTURES)
def test_real_client_tools_translate_the_same_kept_or_not(name, capture, model, shared):
    """The shipped request specs keep what they make of a client's tools; the upstream body is
    the same with the tools shared (three turns) as with a private copy."""
    catalog = Catalog.load()
    spec = catalog.get(name)
    assert any(m.roots is not None for p, m in spec.item_memos.items() if "tool" in p)
    body = json.loads((CLIENTS / capture).read_text())["body"]
    scope = {"model": model, "cfg": {"default_max_tokens": 4096, "prompt_cache": "auto"}}
    fresh = _apply(spec, copy.deepcopy(body), **scope)
    kept = dict(body, tools=shared(body["tools"]))
    turns = [_apply(spec, kept, **scope) for _ in range(3)]
    for out in turns:
        assert json.dumps(out, sort_keys=True) == json.dumps(fresh, sort_keys=True)
    assert turns[1]["tools"] and turns[1]["tools"][0] is turns[2]["tools"][0]
    # the upstream body is written from the tools' kept texts, byte for byte what encoding writes
    for out in turns:
        assert dumpb(shared_members(out)) == dumpb(fresh)
    assert type(shared_members(turns[2])["tools"]) is msgspec.Raw
    tools = turns[2]["tools"]
    if name == "messages-to-chat/request":
        # no cache breakpoint merged into the last tool: the list itself is kept, written as one text
        assert turns[1]["tools"] is tools and program.shared_text(tools) is not None
    else:
        assert program.SHARED[id(tools[0])][3] is not None  # its items' texts, kept


def test_only_a_filter_over_the_request_the_vars_or_a_pipe_looks_for_kept_lists():
    from engine.expr import compile_expr
    for text in ("src.tools[?type=='function']", "vars.tools_in[?strict]", "src.a[?x] | [?y]"):
        assert "_f_get" in compile_expr(text)[0].code[0], text
    for text in ("t.tools[?type=='function']", "src.a[].b[?x]", "sort_by(src.a, &x)[?y]",
                 "src.a[?x].join('', [y, new_id('x_')])"):
        assert "_f_get" not in compile_expr(text)[0].code[0], text
