"""Generated code is named for the spec part it runs and its source is visible: in tracebacks
(linecache) and through `engine explain` / `engine check --show-source`."""
from __future__ import annotations

import subprocess
import sys
import traceback

import pytest

from engine.stream import StreamTranslator
from tests.test_compiler import compile_text


def test_a_traceback_through_a_generated_handler_shows_its_source_line():
    spec, errors = compile_text("""
    state: {n: 0}
    framing: {event_field: type}
    discriminator: event.type
    on:
      add:
        - incr: {n: event.t}
        - emit: {type: {const: added}, n: state.n}
    """, kind="StreamMapping", name="stream")
    assert not errors, errors
    t = StreamTranslator(spec)
    with pytest.raises(TypeError) as info:
        t.feed(b'data: {"type":"add","t":"not a number"}\n\n')
    frames = traceback.extract_tb(info.value.__traceback__)
    generated = [f for f in frames if f.filename.startswith("<spec")]
    assert generated, [f.filename for f in frames]
    last = generated[-1]
    assert last.filename == "<spec t/stream@2025-01-01 on.add handler>"
    assert last.line and "+" in last.line and "get(" in last.line  # the incr, as generated
    text = "".join(traceback.format_exception(info.value))
    assert last.line in text
    # the same source is kept on the spec, under the same name
    assert dict(spec.generated)[last.filename].splitlines()[last.lineno - 1].strip() == last.line


def test_every_exec_of_generated_source_goes_through_codegen():
    from pathlib import Path
    import engine
    root = Path(engine.__file__).parent
    sites = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if p.name != "codegen.py" and ("exec(" in p.read_text() or "exec(compile" in p.read_text())]
    assert sites == []


@pytest.mark.parametrize("argv", [["explain", "chat-to-messages/stream@2026-12-01"],
                                  ["check", "--show-source", "chat-to-messages/stream@2026-12-01"]])
