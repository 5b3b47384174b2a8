"""Template nodes as inlined source (engine/nodes.py, `_Src`) against the same nodes as closures.

Every node that carries `.code` keeps the closure it had before as its fallback (a source too
long or too deep to compile). Compiling each template a second time with no source allowed
gives those closures; both must give the same value for every input, the spec-shipped ones
(tests/test_cases.py) aside."""
from __future__ import annotations

import pytest

from engine import nodes
from engine.expr import OPAQUE
from engine.serialize import _reads_only_whole
from tests.test_compiler import compile_text

TEMPLATES = {
    "switch": """
      template:
        small:
          switch: src.k
          cases: {a: src.x, b: {const: 2}, "1": {const: one}, true: {const: yes}}
          default: {const: other}
        no_default: {switch: src.k, cases: {a: [src.x]}}
        big:
          switch: src.k
          cases: {a: {const: 1}, b: {const: 2}, c: {const: 3}, d: {const: 4}, e: {const: 5}, f: {const: 6},
                  g: {const: 7}, h: {const: 8}, i: {x: src.x}}
          default: {d: src.k}
    """,
    "lookup": """
      template:
        l: {lookup: src.k, table: {a: 1, b: [2], c: null}, default: src.x}
        n: {lookup: src.k, table: {a: 1}}
    """,
    "coalesce_when": """
      template:
        c: {coalesce: [src.none, src.x, {const: 3}]}
        d: {coalesce: [src.none, {a: src.none}]}
        w: {when: src.k, value: {v: src.x}, else: [src.k]}
        z: {when: src.x, value: src.k}
    """,
    "concat_merge": """
      template:
        s: {concat: [src.k, src.none, {const: "-"}, src.k]}
        l: {concat: [[src.x], src.list, {each: src.list, as: i, map: [i, i]}]}
        m: {merge: [src.obj, {a: src.x}, src.none, src.k]}
    """,
    "opaque": """
      helpers: [merge_turns]
      defs:
        wide: {a: item, b: src.x, c: src.k}
        piped: {pipe: merge_turns, input: [{role: {const: user}, content: c}]}
      template:
        w: {each: src.list, as: item, map: {use: wide}}
        p: {use: piped, with: {c: src.k}}
    """,
    "paths": """
      vars:
        first: src.obj.p
        again: "vars.first || src.obj.q"
        third: "vars.first"
      template:
        a: src.obj.p
        b: {coalesce: [src.obj.p, src.obj.q]}
        c: {when: "src.obj.q", value: [src.obj.p, vars.again]}
    """,
    "each_use": """
      helpers: [merge_turns]
      defs:
        pair: {first: a, second: b}
        plain: "src.x"
        wrapped: {use: plain}
        boxed: {box: {use: pair, with: {a: item, b: i}}}
        turn: {role: {const: user}, content: c}
      template:
        e: {each: src.list, as: item, index: i, map: {use: boxed}}
        f: {each: src.obj, as: kv, flatten: true, map: [kv.key, kv.value]}
        p: {use: pair, with: {a: src.k, b: {use: wrapped}}}
        u: {use: wrapped}
        t:
          pipe: merge_turns
          input: [{role: {const: user}, content: src.k}, {use: turn, with: {c: src.x}}]
    """,
    "item_reads": """
      template:
        two: {each: src.list, as: it, map: {a: it.p, b: it.q}}
        one: {each: src.list, as: it, map: it.p}
        nested: {each: src.list, as: it, map: {each: it.q, as: x, map: "[x.r, x.s, it.p]"}}
    """,
}

INPUTS = [
    {}, {"k": "a", "x": 1}, {"k": "b", "x": None}, {"k": "1", "x": "s"}, {"k": 1, "x": [1]},
    {"k": True, "x": {"y": 1}}, {"k": "i", "x": 0}, {"k": [1], "x": ""}, {"k": {"a": 1}, "x": False},
    {"k": "c", "list": [1, None, "z"], "obj": {"p": 1, "q": None}}, {"k": "h", "list": "one", "obj": []},
    {"k": 0.0, "x": 0, "list": [], "obj": {}}, {"k": None, "x": 2.5, "list": [[1], [2, 3]]},
    {"list": [{"p": 1, "q": [{"r": 2, "s": 3}, "t"]}, {"p": None}, "s", 3, None, {"q": [1]}, [{"p": 1}], {}]},
]


