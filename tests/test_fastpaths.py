"""The hot path's shortcuts give exactly what the slow, obvious path gives.

- Compiled JMESPath closures (engine.expr) against jmespath's own interpreter, on every
  expression found in the specs under mappings/ and on edge cases of every node type.
- StreamTranslator.feed (the server's byte-level path) against event() + encode() one event at a
  time, byte for byte, on every recorded fixture of every stream spec, whole and in small chunks.
- engine.nodes.dumps (msgspec) against json.loads: the same value back, the same bytes each time.
"""
from __future__ import annotations

import json
from pathlib import Path

import jmespath
import pytest
from jmespath.visitor import Options

from engine.bench.micro import STREAM_FIXTURES
from engine.catalog import MAPPINGS_DIR, Catalog
from engine.program import Raw
from engine.expr import compile_expr
from engine import functions
from engine.functions import Functions
from engine.nodes import dumps
from engine.jsontext import dumpb
from engine.source import load_file
from engine.sse import SSEDecoder
from engine.stream import StreamTranslator

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OPTIONS = Options(custom_functions=Functions())
VOLATILE = ("now(", "new_id(")


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # the same error type is part of "the same"
        return ("error", type(e).__name__)


def _same(expr: str, scope):
    compiled, _ = compile_expr(expr)
    want = _outcome(lambda: jmespath.search(expr, scope, options=OPTIONS))
    got = _outcome(lambda: compiled(scope))
    assert got == want and repr(got) == repr(want), f"{expr!r} on {json.dumps(scope)[:300]}"  # -0.0 and 1.0 too


