"""Rules about fields a request does not carry go unevaluated (expr.absent_falsy, compiler._guarded).

A checks or drops rule whose condition is false while `src` holds none of some members is tested
first for one of them in the request; the generated check/dropped must answer exactly what the
rules evaluated one by one answer, and the guard must be sound: with its members taken out of
any case's request, the condition is false."""
from __future__ import annotations

import jmespath
import pytest
import yaml

from engine import cases as case_files, schemas
from engine.expr import absent_falsy, compile_expr
from engine.program import truthy
from engine.profiles import shipped

from test_cases import CASES, RUNS


@pytest.mark.parametrize("text,guard", [
    ("src.n != `null` && src.n > `1`", {"n"}),
    ("src.logprobs == `true`", {"logprobs"}),
    ("src.top_logprobs > `0`", {"top_logprobs"}),
    ("`0` < src.top_logprobs", {"top_logprobs"}),
    ("src.seed", {"seed"}),
    ("src.a.b.c", {"a"}),
    ("src.a[0].b", {"a"}),
    ("src.tools[?type != 'function']", {"tools"}),
    ("src.messages[].content[]", {"messages"}),
    ("src.a != `null` || src.b == 'x'", {"a", "b"}),
    ("vars.x && src.a != `null`", {"a"}),
    ("src.a != `null` && vars.x", {"a"}),
    ("profile.p && (src.a == `true` || src.b > `2`)", {"a", "b"}),
    ("`true` && src.a", {"a"}),  # and: any side known to be false while its members are absent
])
def test_guard_of(text, guard):
    assert absent_falsy(jmespath.compile(text).parsed) == frozenset(guard)
    assert compile_expr(text)[0].guard == frozenset(guard)


@pytest.mark.parametrize("text", [
    "src.a == `null`",            # true while a is absent
    "src.a != 'x'",               # true while a is absent
    "!(src.a)",
    "src.a || vars.b",            # the right side does not depend on src
    "length(src.a || `[]`) > `0`",  # a default in between: not a path into src.a
    "vars.a",
    "src",
    "contains(src.a || `[]`, 'x')",
    "src.a | [0]",
])
def test_no_guard_where_none_is_sure(text):
    assert absent_falsy(jmespath.compile(text).parsed) is None


def _scopes(spec, case: dict, src: dict):
    cfg = {"default_max_tokens": 4096, "prompt_cache": "off", "prompt_cache_ttl": "5m", **(case.get("config") or {})}
    model = case.get("model", "claude-sonnet-4-5")
    profile = {**shipped().get(model), **(case.get("profile") or {})}
    for prof in (profile, {**profile, "sampling": not profile.get("sampling"), "prefill": not profile.get("prefill"),
                           "strict_tools": not profile.get("strict_tools")}):
        yield spec.scope(src=src, req=case.get("request") or {}, cfg=cfg, model=model, profile=prof)


REQUEST_RUNS = [r for r in RUNS if r[1] in ("request", "submit")]


@pytest.mark.parametrize("pair,kind,version,path", REQUEST_RUNS,
                         ids=[f"{p}/{k}/{v}/{f.name}" for p, k, v, f in REQUEST_RUNS])
def test_guarded_rules_answer_as_the_rules_do(pair, kind, version, path, catalog):
    case = yaml.safe_load(path.read_text())
    spec = catalog.get(f"{pair}/{kind}", version)
    for scope in _scopes(spec, case, case["input"]):
        first = next(((p, m, s, c) for cond, p, m, s, c in spec.checks if truthy(cond(scope))), None)
        assert spec.check(scope) == first
        assert spec.dropped(scope) == [(p, r) for cond, p, r in spec.drops if truthy(cond(scope))]
    # each guard is sound: without its members the rule does not hold
    guarded = [(cond, cond.guard) for cond, *_ in (*spec.checks, *spec.drops) if getattr(cond, "guard", None)]
    for cond, guard in guarded:
        src = {k: v for k, v in case["input"].items() if k not in guard}
        if schemas.first_error(spec.source, src) is not None:
            continue  # a required member: the server refuses the body before any rule
        for scope in _scopes(spec, case, src):
            assert not truthy(cond(scope)), (path.name, sorted(guard))


def test_most_rules_of_the_chat_request_spec_are_guarded(catalog):
    spec = catalog.get("chat-to-messages/request", "2026-12-01")
    rules = [cond for cond, *_ in (*spec.checks, *spec.drops)]
    guarded = [cond for cond in rules if getattr(cond, "guard", None)]
    assert len(guarded) >= 0.6 * len(rules), (len(guarded), len(rules))


def test_the_generated_rules_test_their_guard_first(catalog):
    """Each guarded rule of the generated check and dropped is reached only when one of its
    members is in the request; the others are tested as written."""
    spec = catalog.get("chat-to-messages/request", "2026-12-01")
    for part, rules in (("checks>", spec.checks), ("drops>", spec.drops)):
        src = next(text for name, text in spec.generated if name.endswith(part))
        tests = [line.strip()[3:] for line in src.splitlines() if line.strip().startswith("if ")]
        assert len(tests) == len(rules)
        for (cond, *_), (i, test) in zip(rules, enumerate(tests)):
            guard = getattr(cond, "guard", None)
            if guard:
                # a guard of one member is written as its name (a literal), a set as G{i}
                assert test.startswith(f"{next(iter(guard))!r} in _gp and " if len(guard) == 1
                                       else f"not G{i}.isdisjoint(_gp) and ")
            else:
                assert "_gp" not in test


def test_paths_only_guarded_rules_read_are_read_by_them_alone(catalog):
    """Every drops rule of the chat request spec that reads `src` is guarded, so the generated
    dropped reads no member of `src` ahead of the rules: a request without those members pays
    for none of their reads."""
    spec = catalog.get("chat-to-messages/request", "2026-12-01")
    src = next(text for name, text in spec.generated if name.endswith("drops>"))
    head = src.split("    _gp = ", 1)[0]
    assert "scope.get('src')" not in head and "'temperature'" not in head
    assert ".get('temperature')" in src.split("    _gp = ", 1)[1]


def test_hoisting_counts_the_reads_of_hot_lines_only():
    from engine.expr import hoist_paths
    read = "(_pa_src.get(_kr_{k}) if type(_pa_src := scope.get(_kr_src)) is dict else None)"
    a, b = read.format(k="a"), read.format(k="b")
    body = [f"    if G0 in _gp and {a} and {a}:", "        x = 1",
            f"    if {b} and {b}:", f"        y = {a}"]
    out = hoist_paths(body, {}, cold=frozenset({0}))
    head = [line for line in out if not line.startswith("    if") and not line.startswith("        ")]
    assert any("_kr_b" in line for line in head)        # read twice by hot lines: once, ahead
    assert not any("_kr_a" in line for line in head)    # once by a hot line, twice by a cold one
    assert out[-4].count("_kr_a") == 2 and "_kr_b" not in out[-2]
    # without `cold`, the reads of `a` count too
    assert any("_kr_a" in line for line in hoist_paths(body, {}) if not line.startswith("    if"))