def _compiled(body, allow_source: bool):
    old = nodes._MAX_SOURCE
    if not allow_source:
        nodes._MAX_SOURCE = -1
    try:
        spec, errors = compile_text(body)
    finally:
        nodes._MAX_SOURCE = old
    assert not errors, "\n".join(map(str, errors))
    return spec


def _outcome(spec, src):
    try:
        return spec.apply(src=src)
    except Exception as e:  # the same failure both ways
        return type(e).__name__


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_inlined_source_gives_what_the_closures_give(name):
    inlined, closures = _compiled(TEMPLATES[name], True), _compiled(TEMPLATES[name], False)
    items = inlined.template.fields[0]
    assert any(getattr(n, "code", None) is not None for _, n in items)  # the source form is in use
    assert all(getattr(n, "code", None) is None for _, n in closures.template.fields[0]
               if not getattr(n, "path", None) and getattr(n, "fields", None) is None)
    for src in INPUTS:
        assert _outcome(inlined, src) == _outcome(closures, src), src


def test_expected_values_of_the_source_forms():
    spec = _compiled(TEMPLATES["switch"], True)
    assert spec.apply(src={"k": "a", "x": 5}) == {"small": 5, "no_default": [5], "big": 1}
    # case keys are text (the spec loader's keys); `yes` is YAML 1.1's true
    assert spec.apply(src={"k": "true"}) == {"small": True, "big": {"d": "true"}}
    assert spec.apply(src={"k": True}) == {"small": "other", "big": {"d": True}}
    assert spec.apply(src={"k": [1]}) == {"small": "other", "big": {"d": [1]}}
    spec = _compiled(TEMPLATES["lookup"], True)
    assert spec.apply(src={"k": "a"}) == {"l": 1, "n": 1}
    assert spec.apply(src={"k": "b"}) == {"l": [2]}
    assert spec.apply(src={"k": "c", "x": 9}) == {}  # a table value of null is the answer
    assert spec.apply(src={"k": {"a": 1}, "x": 9}) == {"l": 9}
    spec = _compiled(TEMPLATES["each_use"], True)
    out = spec.apply(src={"list": ["p", "q"], "obj": {"a": 1}, "k": "K", "x": "X"})
    assert out["e"] == [{"box": {"first": "p", "second": 0}}, {"box": {"first": "q", "second": 1}}]
    assert out["f"] == ["a", 1] and out["p"] == {"first": "K", "second": "X"} and out["u"] == "X"
    assert out["t"] == [{"role": "user", "content": [{"type": "text", "text": "K"}, {"type": "text", "text": "X"}]}]


def test_concat_of_parts_all_there_and_of_parts_left_out():
    spec = _compiled(TEMPLATES["concat_merge"], True)
    code = {k: n.code[0] for k, n in spec.template.fields[0]}
    assert " is list) & (type(" in code["l"]  # lists joined in place, _concat for the rest
    # every part there: texts joined; lists spliced, other values kept as items
    assert spec.apply(src={"k": "a", "x": 1, "list": [2, [3]]}) == {
        "s": "a-a", "l": [1, 2, [3], [2, 2], [[3], [3]]], "m": {"a": 1}}
    assert spec.apply(src={"k": 5, "x": "y", "list": "z"}) == {
        "s": [5, "-", 5], "l": ["y", "z", ["z", "z"]], "m": {"a": "y"}}
    # nothing left but empty lists: no value
    assert spec.apply(src={"k": "a", "x": None, "list": []}) == {"s": "a-a"}


def test_an_each_map_reads_the_keys_of_its_item_after_one_type_test():
    spec = _compiled(TEMPLATES["item_reads"], True)
    code = {k: n.code[0] for k, n in spec.template.fields[0]}
    # two keys or more read on the item: one type test for the item, then plain reads
    assert "_empty_dict" in code["two"] and "_pa_it" not in code["two"]
    assert "_empty_dict" in code["nested"] and "_pa_x" not in code["nested"]
    assert "_empty_dict" not in code["one"] and "_pa_it" in code["one"]  # one read: its own test
    got = spec.apply(src={"list": [{"p": 1, "q": [{"r": 2, "s": 3}, "t"]}, "s", {"q": 0}, None]})
    # a non-dict item reads null for every key, as before; the inner map reads the outer item
    assert got == {"two": [{"a": 1, "b": [{"r": 2, "s": 3}, "t"]}, {}, {"b": 0}, {}],
                   "one": [1],
                   "nested": [[[2, 3, 1], [None, None, 1]], [[None, None, None]]]}