EDGE = [
    "a", "a.b", "a.b.c.d", "a[0]", "a[-1]", "a[5]", "a[1:]", "a[::-1]", "a[:2].b", "a[*].b", "a[].b",
    "a[]", "a[][]", "b.*", "b.*.x", "a[?b == `1`]", "a[?b != `1`].c", "a[?b > `1`]", "a[?s > 'b']",
    "a[?c]", "a[?!c]", "!a", "!z", "!n0", "!f0", "a || z", "z || a", "z && a", "a && z", "n0 && a",
    "`1` == `1.0`", "t == `1`", "n1 == `true`", "n0 == `false`", "s == 'x'", "s != 'x'", "z == null",
    "s < 'y'", "s < `1`", "n1 < `2`", "t < `2`", "[a, z]", "{x: a, y: z}", "z.{x: a}", "z.[a]",
    "a | [0]", "a[0] | b", "length(a)", "length(s)", "length(z)", "length(n1)", "sum(ns)", "sum(a)",
    "max(ns)", "min(ss)", "max(a)", "join(',', ss)", "join(',', ns)", "contains(ss, 'p')",
    "contains(s, 'x')", "to_array(s)", "to_array(a)", "to_string(n1)", "type(t)", "keys(b)",
    "values(b)", "starts_with(s, 'x')", "not_null(z, s)", "sort(ns)", "reverse(ss)",
    "sort_by(a, &b)", "max_by(a, &b)", "map(&b, a)", "is_string(s)", "is_object(b)",
    "clamp(n1, `0`, `1`)", "clamp(s, `0`, `1`)", "from_json('[1]')", "get(b, 'p')",
    "length(a[].c[] | [?x=='y'])", "a[?b==`1` && c]", "a[?b==`1` || c]", "@", "a[0] | @",
    "'lit'", "`[1,2]`", "`{\"k\": 1}`", "ns[?@ > `1`]", "a[].[b, c]", "a[*].{b: b}",
    "a[*].b.c", "a[*].c[*].x", "ss[*].x.y", "a[?b].c.x", "b.*.x.y",
    # true/false/null-valued (expr.boolish): tested and combined without a temporary
    "a[?b > `1` || b == `2`]", "a[?b < `2` && !c]", "a[?s < 'b' || b == `1`]", "s < `1` || s > `1`",
    "s < `1` && t", "n1 > `0` && n1 < `9`", "!(n0 == `0`) || a", "`true` && b.p", "`false` || z",
    "a[?!(b == `1`) && b != `2`].b", "ns[?@ >= `1` || @ == `0`]",
    # against a number literal (Python's comparison for numbers), length inlined, `x[]` in one call
    "f0 >= `0.0`", "t >= `0`", "n1 <= `1.5`", "s > `0`", "ns[?@ < `1.0`]", "length(b) > `1`",
    "length(`null`)", "length(t)", "a[].c[]", "b.q[]", "ss[]", "[a[0], z][]",
    # the type tests written as isinstance, and tested as they are
    "is_array(a)", "is_object(@)", "is_string(z)", "a[?is_object(@)].b", "a[?!is_array(@)]",
    "is_string(s) && s || `null`", "is_object(b) || is_array(b)", "ns[?is_string(@)]",
    # contains / starts_with / ends_with written in place for the types they take
    "contains(a, `1`)", "contains(ns, `true`)", "contains(ns, n1)", "contains(b, 'p')", "contains(z, 'x')",
    "contains(s, n1)", "contains(s, `null`)", "contains(['p', 'x'], s)", "a[?contains(['x', 'y'], c[0].x)]",
    "starts_with(s, z)", "starts_with(n1, 'x')", "starts_with(ss, 'p')", "ends_with(s, 'c')",
    "ends_with(s, n1)", "ss[?starts_with(@, 'p')]", "a[?starts_with(s || '', 'x')].b",
    "contains(['p', `1`, `true`, `null`], n1)", "contains(['p', `1`, `true`], t)", "contains(['x'], s)",
    "ss[*].contains(['p', 'z'], @)", "a[*].contains(['x'], @)", "a[?contains(['x', `1`], b)].b",
    # argument types accepted by identity first: a boolean is no number, a null no string
    "sum([n1, t])", "sum([n1, f0])", "abs(t)", "abs(n1)", "clamp(t, `0`, `1`)", "join(s, [s, `null`])",
    "join(s, [s, s])", "max([s, n1])", "keys(a)", "to_number(t)",
    # join of a literal list and to_string written in place for strings and integers
    "join('', ['m_', s, to_string(n1)])", "join('__', [s, s])", "join('-', [s, n1])", "join('', [z])",
    "join('', ['a', 'b'])", "join(',', [s, ss])", "to_string(s)", "to_string(t)", "to_string(f0)",
    "to_string(ns)", "to_string(z)", "a[*].join('', [s, 'x'])", "ss[?join('', [@, 'x']) == 'px']",
    # sum of a list written in place for numbers: from 0, left to right, literals as they are
    "sum([n1, `1024`])", "sum([f0, n1, `-1`])", "sum([n1, `0.5`])", "sum([n0, z])", "sum([s, n1])",
    "sum([n1, ns[0]])", "a[*].sum([b, `1`])", "ns[?sum([@, `1`]) > `2`]", "sum([`-0.0`])",
    # slices written in place; an identity projection copies a list without nulls in C
    "a[:-1]", "a[1:3]", "a[::2]", "a[-2:]", "a[:-1].b", "a[::-1][0]", "ss[:1]", "s[1:]", "z[:1]",
    "a[::0]", "ns[*]", "a[*]", "z[*]", "[z, s][*]", "[s, z, s][*]", "a[0:2][*]", "b.q[*]",
    # a path then an index or a slice, read as the one path first
    "b.q[0]", "b.q[-1]", "b.q[5]", "b.q[:1]", "b.q[::-1]", "b.q[0].x", "b.p[0]", "b.r[0]", "b.q[1:][0]",
    "a[0].c[0].x", "b.q[:-1].x", "z.q[0]", "s.q[0]", "b.q[0] || b.q[-1]", "[b.q[0], b.q[-1]]",
    "b.q[*].x", "b.p[*]", "b.q[*]", "z.q[*].x", "b.q[*].[x, `1`]", "length(b.q[*].x)",
    # min / max / sort of numbers or of strings: the first element decides which every one must be
    "min([n1, `5`])", "max([f0, n1])", "min([s, 'b'])", "max([n1, s])", "min([s, n1])", "min([t, n1])",
    "max([n1, t])", "min(`[]`)", "max([z, n1])", "sort([s, 'a'])", "sort([n1, f0])", "min([n1, ns[0]])",
]
SCOPES = [
    {"a": [{"b": 1, "c": [{"x": "y"}]}, {"b": 2, "c": None}, {"b": 1, "c": []}, 3, None, [4, 5]],
     "b": {"p": {"x": 1}, "q": [1], "r": "s"}, "s": "x", "ss": ["p", "q"], "ns": [1, 2.5, 0],
     "t": True, "f": False, "n0": 0, "f0": 0.0, "n1": 1},
    {"a": {"b": 1}, "b": [1, 2], "s": "", "ss": [], "ns": [], "t": False, "n0": 0, "n1": 7},
    {"a": "text", "b": None, "s": "abc", "ns": [True], "ss": "notalist", "n1": "1"},
    {},
]


@pytest.mark.parametrize("expr", EDGE)
def test_edge_cases_match_the_interpreter(expr):
    for scope in SCOPES:
        _same(expr, scope)


def _strings(node, out: set):
    if isinstance(node, str):
        out.add(node)
    elif isinstance(node, dict):
        for v in node.values():
            _strings(v, out)
    elif isinstance(node, list):
        for v in node:
            _strings(v, out)
    return out


