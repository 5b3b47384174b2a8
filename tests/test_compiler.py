"""The template vocabulary, stream rules, and spec errors that point at file:line:col."""
from __future__ import annotations

import json
import textwrap

import pytest

from engine.catalog import Catalog, compile_dir
from engine.compiler import compile_spec
from engine.metaschema import check
from engine.source import load_text
from engine.stream import StreamTranslator

HEAD = """\
apiVersion: engine.mapping/v1
kind: {kind}
metadata: {{name: t/{name}, version: "2025-01-01", changes: [test]}}
"""


def compile_text(body, kind="RequestMapping", name="request"):
    src = load_text(HEAD.format(kind=kind, name=name) + textwrap.dedent(body), "t.yaml")
    errors = check(src)
    spec = None if errors else compile_spec(src, errors)
    return spec, errors


def apply(body, src, **scope):
    spec, errors = compile_text(body)
    assert not errors, "\n".join(map(str, errors))
    return spec.apply(src=src, **scope)


def test_expressions_objects_and_null_omission():
    out = apply("template: {a: src.x, b: src.missing, c: {const: 3}, d: [src.x, src.missing]}", {"x": 1})
    assert out == {"a": 1, "c": 3, "d": [1]}


def test_fields_keep_null_and_literal_template_keywords():
    out = apply("template: {fields: {a: src.missing, each: {const: 1}}, keep_null: [a]}", {})
    assert out == {"a": None, "each": 1}


def test_each_switch_lookup_coalesce_when_concat_merge():
    body = """
    template:
      items: {each: src.xs, as: x, index: i, map: {v: x, i: i}}
      kind: {switch: src.k, cases: {a: {const: A}}, default: {const: other}}
      mapped: {lookup: src.k, table: {a: 1, b: 2}, default: {const: 0}}
      first: {coalesce: [src.none, src.k]}
      cond: {when: "src.k == 'a'", value: {const: yes-a}, else: {const: "no"}}
      joined: {concat: [src.xs, [src.k]]}
      text: {concat: ["'x'", src.k]}
      merged: {merge: [{p: {const: 1}}, {q: src.k}]}
    """
    out = apply(body, {"xs": [10, 20], "k": "a"})
    assert out == {"items": [{"v": 10, "i": 0}, {"v": 20, "i": 1}], "kind": "A", "mapped": 1, "first": "a",
                   "cond": "yes-a", "joined": [10, 20, "a"], "text": "xa", "merged": {"p": 1, "q": "a"}}
    out = apply(body, {"xs": [], "k": "z"})
    assert out["kind"] == "other" and out["mapped"] == 0 and out["cond"] == "no" and "items" in out


def test_use_with_bindings_and_vars_and_pipe():
    body = """
    helpers: [merge_turns]
    vars: {double: "[src.n, src.n]"}
    defs:
      wrap: {fields: {value: v, tag: tag}}
    template:
      a: {use: wrap, with: {v: vars.double, tag: {const: t}}}
      turns: {pipe: merge_turns, input: src.turns}
    """
    out = apply(body, {"n": 2, "turns": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})
    assert out["a"] == {"value": [2, 2], "tag": "t"}
    assert out["turns"] == [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]


def test_checks_return_the_first_failing_rule():
    spec, errors = compile_text("""
    checks:
      - {when: "src.n > `1`", param: n, message: "no n"}
    template: {n: src.n}
    """)
    assert not errors
    assert spec.check(spec.scope(src={"n": 2})) == ("n", "no n", 400, None)
    assert spec.check(spec.scope(src={"n": 1})) is None


def test_errors_name_file_line_column_path_and_caret():
    _, errors = compile_text("""
    template:
      ok: src.a
      bad: "src.a ||"
    """)
    assert len(errors) == 1
    text = str(errors[0])
    assert text.startswith("t.yaml:7:")
    assert "template.bad: invalid JMESPath expression" in text
    assert text.splitlines()[1].strip() == 'bad: "src.a ||"'
    assert text.splitlines()[2].strip() == "^"


