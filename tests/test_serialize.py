"""engine/serialize.py on template shapes the shipped specs do not all use: the text a template
writes is its dict encoded, and a stream's byte path gives the bytes of its event path."""
from __future__ import annotations

import copy
import json

import pytest

from engine.nodes import dumps
from engine.serialize import enc
from engine.stream import StreamTranslator
from tests.test_compiler import compile_text

REQUEST = """
helpers: [to_json]
defs:
  pair: {first: a, second: b, deep: {x: a}}
  partial: {whole: v, inner: v.k}
  impure: {fields: {value: v}}
  alias: {use: pair, with: {a: src.p, b: src.q}}
  maybe:
    when: src.flag
    value: {flag: src.flag}
template:
  plain: {use: pair, with: {a: src.p, b: {nested: src.q, lit: {const: 1}}}}
  partial: {use: partial, with: {v: src.obj}}
  impure: {use: impure, with: {v: to_json(src.obj)}}
  alias: {use: alias}
  maybe: {use: maybe}
  kept: {fields: {m: {use: maybe}, n: src.none, o: [src.none, src.p]}, keep_null: [m, n]}
  numbers: [src.f, src.i, src.t, src.big, src.neg]
  text: src.s
  odd: {fields: {1: src.p, true: src.q, 2.5: src.p}}
"""

INPUTS = [
    {"p": "x", "q": 2, "obj": {"k": [1, None]}, "flag": True, "f": 0.5, "i": -3, "t": False, "big": 10 ** 30,
     "neg": -0.0, "s": "é\n\"\\\u2028💥"},
    {"p": None, "q": None, "obj": None, "flag": None, "f": 1e300, "i": 0, "t": True, "s": ""},
    {"obj": "not an object", "flag": 0, "f": float("nan")},
    {},
]


@pytest.mark.parametrize("src", INPUTS)
def test_request_template_text_is_its_dict_encoded(src):
    spec, errors = compile_text(REQUEST)
    assert not errors, "\n".join(map(str, errors))
    scope = spec.scope(src=src)
    built = spec.template(scope)
    assert spec.template.json(scope) == dumps(built)
    assert json.loads(dumps(built)) is not None  # and it is JSON (NaN aside, as json.dumps writes it)


STREAM = """
state: {n: 0, obj: {a: 1}, items: []}
framing: {event_field: type, sequence_field: sequence_number}
defs:
  named: {type: kind, n: state.n, payload: {use: wrapped, with: {x: event.x}}}
  wrapped: {x: x, c: {const: [1, 2]}}
procs:
  countdown:
    - when: "state.n > `0`"
      then:
        - incr: {n: "`-1`"}
        - emit: {type: {const: tick}, n: state.n}
        - do: countdown
discriminator: event.type
on:
  countdown:
    - set: {n: event.x}
    - do: countdown
  numbers:
    switch: event.x
    cases: {1: {emit: {type: {const: one}}}, two: {emit: {type: {const: two}}}}
    default: {emit: {type: {const: other}}}
  words:
    switch: event.x
    cases: {a: {emit: {type: {const: is-a}}}, b: [], c: ignore}
    default: {emit: {type: {const: not-a}}}
  plain:
    - incr: n
    - emit: {type: {const: plain}, n: state.n, x: event.x, missing: event.nothing}
  dynamic:
    - emit: {type: event.kind, n: state.n}
  typeless:
    - emit: {n: state.n, x: event.x}
  nested_type:
    - emit: {type: {inner: event.x}, n: state.n}
  via_use:
    - emit: {use: named, with: {kind: event.kind}}
  twice:
    - emit: [{type: {const: a}, obj: state.obj}, {type: {const: b}, obj: state.obj}]
    - set: {obj: {a: event.x}}
    - emit: {type: {const: c}, obj: state.obj}
    - append: {items: event.x}
    - emit: [{type: {const: d}, items: state.items}, {type: {const: e}, items: state.items}]
  array:
    - emit: [[event.x], {raw: "[DONE]"}]
  stop:
    - emit: {type: {const: done}, n: state.n}
    - end: true
"""