def test_a_source_that_calls_what_it_does_not_show_is_opaque():
    spec = _compiled(TEMPLATES["opaque"], True)
    opaque = dict(spec.template.fields[0])
    # an object with more than two members that may be null has no source: it is called
    assert OPAQUE in opaque["w"].code[1] and OPAQUE in opaque["p"].code[1]
    assert spec.apply(src={"list": [1], "x": 2, "k": "K"}) == {
        "w": [{"a": 1, "b": 2, "c": "K"}], "p": [{"role": "user", "content": [{"type": "text", "text": "K"}]}]}
    spec = _compiled(TEMPLATES["each_use"], True)
    fields = dict(spec.template.fields[0])
    assert OPAQUE not in fields["u"].code[1]  # a use with nothing bound is its block's source
    # objects, `each` over them and `use ... with:` of them are their source, the names in place
    assert OPAQUE not in fields["e"].code[1] and OPAQUE not in fields["p"].code[1]
    assert "items_of" not in str(fields["e"].code[1].values()) and "{**scope" not in fields["p"].code[0]
    # the text writer may only put a bound value in place where nothing reads it otherwise
    assert not _reads_only_whole(opaque["w"], frozenset({"item"}))
    assert _reads_only_whole(fields["u"], frozenset({"item"}))


def test_paths_read_twice_are_read_once_into_locals():
    spec = _compiled(TEMPLATES["paths"], True)
    assert spec.apply(src={"obj": {"p": 1, "q": 2}}) == {"a": 1, "b": 1, "c": [1, 1], }
    assert spec.apply(src={"obj": {"q": 2}}) == {"b": 2, "c": [2]}
    assert spec.apply(src={"obj": {"p": 0, "q": 2}}) == {"a": 0, "b": 0, "c": [0, 0]}
    assert spec.apply(src={"obj": "text"}) == {}
    hoisted = [n for n in spec.template.__code__.co_varnames if n.startswith("_h")]
    assert len(hoisted) == 1  # src.obj, read in 5 places; src is then read once, by it
    assert len([n for n in spec.template.__code__.co_varnames if n.startswith("_d")]) == 1  # its keys: no type test
    # vars of src.obj alone are settled by a set lookup without it (compiler._absent_vars), and
    # read it where they are with it
    assert set(spec.absent_vars) == {"first", "again", "third"}
    assert spec.scope(src={"obj": {"p": 0, "q": 2}})["vars"] == {"first": 0, "again": 0, "third": 0}
    # vars that read more: src.obj and the vars dict itself (one dict throughout) are read ahead
    # in the scope function; vars.first (read twice too) is read where it is, or `again` would
    # not see it (c would be [0, 2] above)
    other = _compiled(TEMPLATES["paths"].replace("first: src.obj.p", "first: src.obj.p || cfg.p"), True)
    assert other.apply(src={"obj": {"p": 0, "q": 2}}) == {"a": 0, "b": 0, "c": [0, 0]}
    assert not other.absent_vars
    names = other.scope.__code__.co_varnames
    assert len([n for n in names if n.startswith("_h")]) == 2
    assert len([n for n in names if n.startswith("_d")]) == 2


def test_too_deep_a_source_keeps_the_closure():
    deep = "src.x"
    for _ in range(60):
        deep = {"coalesce": [{"when": "src.none", "value": "src.none"}, deep]}
    import yaml
    spec = _compiled("template:\n  v: " + yaml.safe_dump(deep, default_flow_style=True).strip(), True)
    assert spec.apply(src={"x": 7}) == {"v": 7}
    node = dict(spec.template.fields[0])["v"]
    assert getattr(node, "code", None) is None or nodes._fits(node.code[0])


def test_a_switch_of_many_cases_calls_them_and_is_opaque():
    spec = _compiled(TEMPLATES["switch"], True)
    fields = dict(spec.template.fields[0])
    assert OPAQUE in fields["big"].code[1]  # its cases are called from a table
    assert not _reads_only_whole(fields["big"], frozenset({"src"}))
    assert OPAQUE not in fields["small"].code[1]  # constants and paths only, all in its source


def test_a_node_with_source_keeps_one_dict_of_names():
    """A node's names are its globals too: one dict per node, not a copy for the lambda."""
    from engine.expr import compile_expr
    fn, _ = compile_expr("src.a || src.b")
    assert fn.__globals__ is fn.code[1]
    node = nodes.coalesce([fn, compile_expr("src.c")[0]])
    assert node.__globals__ is node.code[1]
    assert node({"src": {"b": 2}}) == 2