def test_every_error_of_a_spec_is_reported():
    _, errors = compile_text("""
    template:
      a: "src.[["
      b: {use: nowhere}
      c: "from_json(src.x)"
      d: "nosuch(src.x)"
    """)
    messages = " | ".join(e.message for e in errors)
    assert len(errors) == 4, messages
    assert "no block named 'nowhere'" in messages
    assert "from_json() is not declared under helpers" in messages
    assert "unknown function nosuch()" in messages


def test_meta_schema_errors_point_at_the_offending_key():
    _, errors = compile_text("""
    template:
      a: {each: src.x, as: x, mapp: x}
    """)
    assert errors and errors[0].line == 6
    assert "mapp" in errors[0].message


def test_stream_rules_state_emit_end_and_unknown_events_ignored():
    spec, errors = compile_text("""
    state: {n: 0, text: ""}
    framing: {event_field: type, sequence_field: sequence_number}
    discriminator: event.type
    on:
      add:
        - incr: n
        - append: {text: event.t}
        - emit: {type: {const: added}, n: state.n}
      stop:
        - emit: [{type: {const: done}, text: state.text}, {raw: "[DONE]"}]
        - end: true
      ping: ignore
    eof:
      - emit: {type: {const: cut}}
    """, kind="StreamMapping", name="stream")
    assert not errors, errors
    t = StreamTranslator(spec)
    data = (b'data: {"type":"add","t":"a"}\n\ndata: {"type":"ping"}\n\ndata: {"type":"mystery"}\n\n'
            b'data: {"type":"add","t":"b"}\n\ndata: {"type":"stop"}\n\ndata: {"type":"add","t":"late"}\n\n')
    out = t.feed(data) + t.finish()
    assert out.decode() == (
        'event: added\ndata: {"type":"added","sequence_number":0,"n":1}\n\n'
        'event: added\ndata: {"type":"added","sequence_number":1,"n":2}\n\n'
        'event: done\ndata: {"type":"done","sequence_number":2,"text":"ab"}\n\n'
        'data: [DONE]\n\n')
    t2 = StreamTranslator(spec)
    assert t2.feed(b'data: {"type":"add","t":"a"}\n\n') and b"cut" in t2.finish()


def test_state_is_fresh_per_stream():
    spec, _ = compile_text("""
    state: {seen: {}}
    discriminator: event.type
    on:
      x:
        - put: {map: seen, key: event.k, value: event.v}
        - emit: {seen: state.seen}
    """, kind="StreamMapping", name="stream")
    a, b = StreamTranslator(spec), StreamTranslator(spec)
    a.event({"type": "x", "k": 1, "v": "a"})
    assert b.event({"type": "x", "k": 2, "v": "b"}) == [{"seen": {"2": "b"}}]


def test_catalog_picks_versions_and_reports_all_errors_of_all_specs(tmp_path):
    (tmp_path / "a").mkdir()
    for v in ("2025-01-01", "2025-02-01"):
        (tmp_path / "a" / f"{v}.yaml").write_text(
            HEAD.format(kind="RequestMapping", name="request").replace("2025-01-01", v) + f"template: {{v: {{const: '{v}'}}}}\n")
    (tmp_path / "b.yaml").write_text(HEAD.format(kind="RequestMapping", name="bad") + 'template: {x: "a.["}\n')
    (tmp_path / "c.yaml").write_text("apiVersion: [\n")
    specs, errors = compile_dir(tmp_path)
    assert sorted(e.file.split("/")[-1] for e in errors) == ["b.yaml", "c.yaml"]
    cat = Catalog(specs)
    assert cat.get("t/request").apply(src={}) == {"v": "2025-02-01"}
    assert cat.get("t/request", "2025-01-01").apply(src={}) == {"v": "2025-01-01"}
    with pytest.raises(KeyError, match="versions: 2025-01-01, 2025-02-01"):
        cat.get("t/request", "2024-01-01")


def test_the_project_specs_compile():
    specs, errors = compile_dir(Catalog.load.__defaults__[0])
    assert not errors, "\n".join(map(str, errors))
    assert specs