EVENTS = [
    {"type": "plain", "x": "é"}, {"type": "dynamic", "kind": "k1"}, {"type": "dynamic"},
    {"type": "typeless", "x": 1}, {"type": "nested_type", "x": 2}, {"type": "via_use", "kind": "k2", "x": [1]},
    {"type": "via_use", "x": None}, {"type": "twice", "x": 5}, {"type": "twice", "x": 6}, {"type": "array", "x": 3},
    {"type": "countdown", "x": 3}, {"type": "numbers", "x": 1}, {"type": "numbers", "x": "two"},
    {"type": "numbers", "x": [1]}, {"type": "words", "x": "a"}, {"type": "words", "x": "b"},
    {"type": "words", "x": "c"}, {"type": "words", "x": {"k": 1}}, {"type": "words"},
    {"type": "plain", "x": None}, {"type": "stop"}, {"type": "plain", "x": "after the end"},
]


@pytest.mark.parametrize("framing", [
    "{event_field: type, sequence_field: sequence_number}", "{event_field: type}", "{event_field: null}"])
def test_stream_byte_path_is_its_event_path(framing):
    spec, errors = compile_text(STREAM.replace(
        "{event_field: type, sequence_field: sequence_number}", framing), kind="StreamMapping", name="stream")
    assert not errors, "\n".join(map(str, errors))
    raw = "".join(f"data: {json.dumps(e)}\n\n" for e in EVENTS).encode()
    fast, slow = StreamTranslator(spec), StreamTranslator(spec)
    fast_bytes = fast.start_bytes() + b"".join(fast.feed(raw[i:i + 50]) for i in range(0, len(raw), 50)) \
        + fast.finish()
    # each event's items encoded as they come (a list in state may grow in place later)
    slow_bytes = slow.encode(slow.start())
    for e in EVENTS:
        slow_bytes += slow.encode(slow.event(copy.deepcopy(e)))
    slow_bytes += slow.encode(slow.eof())
    assert fast_bytes == slow_bytes
    assert b'"obj":{"a":5}' in fast_bytes and b'"items":[5]' in fast_bytes  # nothing stale
    for word in (b"tick", b"one", b"two", b"other", b"is-a", b"not-a"):
        assert word in fast_bytes, word
    assert fast_bytes.count(b'"tick"') == 3
    assert fast.ended and slow.ended and fast.seq == slow.seq


def test_enc_keys_as_the_json_encoder_writes_them():
    from engine.serialize import _key
    for k in ["a", 1, 2.5, True, False, None, "é\"", -3]:
        assert dumps({k: 0}) == "{" + _key(k) + "0}"
    for v in ["", "é\n\"\\\u2028\x00", 0, -1, 10 ** 30, True, False, None, 0.1, -0.0, 1e300, float("nan"),
              float("inf"), float("-inf"), [1, "a"], {"k": {"x": None}}, []]:
        assert enc(v) == dumps(v), v


LONG_TEXTS = [
    "word " * 300,                      # plain: written as it is
    "x" * 127, "x" * 128, "x" * 129,   # either side of the length where the long path starts
    "é 💥 中文 " * 40 + "\u2028\x7f",   # non-ASCII and characters JSON leaves alone
    "a" * 200 + '"', "a" * 200 + "\\", "a" * 200 + "\n", "\x00" + "a" * 200, "a" * 200 + "\x1f",
    "a" * 200 + "\ud800",               # a lone surrogate: no UTF-8 form
]


@pytest.mark.parametrize("text", LONG_TEXTS, ids=lambda t: f"{len(t)}:{t[-2:]!r}")
def test_long_strings_are_written_as_the_encoder_writes_them(text):
    from engine.serialize import _long_str
    assert enc(text) == dumps(text) == _long_str(text)
    assert enc({"k": text}) == dumps({"k": text})
    spec, errors = compile_text(REQUEST)
    scope = spec.scope(src={"s": text, "p": text})
    assert spec.template.json(scope) == dumps(spec.template(scope))


