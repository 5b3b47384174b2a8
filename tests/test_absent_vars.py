"""Vars about fields `src` does not hold are their known value (compiler._absent_vars).

A var that reads nothing but members of `src` and other such vars is worked out once, at compile
time, on a `src` without those members; the generated scope gives that value unless one of them
is there. It must give exactly what evaluating the vars one by one gives, on every case file, and
the value must be sound: with the members taken out of any case's input, the var is that value."""
from __future__ import annotations

import pytest
import yaml

from engine import schemas
from engine.catalog import Catalog
from engine.expr import absent_falsy
from engine.program import CompiledSpec
from engine.profiles import shipped
from jmespath.parser import Parser

from test_cases import RUNS

SCOPED_RUNS = [r for r in RUNS if r[1] in ("request", "submit", "response")]


def _scopes(case: dict, src):
    cfg = {"default_max_tokens": 4096, "prompt_cache": "off", "prompt_cache_ttl": "5m", **(case.get("config") or {})}
    model = case.get("model", "claude-sonnet-4-5")
    profile = {**shipped().get(model), **(case.get("profile") or {})}
    for prof in (profile, {**profile, "sampling": not profile.get("sampling"), "thinking": "none",
                           "prefill": not profile.get("prefill")}):
        yield dict(src=src, req=case.get("request") or {}, cfg=cfg, model=model, profile=prof)


@pytest.mark.parametrize("pair,kind,version,path", SCOPED_RUNS,
                         ids=[f"{p}/{k}/{v}/{f.name}" for p, k, v, f in SCOPED_RUNS])
def test_the_generated_scope_is_the_vars_one_by_one(pair, kind, version, path, catalog):
    case = yaml.safe_load(path.read_text())
    spec = catalog.get(f"{pair}/{kind}", version)
    for values in _scopes(case, case["input"]):
        assert spec.scope(**values)["vars"] == CompiledSpec.scope(spec, **values)["vars"]
    _sound(spec, case, path.name)


def _sound(spec, case: dict, label: str) -> set:
    """Each known var, its members taken out of the case's input, is its known value; the names
    of those this case could check."""
    checked = set()
    for name, (members, value) in spec.absent_vars.items():
        src = {k: v for k, v in case["input"].items() if k not in members}
        if schemas.first_error(spec.source, src) is not None:
            continue  # the server refuses such a body (or answer) before any spec runs
        for values in _scopes(case, src):
            got = _var(spec, values, name)
            if got is not _RAISED:
                assert got == value, (label, name)
                checked.add(name)
    return checked


def test_every_known_var_of_a_request_spec_is_checked_by_some_case(catalog):
    seen: dict = {}
    for pair, kind, version, path in SCOPED_RUNS:
        if kind == "response":
            continue
        spec = catalog.get(f"{pair}/{kind}", version)
        seen.setdefault((spec.ref, frozenset(spec.absent_vars)), set()).update(
            _sound(spec, yaml.safe_load(path.read_text()), path.name))
    for (ref, known), checked in seen.items():
        assert known <= checked, (ref, sorted(known - checked))


_RAISED = object()


def _var(spec, values: dict, name: str):
    """The var `name`, the vars evaluated one by one up to it; _RAISED where one before it
    raises (as the whole scope then does, whatever it is)."""
    scope = dict(values)
    v = scope["vars"] = {}
    for k, f in spec.vars:
        try:
            v[k] = f(scope)
        except Exception:  # noqa: BLE001
            return _RAISED
        if k == name:
            return v[k]
    raise AssertionError(name)