def test_the_cli_prints_what_a_spec_compiled_to(argv):
    r = subprocess.run([sys.executable, "-m", "engine", *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "# <spec chat-to-messages/stream@2026-12-01 on.content_block_delta handler>" in r.stdout
    assert "def handler(scope, out):" in r.stdout
    assert "def build(scope):" in r.stdout
    # what the gateway keeps of a request once sent (translate.let_go)
    assert "# members of req it reads: functions, response_format, stream_options, tools\n" in r.stdout


def test_the_cli_names_an_unknown_spec():
    r = subprocess.run([sys.executable, "-m", "engine", "explain", "no-such/spec"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "no mapping spec named 'no-such/spec'" in r.stderr


def test_linecache_gives_every_line_of_every_generated_source():
    """The lines of a generated source are kept unsplit until read; read, they are its lines."""
    import linecache
    spec, errors = compile_text("""
    vars: {n: req.n || `1`}
    template:
      a: vars.n
      b: {when: req.x, value: {c: req.y, d: vars.n}}
    """, kind="RequestMapping", name="request")
    assert not errors, errors
    assert spec.generated
    for filename, src in spec.generated:
        lines = src.splitlines(True)
        assert type(linecache.cache[filename][2]) is not list  # split only when read: kept once
        assert linecache.getlines(filename) == lines
        assert [linecache.getline(filename, i + 1) for i in range(len(lines))] == lines
        assert linecache.getline(filename, len(lines) + 1) == ""
        assert linecache.getlines(filename)[1:] == lines[1:]  # slices, as inspect reads them
    linecache.checkcache()  # entries without an mtime stay (no file to compare with)
    assert linecache.getlines(spec.generated[0][0]) == spec.generated[0][1].splitlines(True)


def test_a_jmespath_function_is_called_through_one_generated_caller_per_arity():
    """Every call site of `length` (one argument) in every spec shares one generated caller,
    named for no spec: a gateway's specs call functions at about 230 places through 21."""
    import linecache
    from engine import expr
    first, errors = compile_text("template: {a: 'length(req.xs)', b: 'length(req.ys)'}",
                                 kind="RequestMapping", name="one")
    assert not errors, errors
    second, errors = compile_text("template: {c: 'length(req.zs)', j: \"join(',', req.xs)\"}",
                                  kind="RequestMapping", name="two")
    assert not errors, errors
    assert first.apply(req={"xs": [1, 2], "ys": "abc"}) == {"a": 2, "b": 3}
    assert second.apply(req={"zs": {"k": 1}, "xs": ["p", "q"]}) == {"c": 1, "j": "p,q"}
    caller = expr._CALLERS[("length", 1)]
    assert expr._caller("length", 1) is caller and expr._caller("join", 2) is expr._CALLERS[("join", 2)]
    filename = caller.__code__.co_filename
    assert filename.startswith("<generated jmespath length") and linecache.getlines(filename)
    for spec in (first, second):
        assert not any("jmespath" in name for name, _ in spec.generated)
    with pytest.raises(Exception, match="length"):  # a wrong type: the interpreter's own error
        first.apply(req={"xs": 5, "ys": "x"})


def test_min_and_max_of_numbers_or_of_strings_skip_the_interpreter(monkeypatch):
    """`array-number|array-string` arguments (min, max, sort) are checked in the generated
    caller, as one-type arguments are; only a list the interpreter would refuse reaches it."""
    from engine import expr
    calls = []
    real = expr._FUNCS.call_function
    monkeypatch.setattr(expr._FUNCS, "call_function", lambda *a: calls.append(a) or real(*a))
    # callers made here (holding the spy) stay here: the other tests see the module's own
    monkeypatch.setattr(expr, "_CALLERS", {k: v for k, v in expr._CALLERS.items()
                                           if k[0] not in ("min", "max", "sort")})
    spec, errors = compile_text("template: {lo: 'min([req.a, req.b])', hi: 'max(req.ss)', "
                                "s: 'sort(req.ns)'}", kind="RequestMapping", name="minmax")
    assert not errors, errors
    assert spec.apply(req={"a": 5, "b": 2.5, "ss": ["p", "q"], "ns": [3, 1]}) == {"lo": 2.5, "hi": "q", "s": [1, 3]}
    assert spec.apply(req={"a": 1, "b": 1, "ss": [], "ns": []}) == {"lo": 1, "s": []}  # max of nothing: null
    assert calls == []
    with pytest.raises(Exception, match="min"):
        spec.apply(req={"a": 1, "b": "x"})  # a number then a string: the interpreter's error
    assert [c[0] for c in calls] == ["min"]


def test_a_generated_function_gets_its_code_object_on_its_first_call():
    """Its code object is made then and swapped in: later calls run it directly, no stub frame."""
    from engine import codegen
    env: dict = {"K": 10}
    fn = codegen.define("def add(a, b=1, *, c=100):\n    return a + b + c + K", "test add", env, "add")
    stub = fn.__code__
    assert stub.co_filename.startswith("<generated test add") and stub.co_code == codegen._stub.__code__.co_code
    assert fn(1) == 112 and fn.__code__ is not stub and fn.__code__.co_varnames[:3] == ("a", "b", "c")
    assert fn(1, 2, c=3) == 16 and fn.__defaults__ == (1,) and fn.__kwdefaults__ == {"c": 100}
    assert env["add"].__code__ is fn.__code__  # one code object for both
    frames = []

    def probe():
        frames.extend(f.name for f in traceback.extract_stack())
        return 0
    env2 = {"probe": probe}
    g = codegen.define("def g():\n    return probe()", "test probe", env2, "g")
    g()
    first = frames[:]
    frames.clear()
    g()
    assert first.count("first") == 1 and "first" not in frames and frames.count("g") == 1


def test_a_source_the_parser_refuses_is_refused_when_it_is_defined():
    from engine import codegen
    with pytest.raises(SyntaxError):
        codegen.define("def f(:\n    pass", "test broken", {}, "f")


def _functions_of(root) -> list:
    """The functions reachable from `root` (a compiled spec), module and class dicts left out."""
    import gc
    import types
    seen, out, todo = set(), [], [root]
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, (type, types.ModuleType)):
            continue
        seen.add(id(o))
        if type(o) is types.FunctionType:
            out.append(o)
            if o.__globals__.get("__name__", "").startswith("engine"):
                continue  # an engine module's function: its globals are the module's
        todo.extend(gc.get_referents(o))
    return out


def test_a_compiled_spec_makes_the_code_objects_of_what_runs_only():
    """Most of a shipped spec's generated functions are never called (a parent inlines their
    source): they hold no code object of their own. Those that run get theirs."""
    import json
    from engine.catalog import Catalog
    from engine.codegen import _stub
    from tests.test_item_memo import CLIENTS

    def stub(fn):
        return fn.__code__.co_code == _stub.__code__.co_code
    spec = Catalog.load().get("chat-to-messages/request")
    generated = [f for f in _functions_of(spec)  # its own: named for it, or a node's lambda
                 if f.__code__.co_filename.startswith("<spec") or f.__code__.co_filename == "<string>"]
    assert len(generated) > 50 and all(map(stub, generated))
    body = json.loads((CLIENTS / "codex-0.94-chat-req1.json").read_text())["body"]
    sc = spec.scope(src=body, model="claude-sonnet-4-5", cfg={"default_max_tokens": 4096})
    out = spec.template(sc)
    assert out["model"] == "claude-sonnet-4-5" and out["tools"][0]["name"] == body["tools"][0]["function"]["name"]
    assert not stub(spec.scope) and not stub(spec.template)
    assert 0 < sum(map(stub, generated)) < len(generated)  # what this body did not run is still a stub


def test_warming_a_catalog_makes_what_every_request_runs_and_nothing_else():
    """engine serve warms its catalog before it serves: each spec's entry points (vars, checks,
    drops, template and its writer, stream handlers) have their code objects; the functions a
    parent inlines stay stubs."""
    from engine.catalog import Catalog
    from engine.codegen import _stub

    def stub(fn):
        return getattr(fn, "__code__", None) is not None and fn.__code__.co_code == _stub.__code__.co_code
    catalog = Catalog.load()
    request, stream = catalog.get("chat-to-messages/request"), catalog.get("chat-to-messages/stream")
    entry = [request.scope, request.check, request.dropped, request.template, request.template.json,
             *(h for h in stream.text_handlers.values() if h is not None)]
    assert len(entry) > 8 and all(map(stub, entry))
    catalog.warm()
    assert not any(map(stub, entry))
    inner = [f for f in _functions_of(request) if f.__code__.co_filename == "<string>"]
    assert inner and all(map(stub, inner))
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert request.template(request.scope(src=body, model="claude-x", cfg={}))["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_constants_bound_to_names_are_compiled_as_literals():
    from engine.codegen import literal
    env = {"_k1": "messages", "_c2": -3, "_l3": 1.5, "_n4": None, "_b5": True, "K0": "model",
           "_f6": len, "_x7": [1], "_s8": "x" * 201, "_i9": float("inf"), "_t10": (1, 2), "_k": "short",
           "_g11": 10 ** 5000, "_u12": "ключ\n'\"\ud800"}
    src = ("(_d.get(_k1), _c2 ** 2, _l3, _n4, _b5, {K0: 1}, _f6(_k1), _x7, _s8, _i9, _t10, "
           "'_k1 in a string', \"it's _k1\", obj._k1, _k1.upper, _k12, _k1x, _g11, _u12)")
    assert literal(src, env) == (
        "(_d.get('messages'), (-3) ** 2, 1.5, None, True, {'model': 1}, _f6('messages'), _x7, _s8, _i9, "
        "_t10, '_k1 in a string', \"it's _k1\", obj._k1, _k1.upper, _k12, _k1x, _g11, "
        + repr(env["_u12"]) + ")")
    assert eval(literal("_u12", env), {}) == env["_u12"]
    # a name that is assigned, or called, is never written over
    assert literal("(_k1 := 2) == _k1", env) == "(_k1 := 2) == 'messages'"
    assert literal("_k1 = 2", env) == "_k1 = 2"
    assert literal("_k1(3)", env) == "_k1(3)"
    # the value is the same as through the name, for each kind written as a literal
    for name in ("_k1", "_c2", "_l3", "_n4", "_b5"):
        assert eval(literal(f"{name} ** 1 if type({name}) in (int, float) else {name}", env), dict(env)) == \
            eval(f"{name} ** 1 if type({name}) in (int, float) else {name}", dict(env))


def test_a_compiled_spec_reads_its_keys_as_literals(catalog):
    """What runs per request loads keys as constants, not through the module's globals."""
    spec = catalog.get("chat-to-messages/request", "2026-12-01")
    src = next(text for name, text in spec.generated if name.endswith(" scope>"))
    assert "scope.get('src')" in src and "_kr_" not in src


def test_keys_and_texts_of_any_spelling_survive_being_written_as_literals():
    from tests.test_compiler import apply
    out = apply("""
    template:
      "it's": src."it's"
      'say "hi"': "'back\\\\slash\\nnew line'"
      ключ: src."ключ"
      "1e5": "`100000`"
      nested: {"_k1": src.a, "a.b": "`-2`", "x y": "`-0.5`"}
    """, {"it's": 1, "ключ": "значение", "a": None})
    assert out == {"it's": 1, 'say "hi"': "back\\slash\nnew line", "ключ": "значение", "1e5": 100000,
                   "nested": {"a.b": -2, "x y": -0.5}}