ECHO = """
state: {final: null, m: null, seen: {}}
framing: {event_field: type, sequence_field: sequence_number}
discriminator: event.type
init:
  - set:
      final: {a0: req.a, a1: req.a, a2: req.a, a3: req.a, a4: req.a, a5: req.a, a6: req.a, a7: req.a,
              a8: req.a, a9: req.a, a10: req.a, a11: req.a, a12: req.a, a13: req.a, a14: req.a,
              tools: req.tools, meta: req.meta}
  - emit: {type: {const: created}, response: state.final}
on:
  # state.m becomes the request's own `meta` object: a put into it changes what is echoed
  alias:
    set: {m: req.meta}
  poke:
    put: {map: m, key: event.k, value: event.v}
  # `seen` is only ever the state's own object: a put into it changes nothing of the request
  note:
    put: {map: seen, key: event.k, value: event.v}
  show:
    emit: {type: {const: shown}, response: state.final}
"""


def test_the_echoed_request_is_written_as_it_is_when_written():
    """The request's members echoed in a wide object are encoded once per stream (program.Echo);
    a rule that changes one in place (put through an alias) is seen in what follows."""
    spec, errors = compile_text(ECHO, kind="StreamMapping", name="stream")
    assert not errors, "\n".join(map(str, errors))
    events = [{"type": "show"}, {"type": "note", "k": "x", "v": 1}, {"type": "show"}, {"type": "alias"},
              {"type": "poke", "k": "added", "v": [1, 2]}, {"type": "show"}]
    raw = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode()

    def request():
        return {"a": "é", "tools": [{"type": "function", "name": "f", "parameters": {"x": 1.5}}], "meta": {"k": "v"}}
    fast, slow = StreamTranslator(spec, req=request()), StreamTranslator(spec, req=request())
    fast_bytes = fast.start_bytes() + b"".join(fast.feed(raw[i:i + 40]) for i in range(0, len(raw), 40))
    slow_bytes = slow.encode(slow.start())
    for e in events:
        slow_bytes += slow.encode(slow.event(e))
    assert fast_bytes == slow_bytes
    shown = [json.loads(line[6:])["response"] for line in fast_bytes.decode().split("\n") if line.startswith("data: ")]
    assert [r["meta"] for r in shown] == [{"k": "v"}] * 3 + [{"k": "v", "added": [1, 2]}]
    assert all(r["tools"] == request()["tools"] for r in shown)


def test_kept_state_strings_are_written_as_any_string_and_the_keep_is_bounded(monkeypatch):
    from engine import serialize
    from engine.jsontext import str_text

    monkeypatch.setattr(serialize, "_KEPT", {})
    monkeypatch.setattr(serialize, "_KEPT_MAX", 8)
    values = ["msg_01", "claude-sonnet-4-5", 'q"uote', "tab\there", "é\u2028", "\x00", "", "x" * 127]
    for v in values * 2:
        assert serialize.kept_str(v) == str_text(v)
    assert set(serialize._KEPT) == set(values)
    serialize.kept_str("one more")
    assert serialize._KEPT == {"one more": str_text("one more")}


def test_a_stream_keeps_the_text_of_its_state_strings_not_of_its_deltas(catalog):
    from pathlib import Path

    from engine import serialize
    from engine.stream import StreamTranslator

    serialize._KEPT.clear()  # the generated frames look texts up in this dict itself
    t = StreamTranslator(catalog.get("chat-to-messages/stream"), req={"model": "claude-x", "stream": True},
                         model="claude-x", cfg={})
    raw = (Path(__file__).parent / "fixtures" / "anthropic-text.sse").read_bytes()
    out = t.start_bytes() + t.feed(raw) + t.finish()
    chunks = [json.loads(line[6:]) for line in out.decode().splitlines() if line.startswith("data: {")]
    ids, models = {c["id"] for c in chunks}, {c["model"] for c in chunks}
    deltas = [e["delta"]["text"] for e in (json.loads(line[6:]) for line in raw.decode().splitlines()
                                          if line.startswith("data: ") and '"text_delta"' in line)]
    assert len(ids) == len(models) == 1 and ids | models <= set(serialize._KEPT)
    assert deltas and not set(deltas) & set(serialize._KEPT)