def test_each_action_runs_rules_per_item():
    spec, errors = compile_text("""
    state: {total: 0}
    discriminator: event.type
    on:
      batch:
        - each: event.items
          as: it
          then:
            - incr: {total: it.n}
            - emit: {n: it.n, total: state.total}
    """, kind="StreamMapping", name="stream")
    assert not errors, errors
    t = StreamTranslator(spec)
    assert t.event({"type": "batch", "items": [{"n": 2}, {"n": 3}]}) == [{"n": 2, "total": 2}, {"n": 3, "total": 5}]
    assert t.event({"type": "batch", "items": []}) == []


def test_handler_reads_of_the_scope_stay_right_around_each_and_set():
    # the byte path's generated handler reads scope names once, at its top: an `each` whose name
    # is a scope name (model) must leave it as it was, and state keys must be read after a set
    spec, errors = compile_text("""
    state: {n: 0}
    discriminator: event.type
    on:
      batch:
        - emit: {type: {const: before}, model: model, n: state.n, d: event.d}
        - each: event.items
          as: model
          then:
            - incr: {n: model}
            - emit: {type: {const: item}, model: model, n: state.n, d: event.d}
        - emit: {type: {const: after}, model: model, n: state.n, d: event.d}
    """, kind="StreamMapping", name="stream")
    assert not errors, errors
    event = {"type": "batch", "items": [2, 3], "d": "x"}
    want = [{"type": "before", "model": "m", "n": 0, "d": "x"}, {"type": "item", "model": 2, "n": 2, "d": "x"},
            {"type": "item", "model": 3, "n": 5, "d": "x"}, {"type": "after", "model": "m", "n": 5, "d": "x"}]
    assert StreamTranslator(spec, model="m").event(event) == want
    t = StreamTranslator(spec, model="m")
    raw = f"event: batch\ndata: {json.dumps(event)}\n\n".encode()
    assert t.feed(raw) == t.encode(want)
    assert t.scope["model"] == "m"


def test_a_bare_null_true_or_false_is_an_error():
    # JMESPath reads them as field names: `x != null` compares x with a field called null
    _, errors = compile_text("""
    template:
      a: "src.x != null"
      b: "src.xs[?t == true]"
      c: "src.x || false"
      d: "src.x != `null` && src.obj.null"
      e: "src.xs[].true"
      f: "null"
    """)
    assert [e.path for e in errors] == ["template.a", "template.b", "template.c"]
    assert "write `` `null` ``" in errors[0].message and "`true` here is a field" in errors[1].message


def test_negation_before_a_dotted_path_is_an_error():
    _, errors = compile_text("""
    template:
      a: "!src.x"
      b: "!(src.x)"
      c: "src.a != src.b"
    """)
    assert [e.path for e in errors] == ["template.a"]
    assert "write `!(a.b)`" in errors[0].message


def test_each_stream_starts_from_its_own_copy_of_the_declared_state():
    spec, errors = compile_text("""
        state: {n: 0, items: [], seen: {}, nested: {list: [1, {deep: []}], "1": null}, flag: false}
        discriminator: event.type
        on:
          add:
            - append: {items: event.v}
            - put: {map: seen, key: event.v, value: {const: true}}
            - incr: n
    """, kind="StreamMapping", name="stream")
    assert not errors, "\n".join(map(str, errors))
    first = spec.initial_state()
    assert first == {"n": 0, "items": [], "seen": {}, "nested": {"list": [1, {"deep": []}], "1": None},
                     "flag": False}
    t = StreamTranslator(spec)
    t.event({"type": "add", "v": "x"})
    assert t.state["items"] == ["x"] and t.state["seen"] == {"x": True} and t.state["n"] == 1
    again = spec.initial_state()
    assert again == first and again["items"] == [] and again["seen"] == {}
    assert again["nested"]["list"][1]["deep"] is not first["nested"]["list"][1]["deep"]