def _spec_expressions() -> list[str]:
    found: set = set()
    for path in sorted(Path(MAPPINGS_DIR).rglob("*.yaml")):
        _strings(load_file(path).value, found)
    out = []
    for text in sorted(found):
        if any(v in text for v in VOLATILE):
            continue
        try:
            compile_expr(text)
        except Exception:
            continue
        out.append(text)
    return out


def _scopes() -> list[dict]:
    docs = []
    for path in sorted((FIXTURES / "clients").glob("*.json")):
        doc = json.loads(path.read_text())
        docs.append(doc.get("body", doc))
    for path in sorted(FIXTURES.glob("*.json")):
        docs.append(json.loads(path.read_text()))
    events = []
    for path in sorted(FIXTURES.glob("*.sse")):
        for _n, data in SSEDecoder().feed(path.read_bytes()) + SSEDecoder().flush():
            try:
                events.append(json.loads(data))
            except ValueError:
                pass
    scopes = []
    for i, doc in enumerate(docs):
        scopes.append({"src": doc, "req": doc, "vars": {"requested": 100, "budget_wanted": 1024},
                       "cfg": {"default_max_tokens": 4096}, "model": "m",
                       "state": {"tool_index": 0, "block": "text", "finish": None, "id": "x"},
                       "event": events[i % len(events)] if events else None})
    for ev in events[::3]:
        scopes.append({"event": ev, "state": {"tool_index": -1, "json_tool": False, "block": None},
                       "req": {"stream_options": {"include_usage": True}}})
    return scopes


def test_every_spec_expression_matches_the_interpreter():
    exprs = _spec_expressions()
    assert len(exprs) > 50
    scopes = _scopes()
    for expr in exprs:
        for scope in scopes:
            _same(expr, scope)


# ---------------------------------------------------------------- stream: feed == event by event

def _reference_feed(t: StreamTranslator, chunk: bytes) -> bytes:
    """feed() spelled out: event() for each decoded event, then encode()."""
    out: list = []
    for _name, data in t.decoder.feed(chunk):
        if t.ended:
            break
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if type(event) is not dict:
            handler = t.handlers.get(data.strip())
            if handler is not None:
                t.scope["event"] = {"data": data}
                got: list = []
                handler(t.scope, got)
                out.extend(t._finish_out(got))
            continue
        out.extend(t.event(event))
    return t.encode(out)


def _stream_cases():
    catalog = Catalog.load()
    for name in catalog.names():
        spec = catalog.get(name)
        if spec.kind != "StreamMapping":
            continue
        pattern = STREAM_FIXTURES.get(spec.source or "")
        for path in sorted(FIXTURES.glob(pattern)) if pattern else []:
            yield pytest.param(spec, path, id=f"{name}:{path.name}")


@pytest.mark.parametrize("spec,path", list(_stream_cases()))
@pytest.mark.parametrize("chunk", [None, 1, 7, 64])
@pytest.mark.parametrize("req", [{"stream": True, "stream_options": {"include_usage": True}},
                                 {"stream": True, "response_format": {"type": "json_object"}}])
def test_feed_emits_the_same_bytes_as_event_by_event(spec, path, chunk, req, monkeypatch):
    raw = path.read_bytes()
    cfg = {"default_max_tokens": 4096, "stream_id": "x"}
    fast = StreamTranslator(spec, req=req, cfg=cfg, model="m")
    slow = StreamTranslator(spec, req=req, cfg=cfg, model="m")
    # the same ids and timestamps on both sides: start() mints them
    monkeypatch.setattr(functions, "clock", lambda: 1700000000.5)
    monkeypatch.setattr(functions, "random_bytes", lambda n: bytes(range(n)))
    a = fast.start_bytes()
    b = slow.encode(slow.start())
    assert a == b and fast.state == slow.state
    pieces = [raw] if chunk is None else [raw[i:i + chunk] for i in range(0, len(raw), chunk)]
    for piece in pieces:
        a += fast.feed(piece)
        b += _reference_feed(slow, piece)
        assert a == b
    a += fast.finish()
    b += _reference_finish(slow)
    assert a == b
    assert fast.ended == slow.ended and fast.seq == slow.seq


@pytest.mark.parametrize("spec", [p.values[0] for p in _stream_cases() if p.values[1].name == "anthropic-text.sse"
                                  or p.values[1].name == "openai-chat-tool-call.sse"])