def test_the_chat_request_spec_knows_its_tool_vars_without_tools(catalog):
    spec = catalog.get("chat-to-messages/request", "2026-12-01")
    known = spec.absent_vars
    assert known["all_tools"] == (frozenset({"tools", "functions"}), None)
    assert known["user_tools"][0] == frozenset({"tools", "functions", "tool_choice"})  # through vars
    assert known["effort_level"] == (frozenset({"reasoning_effort"}), "high")
    # read from the profile, or from a member every request has: computed as written
    assert "thinking_mode" not in known and "parts" not in known and "max_tokens" not in known
    src = next(text for name, text in spec.generated if name.endswith(" scope>"))
    # its value when the request has no `reasoning_effort`, written as a literal, then its guard
    assert any(ln.startswith("    v['effort_level'] = 'high' if 'reasoning_effort' not in _gp else (")
               for ln in src.splitlines())


SPEC = """\
apiVersion: engine.mapping/v1
kind: RequestMapping
metadata: {{name: t/request, version: "2025-01-01", changes: ["test spec"]}}
source: openai/chat.request
target: anthropic/messages.request
helpers: [new_id]
vars:
{vars}
template:
  model: model
"""


def _compiled(tmp_path, vars_text: str):
    folder = tmp_path / "t" / "request"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "2025-01-01.yaml").write_text(SPEC.format(vars=vars_text))
    return Catalog.load(tmp_path).get("t/request")


def test_which_vars_are_known(tmp_path):
    spec = _compiled(tmp_path, """\
  a: "src.temperature || `1`"
  b: "vars.a > `0.5` && src.top_p"
  c: "src.temperature || profile.sampling"
  d: "length(keys(src))"
  e: "src.seed && new_id('x')"
  f: "src.model"
  g: {when: src.stop, value: {const: [1]}, else: {const: {k: v}}}
  h: "vars.c || src.n"
""")
    known = spec.absent_vars
    assert known["a"] == (frozenset({"temperature"}), 1)
    assert known["b"] == (frozenset({"temperature", "top_p"}), None)
    assert known["g"] == (frozenset({"stop"}), {"k": "v"})
    # reads the profile / `src` whole / calls a volatile function / reads a required member /
    # reads a var that is not known
    assert not {"c", "d", "e", "f", "h"} & known.keys()
    scope = spec.scope(src={"model": "m"}, profile={})
    assert scope["vars"]["g"] == {"k": "v"} and scope["vars"]["g"] is not spec.scope(src={"model": "m"})["vars"]["g"]
    assert spec.scope(src={"model": "m", "temperature": 0.2, "top_p": 0.9})["vars"]["b"] is False
    assert spec.scope(src={"model": "m", "temperature": 0.7, "top_p": 0.9})["vars"]["b"] == 0.9


@pytest.mark.parametrize("text,guard", [
    ("vars.off", {"seed"}),                     # false then
    ("vars.none.x", {"stop"}),                  # a path into a var that is then null
    ("vars.none == 'a'", {"stop"}),
    ("vars.off && profile.sampling", {"seed"}),
    ("vars.none || src.n", {"stop", "n"}),
])
def test_a_rule_on_known_vars_is_guarded_by_their_members(text, guard):
    known = {"off": (frozenset({"seed"}), False), "none": (frozenset({"stop"}), None),
             "one": (frozenset({"n"}), 1), "empty": (frozenset({"n"}), [])}
    assert absent_falsy(Parser().parse(text).parsed, known) == frozenset(guard)


@pytest.mark.parametrize("text", [
    "vars.one",             # true then
    "vars.off != `null`",   # false is not null
    "vars.empty[*]",        # a projection of [] is []
    "vars.other",           # not a known var
    "vars.off.x == `null`",
    "vars.zero",            # 0 and 0.0 are true in JMESPath
    "vars.zero_f",
])
def test_no_guard_where_a_known_var_does_not_make_the_rule_false(text):
    known = {"off": (frozenset({"seed"}), False), "one": (frozenset({"n"}), 1), "empty": (frozenset({"n"}), []),
             "zero": (frozenset({"n"}), 0), "zero_f": (frozenset({"n"}), 0.0)}
    assert absent_falsy(Parser().parse(text).parsed, known) is None