@pytest.mark.parametrize("disc", ["event.type", "event.kind || event.type", "event"])
def test_byte_path_dispatch_on_any_discriminator_and_nothing_after_the_end(disc):
    spec, errors = compile_text(f"""
        state: {{n: 0}}
        discriminator: "{disc}"
        on:
          tick: [{{incr: n}}, {{emit: {{type: {{const: tick}}, n: state.n}}}}]
          stop: [{{emit: {{type: {{const: done}}}}}}, {{end: true}}]
          "[DONE]": {{emit: {{type: {{const: raw_done}}}}}}
    """, kind="StreamMapping", name="stream")
    assert not errors, "\\n".join(map(str, errors))
    assert (spec.disc_key == "type") is (disc == "event.type")
    t = StreamTranslator(spec)
    if disc == "event":  # the whole event as the key: a dict is unhashable, so no handler runs
        assert t.feed(b'data: {"type": "tick"}\n\ndata: [DONE]\n\n') == b'data: {"type":"raw_done"}\n\n'
        return
    out = t.feed(b'data: {"type": "tick"}\n\ndata: {"type": "tick", "kind": null}\n\n'
                 b'data: [1, 2]\n\ndata: not json\n\ndata: [DONE]\n\n')
    assert out == (b'data: {"type":"tick","n":1}\n\ndata: {"type":"tick","n":2}\n\n'
                   b'data: {"type":"raw_done"}\n\n')
    assert t.feed(b'data: {"type": "stop"}\n\ndata: {"type": "tick"}\n\n') == b'data: {"type":"done"}\n\n'
    assert t.ended and t.feed(b'data: {"type": "tick"}\n\n') == b"" and t.state["n"] == 2
    assert t.events_in == 3  # JSON objects only, none after the end


@pytest.mark.parametrize("text,members", [
    ("req.tools || req.model", {"tools", "model"}),
    ("req.stream_options.include_usage", {"stream_options"}),
    ("req | text.format", {"text"}),
    ("length(req.input) > `3`", {"input"}),
    ("sort_by(req.tools, &name)[*].name", {"tools"}),
    ("src.messages[?role == 'user']", set()),
    ("x[?req.a]", set()),  # `req` of each item of x, not the request
    ("req", None),
    ("keys(req)", None),
    ("req.*", None),
    ("req[0]", None),
    ("req | [model, @]", None),
    ("{a: req.model, b: req}", None),
    ("values(@)", None),  # the scope, request and all
])
def test_members_read_of_a_scope_name(text, members):
    from engine.names import members_read
    assert members_read(text, "req") == (None if members is None else frozenset(members))


def test_a_spec_records_the_members_of_req_it_reads():
    stream, errors = compile_text("""\
        discriminator: event.type
        on:
          a:
            - when: req.stream_options.include_usage
              then: [{emit: {fields: {m: req.model, u: event.u}}}]
          b:
            - each: event.items
              as: req
              then: [{emit: {fields: {n: req.messages}}}]
        """, kind="StreamMapping", name="stream")
    assert not errors, "\n".join(map(str, errors))
    # `req` bound by `each ... as` is the item, not the request
    assert stream.req_members == {"stream_options", "model"}
    whole, errors = compile_text("template: {all: 'keys(req)'}", kind="ResponseMapping", name="response")
    assert not errors and whole.req_members is None


def test_a_sent_request_keeps_what_the_answer_specs_read():
    from engine.server.translate import kept_members, let_go
    catalog = Catalog.load()
    conversation = {"chat-to-messages": {"messages"}, "messages-to-chat": {"messages", "system", "tools"},
                    "responses-to-messages": {"input"}}
    for pair, dropped in conversation.items():
        specs = catalog.pair(pair)
        kept = kept_members(specs)
        assert kept is not None and "stream" in kept and not kept & dropped, (pair, kept)
        read = set().union(*(s.req_members for k, s in specs.items() if k not in ("request", "submit")))
        assert read <= kept, pair
    assert {"tools", "instructions", "tool_choice"} <= kept_members(catalog.pair("responses-to-messages"))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}], "tools": []}
    let_go(body, kept_members(catalog.pair("chat-to-messages")))
    assert body == {"stream": True, "tools": []}
    body = {"model": "m", "stream": True, "messages": [], "user": "u"}
    let_go(body, kept_members(catalog.pair("chat-to-messages")), frozenset({"model"}))
    assert body == {"model": "m", "stream": True}
    whole, _ = compile_text("template: {all: 'keys(req)'}", kind="ResponseMapping", name="response")
    assert kept_members({**catalog.pair("chat-to-messages"), "response": whole}) is None
    body = {"model": "m", "messages": []}
    let_go(body, None)
    assert body == {"model": "m", "messages": []}