@pytest.mark.parametrize("cut", [0.0, 0.01, 0.5])
def test_fail_bytes_are_the_failure_events_encoded(spec, cut, monkeypatch):
    """A transport failure after `cut` bytes of the stream: fail_bytes == encode(fail())."""
    path = FIXTURES / ("anthropic-text.sse" if spec.source == "anthropic/stream-event" else "openai-chat-tool-call.sse")
    raw = path.read_bytes()
    raw = raw[:int(len(raw) * cut)]
    monkeypatch.setattr(functions, "clock", lambda: 1700000000.5)
    monkeypatch.setattr(functions, "random_bytes", lambda n: bytes(range(n)))
    fast = StreamTranslator(spec, req={"stream": True}, cfg={"default_max_tokens": 4096}, model="m")
    slow = StreamTranslator(spec, req={"stream": True}, cfg={"default_max_tokens": 4096}, model="m")
    a = fast.start_bytes() + fast.feed(raw)
    b = slow.encode(slow.start()) + _reference_feed(slow, raw)
    a += fast.fail_bytes("the upstream connection failed mid-stream", "api_error")
    b += slow.encode(slow.fail("the upstream connection failed mid-stream", "api_error"))
    assert a == b and b"error" in a and fast.ended == slow.ended
    assert fast.fail_bytes("again") == b""  # a failed stream says nothing more


def _reference_finish(t: StreamTranslator) -> bytes:
    """finish() spelled out: event() for a trailing object event, then eof()."""
    out: list = []
    for _name, data in t.decoder.flush():
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if type(event) is dict:
            out.extend(t.event(event))
    out.extend(t.eof())
    return t.encode(out)


def test_dumps_writes_what_json_reads_back_byte_stable():
    for v in [{"a": [1, 2.5, None, True, False, "é\n\"", {"b": {}}]}, [], {}, "s\u2028", 1e300, -0.0,
              {"k": 10 ** 30, "z": 1, "a": 2}, [-(2 ** 64) - 1, 2 ** 200], 1e16, 1e-7, "a\x00\x1f\x7f"]:
        text = dumps(v)
        assert json.loads(text) == v and dumps(json.loads(text)) == text  # same value, same bytes
        assert text == dumps(v) and dumpb(v) == text.encode()
        assert " " not in text.replace("\u2028", "") or isinstance(v, str)
    # key order kept, compact, UTF-8 as it is
    assert dumps({"z": 1, "a": [1, {"é": "ü"}]}) == '{"z":1,"a":[1,{"é":"ü"}]}'
    assert dumps(10 ** 40) == "1" + "0" * 40
    # NaN and the infinities are not JSON: written as null
    assert dumps([float("nan"), float("inf"), float("-inf")]) == "[null,null,null]"
    # what msgspec refuses goes through the json module: a lone surrogate, a key that is not text
    assert dumps({"s": "\ud800", True: None}) == '{"s":"\ud800","true":null}'
    with pytest.raises(TypeError):
        dumps({"a": object()})
    assert isinstance(Raw("x"), str)


def test_loads_keeps_big_integers_and_refuses_what_is_not_json():
    from engine.jsontext import loads
    big = "[123456789012345678901234567890123456789, -18446744073709551617]"
    assert loads(big) == [123456789012345678901234567890123456789, -18446744073709551617]
    assert dumps(loads(big)) == big.replace(" ", "")
    for text in ["[nan]", "{", "[1] x", ""]:
        with pytest.raises(ValueError):
            loads(text)
    assert loads('["\\ud83d\\ude00"]') == ["\U0001f600"]
    assert loads('["\\ud800"]') == ["\ud800"]  # the json module reads it; callers refuse it by name


def test_client_bodies_keep_big_integers_and_refuse_what_json_lacks():
    from engine.server.api_errors import ApiError
    from engine.server.translate import load_json
    body = load_json(b'{"n": 123456789012345678901234567890, "m": -18446744073709551617, "f": 0.5}')
    assert body == {"n": 123456789012345678901234567890, "m": -18446744073709551617, "f": 0.5}
    assert dumpb(body) == b'{"n":123456789012345678901234567890,"m":-18446744073709551617,"f":0.5}'
    for raw, words in [(b'{"t": NaN}', "NaN"), (b'{"t": Infinity}', "Infinity"), (b'{"t": 1e400}', "1e400"),
                       (b'{"s": "\\ud800"}', "lone UTF-16 surrogate"), (b'{"a": 1', "not valid JSON")]:
        with pytest.raises(ApiError) as e:
            load_json(raw)
        assert e.value.status == 400 and words in e.value.message, (raw, e.value.message)
    assert load_json('{"a": "é"}'.encode("utf-16")) == {"a": "é"}  # other Unicode encodings still read


def test_enc_is_dumps():
    from engine.serialize import enc
    for v in ["", "é\n\"\\\u2028\x00", 0, -1, 10 ** 30, True, False, None, 0.1, -0.0, 1e300, float("nan"),
              float("inf"), float("-inf"), [1, "a"], {"k": {"x": None}}, []]:
        assert enc(v) == dumps(v), v
