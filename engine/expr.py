"""JMESPath expressions compiled once; plain field paths become getter closures.

A compiled expression is a plain function `f(scope) -> value`. Plain dotted paths
(`event.delta.text`) skip the interpreter entirely (about 0.1 µs instead of 1-3 µs)."""
from __future__ import annotations

import itertools
import operator
import re
from numbers import Number

import jmespath
from jmespath import functions as jfunctions
from jmespath import exceptions as jexc
from jmespath.parser import Parser
from jmespath.visitor import Options, TreeInterpreter

from . import codegen
from .functions import CUSTOM_FUNCTIONS, VOLATILE, Functions
from .grown import RUN as GROWN_RUN, grown
from .program import SHARED, filtered, filtered_keep

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_INTERPRETER = TreeInterpreter(Options(custom_functions=Functions()))
_PARSER = Parser()


class ExprError(Exception):
    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.offset = offset  # character offset inside the expression, for the caret


def _getter(parts: tuple):
    """A plain path as a closure; `.path` and `.code` let generated code inline the lookups."""
    fn = _getter_fn(parts)
    fn.path = parts
    fn.guard = frozenset({parts[1]}) if len(parts) > 1 and parts[0] == "src" else None
    g = _Gen()
    fn.code = (g.gen({"type": "subexpression", "children": [{"type": "field", "value": p} for p in parts]},
                     "scope", True), g.env)
    return fn


def _getter_fn(parts: tuple):
    # Unrolled for the common depths: each level costs one dict.get and one type check.
    if len(parts) == 1:
        (a,) = parts

        def get1(scope):
            return scope.get(a)
        return get1
    if len(parts) == 2:
        a, b = parts

        def get2(scope):
            v = scope.get(a)
            return v.get(b) if type(v) is dict else None
        return get2
    if len(parts) == 3:
        a, b, c = parts

        def get3(scope):
            v = scope.get(a)
            if type(v) is not dict:
                return None
            v = v.get(b)
            return v.get(c) if type(v) is dict else None
        return get3

    def getn(scope):
        v = scope
        for p in parts:
            if type(v) is not dict:
                return None
            v = v.get(p)
        return v
    return getn


def _truthy(v) -> bool:
    return not (v is None or v is False or v == "" or v == [] or v == {})


def _eq(a, b) -> bool:
    # JMESPath equality: true/false never equal 1/0
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    return a == b


def _comparable(v) -> bool:
    # numbers (not booleans) and strings, as jmespath 1.1's interpreter
    return (type(v) is not bool and isinstance(v, Number)) or isinstance(v, str)


def _ordered(op):
    def cmp(a, b):
        # numbers first without isinstance(v, Number): an ABC check costs ~0.2 µs a value
        ta, tb = type(a), type(b)
        if (ta is int or ta is float) and (tb is int or tb is float):
            return op(a, b)
        if _comparable(a) and _comparable(b):
            return op(a, b)
        return None
    return cmp


_CMP = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _ordered(operator.lt),
    "lte": _ordered(operator.le),
    "gt": _ordered(operator.gt),
    "gte": _ordered(operator.ge),
}
_FUNCS = Functions()
_TYPES = jfunctions.REVERSE_TYPES_MAP


_CALLERS: dict = {}  # (name, nargs) -> callv: one per function and arity, shared by every spec


def _caller(name: str, nargs: int):
    """`callv(*values)`: the function applied to evaluated arguments, with the interpreter's
    semantics. When every argument already has a type the signature allows (checked with the
    interpreter's own rule: the Python type name), the function is called directly; otherwise
    the interpreter's call_function runs, which raises the same JMESPathTypeError/ArityError it
    always would. Built once per function and arity (the function table is fixed at import):
    a gateway's specs call `length`, `join`, ... at about 230 places, through 21 of these."""
    fn = _CALLERS.get((name, nargs))
    if fn is None:
        with codegen.shared():
            fn = _CALLERS[(name, nargs)] = _make_caller(name, nargs)
    return fn


def _make_caller(name: str, nargs: int):
    call = _FUNCS.call_function
    spec = _FUNCS.FUNCTION_TABLE.get(name)
    fast = None
    if spec is not None:
        sig = spec["signature"]
        if not (sig and sig[-1].get("variadic")) and len(sig) == nargs:
            checks = []
            for param in sig:
                types = param.get("types") or ()
                if not types:
                    checks.append(None)
                    continue
                top, sub = set(), []
                for t in types:
                    head, _, subtype = t.partition("-")
                    top.update(_TYPES[head])
                    if subtype:
                        sub.append(frozenset(_TYPES[subtype]))
                checks.append((frozenset(top), tuple(sub)))
            if checks is not None:
                fast = (spec["function"], tuple(checks))
    if fast is None:
        return lambda *vals: call(name, list(vals))
    fn, checks = fast
    # straight-line checks, generated once
    params = [f"a{i}" for i in range(nargs)]
    env = {"call": call, "fn": fn, "FUNCS": _FUNCS, "NAME": name}
    slow = f"return call(NAME, [{', '.join(params)}])"
    lines = [f"def callv({', '.join(params)}):"]
    for i, chk in enumerate(checks):
        if chk is None:
            continue
        top, sub = chk
        # the JSON types whose names the parameter allows, tested by identity first: the same
        # verdict as the name test, without reading __name__ of every value
        env[f"T{i}"], env[f"P{i}"] = top, _plain(top)
        lines.append(f"    if type(a{i}) not in P{i} and type(a{i}).__name__ not in T{i}: {slow}")
        if len(sub) == 1:
            env[f"S{i}"], env[f"Q{i}"] = sub[0], _plain(sub[0])
            lines += [f"    for e in a{i}:",
                      f"        if type(e) not in Q{i} and type(e).__name__ not in S{i}: {slow}"]
        elif sub:
            # `array-number|array-string` (min, max, sort): the first element picks which one
            # every element must be. Only plain JSON types are taken here; anything else is
            # left to the interpreter, whose verdict it is
            env[f"Q{i}"] = tuple(_plain(s) for s in sub)
            lines += [f"    if a{i}:",
                      f"        k = type(a{i}[0])",
                      f"        for q in Q{i}:",
                      f"            if k in q: break",
                      f"        else: {slow}",
                      f"        for e in a{i}:",
                      f"            if type(e) not in q: {slow}"]
    lines.append(f"    return fn(FUNCS{''.join(', ' + p for p in params)})")
    return codegen.define("\n".join(lines), f"jmespath {name}", env, "callv")


_JSON_TYPES = (str, int, float, bool, list, dict, type(None))


def _plain(names: frozenset) -> frozenset:
    """The JSON value types whose Python type name is in `names`."""
    return frozenset(t for t in _JSON_TYPES if t.__name__ in names)


def _function(name: str, args: tuple):
    callv = _caller(name, len(args))
    if len(args) == 1:
        (a,) = args
        return lambda v: callv(a(v))
    return lambda v: callv(*[f(v) for f in args])


def _chain(fns: tuple):
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        return lambda v: b(a(v))

    def chain(v):
        for f in fns:
            v = f(v)
        return v
    return chain


def _closure(node):
    """AST -> closure, node by node, with the interpreter's semantics (jmespath/visitor.py);
    a node type not handled here (expref arguments) runs in the interpreter on the same value,
    so mixing the two is exact."""
    t = node["type"]
    ch = node.get("children", ())
    if t == "field":
        key = node["value"]
        return lambda v: v.get(key) if type(v) is dict else None
    if t in ("subexpression", "index_expression", "pipe"):
        if t == "subexpression" and all(c["type"] == "field" for c in ch):
            get = _getter_fn(tuple(c["value"] for c in ch))
            return lambda v: get(v) if type(v) is dict else None  # the current value may be anything
        return _chain(tuple(_closure(c) for c in ch))
    if t == "literal":
        lit = node["value"]
        return lambda v: lit
    if t == "current" or t == "identity":
        return lambda v: v
    if t == "index":
        i = node["value"]

        def index(v):
            if type(v) is not list:
                return None
            try:
                return v[i]
            except IndexError:
                return None
        return index
    if t == "slice":
        sl = slice(*ch)
        return lambda v: v[sl] if type(v) is list else None
    if t == "projection" or t == "filter_projection":
        left, right = _closure(ch[0]), _closure(ch[1])
        if ch[1]["type"] == "identity":
            right = None
        cond = _closure(ch[2]) if t == "filter_projection" else None

        def project(v):
            base = left(v)
            if type(base) is not list:
                return None
            out = []
            for e in base:
                if cond is not None:
                    c = cond(e)
                    if c is None or c is False or c == "" or c == [] or c == {}:
                        continue
                if right is not None:
                    e = right(e)
                if e is not None:
                    out.append(e)
            return out
        return project
    if t == "value_projection":
        left, right = _closure(ch[0]), _closure(ch[1])

        def values(v):
            base = left(v)
            if type(base) is not dict:
                return None
            out = []
            for e in base.values():
                e = right(e)
                if e is not None:
                    out.append(e)
            return out
        return values
    if t == "flatten":
        inner = _closure(ch[0])
        return lambda v: flatten(inner(v))
    if t == "or_expression":
        a, b = _closure(ch[0]), _closure(ch[1])

        def or_(v):
            x = a(v)
            return x if _truthy(x) else b(v)
        return or_
    if t == "and_expression":
        a, b = _closure(ch[0]), _closure(ch[1])

        def and_(v):
            x = a(v)
            return b(v) if _truthy(x) else x
        return and_
    if t == "not_expression":
        a = _closure(ch[0])
        return lambda v: not _truthy(a(v))
    if t == "comparator" and node["value"] in _CMP:
        a, b, op = _closure(ch[0]), _closure(ch[1]), _CMP[node["value"]]
        if node["value"] in ("eq", "ne") and ch[1]["type"] == "literal" and \
                (ch[1]["value"] is None or type(ch[1]["value"]) is str):
            # `x == 'text'` / `x == null`: plain == is exact (no bool/number special case)
            lit = ch[1]["value"]
            if node["value"] == "eq":
                return lambda v: a(v) == lit
            return lambda v: a(v) != lit
        return lambda v: op(a(v), b(v))
    if t == "multi_select_list":
        items = tuple(_closure(c) for c in ch)
        return lambda v: None if v is None else [f(v) for f in items]
    if t == "multi_select_dict" and all(c["type"] == "key_val_pair" for c in ch):
        pairs = tuple((c["value"], _closure(c["children"][0])) for c in ch)
        return lambda v: None if v is None else {k: f(v) for k, f in pairs}
    if t == "function_expression" and all(c["type"] != "expref" for c in ch):
        return _function(node["value"], tuple(_closure(c) for c in ch))
    visit = _INTERPRETER.visit
    return lambda v: visit(node, v)


# ---------------------------------------------------------------- source generation
#
# The closures above cost one Python call per AST node. compile_expr goes one step further for
# the node types that make up nearly every spec expression (paths, literals, ||, &&, !,
# comparisons, function calls, projections, filters, indexes, pipes): it writes the whole
# expression as one Python expression, with the closures above only for the rest (slices,
# value projections, multiselect hashes, expref arguments). Templates then inline that source
# into their generated functions (nodes._codegen, serialize.py), so `req.top_p || `1`` costs a
# few dict lookups, not five calls. tests/test_fastpaths.py holds both to the interpreter.

_ids = itertools.count()
# in a source's names: it calls a function that reads the scope in ways its source does not show
OPAQUE = "_opaque_"


def truthy_source(t: str, src: str) -> str:
    """Source testing JMESPath truthiness of src, keeping its value in the local t: Python's
    truthiness, except that 0 and 0.0 are true. Most false values a spec meets are null (an
    absent member) or false: two identity tests settle them, before any type() call."""
    return (f"(({t} := {src}) or ({t} is not None and {t} is not False "
            f"and (type({t}) is int or type({t}) is float)))")


def fresh_name(prefix: str) -> str:
    """A name no other generated source uses (they share one counter), for inlined code."""
    return f"_{prefix}{next(_ids)}"


class _Gen:
    def __init__(self):
        self.env: dict = {}

    def bind(self, value, prefix: str = "k") -> str:
        name = f"_{prefix}{next(_ids)}"
        self.env[name] = value
        return name

    def key(self, key) -> str | None:
        """The name `_kr_KEY` bound to an identifier-like key (the same name wherever the key is
        read, so equal paths are equal text: hoist_paths), else None."""
        if type(key) is not str or not key.isidentifier() or not key.isascii():
            return None
        name = f"_kr_{key}"
        self.env[name] = key
        return name

    @staticmethod
    def temp() -> str:
        return f"_t{next(_ids)}"

    def truthy(self, t: str, src: str) -> str:
        return truthy_source(t, src)

    def flattened(self, fn, node, cur: str, top: bool) -> str:
        """Source of fn (a flattening) applied to node's value: through grown.py where that
        may be a conversation."""
        arg, f = self.gen(node, cur, top), self.bind(fn, "h")
        if not _may_grow(node):
            return f"{f}({arg})"
        t = self.temp()
        self.env["_g_grown"] = grown
        return (f"({f}({t}) if type({t} := {arg}) is not list or len({t}) < {GROWN_RUN} "
                f"else _g_grown({next(_ids)}, {t}, {f}))")

    def test(self, node, cur: str, top: bool = False) -> str:
        """Source that is true when node's value is (JMESPath truthiness). A value that can only
        be true, false or null is tested as it is: no temporary, which inside a filter's
        comprehension would be a cell of the enclosing function."""
        src = self.gen(node, cur, top)
        return f"({src})" if boolish(node) else self.truthy(self.temp(), src)

    def _left_test(self, node, t: str, src: str) -> str:
        """The left side of `||` / `&&` kept in t and tested: a true/false/null value as it is."""
        return f"({t} := {src})" if boolish(node) else self.truthy(t, src)

    def gen(self, node, cur: str, top: bool) -> str:
        """Source of `node` applied to the value named `cur` (`top`: that value is a dict)."""
        t = node["type"]
        ch = node.get("children", ())
        if t == "field":
            if cur == "scope" and top:
                return f"scope.get({self.key(node['value']) or self.bind(node['value'])})"
            k = self.bind(node["value"])
            return f"{cur}.get({k})" if top else f"({cur}.get({k}) if type({cur}) is dict else None)"
        if t == "subexpression" and cur == "scope" and top and len(ch) > 1 and ch[0]["type"] == "field":
            lifted = _lift_pair(ch)
            if lifted is not None:
                return self.gen(lifted, cur, top)
        if t == "subexpression" and all(c["type"] == "field" for c in ch):
            src = self.gen(ch[0], cur, top)
            # the first two steps on the scope in the one spelling hoist_paths recognises
            pair = cur == "scope" and top and self.key(ch[0]["value"]) is not None
            for c in ch[1:]:
                named = self.key(c["value"]) if pair else None
                tmp, k = (f"_pa_{ch[0]['value']}", named) if named else (self.temp(), self.bind(c["value"]))
                pair = False
                src = f"({tmp}.get({k}) if type({tmp} := {src}) is dict else None)"
            return src
        if t in ("subexpression", "index_expression", "pipe"):
            # each step applies to the value of the one before: bind it, then the next reads it
            src = self.gen(ch[0], cur, top)
            for c in ch[1:]:
                tmp = self.temp()
                src = f"({self.gen(c, tmp, False)} if ({tmp} := {src}) is {tmp} else None)"
            return src
        if t == "index":
            i = node["value"]
            fits = f"len({cur}) > {i}" if i >= 0 else f"len({cur}) >= {-i}"
            return f"({cur}[{i}] if type({cur}) is list and {fits} else None)"
        if t == "flatten":
            return self.flattened(flatten, ch[0], cur, top)
        if t == "slice":
            # Python's slice is JMESPath's on a list (a step of 0 raises in both)
            bounds = ":".join("" if x is None else repr(int(x)) for x in ch)
            return f"({cur}[{bounds}] if type({cur}) is list else None)"
        if t == "projection" and ch[0]["type"] == "flatten" and ch[1]["type"] == "identity":
            # `x[]` alone: the items spliced, nulls left out, in one call
            return self.flattened(flatten_present, ch[0]["children"][0], cur, top)
        if t in ("projection", "filter_projection"):
            base, e, r = self.temp(), self.temp(), self.temp()
            left = self.gen(ch[0], cur, top)
            right = e if ch[1]["type"] == "identity" else self.gen(ch[1], e, False)
            keep = f"({r} := {right}) is not None" if right != e else f"{e} is not None"
            if t == "filter_projection":
                keep = f"{self.test(ch[2], e)} and {keep}"
            item = r if right != e else e
            comp = f"[{item} for {e} in {base} if {keep}]"
            if t == "projection" and right == e:
                # the items themselves, nulls left out: a copy in C when there is no null
                comp = f"(list({base}) if None not in {base} else {comp})"
            # it reads nothing but the items: what it made of a list may serve again
            pure = not any(_functions_in(c, set()) & VOLATILE for c in ch[1:])
            plain = comp
            if pure and _may_grow(ch[0]):
                # a conversation, one turn longer with each request: grown.py
                items = self.temp()
                self.env["_g_grown"] = grown
                plain = (f"({comp} if len({base}) < {GROWN_RUN} else _g_grown({next(_ids)}, {base}, "
                         f"lambda {items}: [{item} for {e} in {items} if {keep}]))")
            if t == "filter_projection" and pure and _may_be_kept(ch[0]):
                # over a shared list (a client's kept tools) what it made is kept, per filter
                # (program.filtered)
                site, hit, sh = next(_ids), self.temp(), self.temp()
                self.env.update(_f_shared=SHARED, _f_get=filtered, _f_put=filtered_keep)
                plain = (f"({hit} if (({sh} := id({base}) in _f_shared) and ({hit} := _f_get({base}, {site})) "
                         f"is not None) else _f_put({base}, {site}, {comp}) if {sh} else {plain})")
            return f"(None if type({base} := {left}) is not list else {plain})"
        if t == "literal":
            lit = node["value"]
            if lit is None or type(lit) is bool or type(lit) is int:
                return repr(lit)
            return self.bind(lit, "l")
        if t in ("current", "identity"):
            return cur
        if t in ("or_expression", "and_expression") and boolish(node):
            # true, false or null on both sides: Python's `or`/`and` pick what JMESPath picks
            a, b = self.gen(ch[0], cur, top), self.gen(ch[1], cur, top)
            return f"({a} {'or' if t == 'or_expression' else 'and'} {b})"
        if t == "or_expression":
            tmp = self.temp()
            a, b = self.gen(ch[0], cur, top), self.gen(ch[1], cur, top)
            return f"({tmp} if {self._left_test(ch[0], tmp, a)} else {b})"
        if t == "and_expression":
            tmp = self.temp()
            a, b = self.gen(ch[0], cur, top), self.gen(ch[1], cur, top)
            return f"({b} if {self._left_test(ch[0], tmp, a)} else {tmp})"
        if t == "not_expression":
            return f"(not {self.test(ch[0], cur, top)})"
        if t == "comparator" and node["value"] in _CMP:
            op = node["value"]
            a, b = self.gen(ch[0], cur, top), self.gen(ch[1], cur, top)
            if op in ("eq", "ne") and ch[1]["type"] == "literal" and \
                    (ch[1]["value"] is None or type(ch[1]["value"]) is str):
                # `x == 'text'` / `x == null`: plain == is exact (no bool/number special case)
                return f"({a} {'==' if op == 'eq' else '!='} {b})"
            lit = ch[1].get("value") if ch[1]["type"] == "literal" else None
            if op in _PY_OPS and type(lit) in (int, float):
                # against a number: Python's comparison when the value is a number too
                tmp = self.temp()
                return (f"({tmp} {_PY_OPS[op]} {b} if (type({tmp} := {a}) is int or type({tmp}) is float) "
                        f"else {self.bind(_CMP[op], 'c')}({tmp}, {b}))")
            return f"{self.bind(_CMP[op], 'c')}({a}, {b})"
        if t == "multi_select_list":
            items = ", ".join(self.gen(c, cur, top) for c in ch)
            return f"[{items}]" if top else f"(None if {cur} is None else [{items}])"
        if t == "function_expression" and node["value"] == "length" and len(ch) == 1 and "length" not in CUSTOM_FUNCTIONS:
            tmp = self.temp()
            return (f"(len({tmp}) if (type({tmp} := {self.gen(ch[0], cur, top)}) is list or type({tmp}) is str "
                    f"or type({tmp}) is dict) else {self.bind(_caller('length', 1), 'f')}({tmp}))")
        if t == "function_expression" and node["value"] in _TYPE_TESTS and len(ch) == 1:
            return f"isinstance({self.gen(ch[0], cur, top)}, {_TYPE_TESTS[node['value']]})"
        if t == "function_expression" and len(ch) == 2 and node["value"] in _FAST_PAIRS \
                and node["value"] not in CUSTOM_FUNCTIONS:
            # both arguments evaluated first, in order, as for any call; then, for the argument
            # types the function takes, what it does (`in`, the string method), in place; any
            # other types go through the function, which raises as the interpreter does
            a, b = self.temp(), self.temp()
            name = node["value"]
            if name == "contains" and ch[0]["type"] == "multi_select_list" \
                    and all(c["type"] == "literal" for c in ch[0]["children"]):
                # `contains(['a', 'b'], x)`: the list built once; a string looked up in a set of
                # the list's strings (no other value equals a string)
                values = [c["value"] for c in ch[0]["children"]]
                strings = self.bind(frozenset(v for v in values if type(v) is str), "l")
                subject = self.bind(values, "l") if top else f"(None if {cur} is None else {self.bind(values, 'l')})"
                return (f"(({b} in {strings} if type({b}) is str else {b} in {a}) if ({a} := {subject}) is not None "
                        f"and ({b} := {self.gen(ch[1], cur, top)}) is {b} "
                        f"else {self.bind(_caller(name, 2), 'f')}({a}, {self.gen(ch[1], cur, top)}))")
            first, second = self.gen(ch[0], cur, top), self.gen(ch[1], cur, top)
            if ch[1]["type"] == "literal" and _SIMPLE.match(second):
                # a constant is read where it is used: no temporary
                b, args = second, f"({a} := {first}) is {a}"
            else:
                args = f"({a} := {first}) is {a} and ({b} := {second}) is {b}"
            if name == "contains":
                fast, when = f"{b} in {a}", f"(type({a}) is list or type({a}) is str)"
            else:
                fast, when = f"{a}.{_FAST_PAIRS[name]}({b})", f"type({a}) is str"
                if not (ch[1]["type"] == "literal" and type(ch[1]["value"]) is str):
                    when += f" and type({b}) is str"
            return f"({fast} if {args} and {when} else {self.bind(_caller(name, 2), 'f')}({a}, {b}))"
        if t == "function_expression" and node["value"] == "join" and len(ch) == 2 and top \
                and "join" not in CUSTOM_FUNCTIONS and ch[0]["type"] == "literal" \
                and type(ch[0]["value"]) is str and ch[1]["type"] == "multi_select_list":
            # `join('_', [a, b])` (ids): every item read once, in order (`&` does not stop early);
            # strings are joined in place, anything else goes to the function, which raises
            temps, tests = [], []
            for c in ch[1]["children"]:
                if c["type"] == "literal" and type(c["value"]) is str:
                    temps.append(self.bind(c["value"], "l"))
                else:
                    temps.append(self.temp())
                    tests.append(f"(type({temps[-1]} := {self.gen(c, cur, top)}) is str)")
            tests = " & ".join(tests)
            sep = ch[0]["value"]
            glue = f" + {self.bind(sep, 'l')} + " if sep else " + "
            joined = glue.join(temps) if temps else "''"
            return (f"({joined} if {tests or 'True'} else "
                    f"{self.bind(_caller('join', 2), 'f')}({self.bind(sep, 'l')}, [{', '.join(temps)}]))")
        if t == "function_expression" and node["value"] == "sum" and len(ch) == 1 and top \
                and "sum" not in CUSTOM_FUNCTIONS and ch[0]["type"] == "multi_select_list":
            # `sum([a, b])` (token counts): every item read once, in order; numbers added in place
            # as the function adds them (from 0, left to right), anything else to the function
            temps, tests = [], []
            for c in ch[0]["children"]:
                if c["type"] == "literal" and type(c["value"]) in (int, float):
                    temps.append(repr(c["value"]) if type(c["value"]) is int else self.bind(c["value"], "l"))
                else:
                    temps.append(self.temp())
                    tests.append(f"(type({temps[-1]} := {self.gen(c, cur, top)}) is int or type({temps[-1]}) is float)")
            return (f"(0 + {' + '.join(temps)} if {' & '.join(tests) or 'True'} else "
                    f"{self.bind(_caller('sum', 1), 'f')}([{', '.join(temps)}]))")
        if t == "function_expression" and node["value"] == "to_string" and len(ch) == 1 \
                and "to_string" not in CUSTOM_FUNCTIONS:
            # a string as it is, an integer as its digits (what JSON writes); the rest the function
            tmp = self.temp()
            return (f"({tmp} if type({tmp} := {self.gen(ch[0], cur, top)}) is str else "
                    f"int.__repr__({tmp}) if type({tmp}) is int else "
                    f"{self.bind(_caller('to_string', 1), 'f')}({tmp}))")
        if t == "function_expression" and all(c["type"] != "expref" for c in ch):
            args = ", ".join(self.gen(c, cur, top) for c in ch)
            return f"{self.bind(_caller(node['value'], len(ch)), 'f')}({args})"
        # a closure reads what it reads: code holding one is opaque (serialize._reads_only_whole)
        self.env[OPAQUE] = True
        return f"{self.bind(_closure(node), 'x')}({cur})"


def _lift_pair(ch: list) -> dict | None:
    """The steps of `a.b[i]...`, `a.b[i:j]` or `a.b[*]...` (the parser's subexpression `a`, then
    `b[i]...`) as `(a.b)[i]...`: the same value, with `a.b` read as the one path on the scope
    that hoist_paths reads once for every place that reads it, and a projection's list one the
    memos know (`vars.items[*].type` over a conversation: grown.py), as the parser already gives
    a filter's (`vars.items[?...]`). None for other steps."""
    first, second = ch[0], ch[1]
    if second["type"] == "index_expression" and second["children"][0]["type"] == "field":
        step = second["children"]
        lifted = {"type": "index_expression", "children": [_path(first, step[0]), *step[1:]]}
        return lifted if len(ch) == 2 else {"type": "subexpression", "children": [lifted, *ch[2:]]}
    if second["type"] == "projection" and len(ch) == 2:
        left, rest = second["children"][0], second["children"][1:]
        left = _path(first, left) if left["type"] == "field" else _lift_pair([first, left])
        return None if left is None else {"type": "projection", "children": [left, *rest]}
    return None


def _path(a: dict, b: dict) -> dict:
    return {"type": "subexpression", "children": [a, b]}


# A generated function reads the same paths from its scope many times over: a response spec reads
# `src.content` in six places. hoist_paths reads each such path once, into a local, at the top
# of the function: a scope read is a method call, a local is not. Paths are recognised by the
# spelling _Gen gives them: `scope.get(_kr_KEY)`, and the second step on it through `_pa_KEY`.
_ROOT_READ = re.compile(r"scope\.get\((_kr_\w+)\)")
_PAIR_READ = re.compile(r"\(_pa_(\w+)\.get\(_kr_\w+\) if type\(_pa_\1 := scope\.get\(_kr_\1\)\) is dict else None\)")


def hoist_paths(body: list[str], env: dict, written=frozenset(), loops=frozenset(),
                cold=frozenset()) -> list[str]:
    """The lines of a function of `scope` with every root path read at least twice (one key, or
    two keys deep) read once into a local by lines placed before them. Only for functions that
    never rebind a name of the scope, so a value read at the top is the value read anywhere
    later; `written` names the roots whose keys the function writes (`vars`, a stream's
    `state`): their keys are read where they are. The reads cannot fail (a type test guards
    every step), so reading one ahead of its branch is harmless. `loops` names the roots a loop
    in the function binds anew for each item: they are read where they are. `cold` holds the
    indices of lines that most calls do not run (a rule whose guard fails): their reads do not
    count, so a path only they read is read by them alone, when they run; a path hoisted for
    the other lines is read from its local there too."""
    lines = list(body)
    hot = [line for i, line in enumerate(lines) if i not in cold]
    defs = []
    pairs = {}
    for m in _PAIR_READ.finditer("\n".join(hot)):
        pairs[m.group(0)] = pairs.get(m.group(0), 0) + 1
    for src, n in pairs.items():
        root = _PAIR_READ.match(src).group(1)
        if n > 1 and root not in written and root not in loops:
            name = fresh_name("h")
            defs.append(f"    {name} = {src}")
            lines = [line.replace(src, name) for line in lines]
    hot = [line for i, line in enumerate(lines) if i not in cold]
    roots = {}
    for k in _ROOT_READ.findall("\n".join(hot + defs)):
        roots[k] = roots.get(k, 0) + 1
    first = []
    for k, n in roots.items():
        if n > 1 and k[4:] not in loops:
            name = fresh_name("h")
            read = f"scope.get({k})"
            first.append(f"    {name} = {read}")
            lines = [line.replace(read, name) for line in lines]
            defs = [d.replace(read, name) for d in defs]
    if not first and not defs:
        return body
    return _dict_reads(first + defs, "\n".join(lines).split("\n"), env)


# a key read on a hoisted local: `(t.get(k) if type(t := _hN) is dict else None)`
_LOCAL_GET = re.compile(r"\((\w+)\.get\((\w+)\) if type\(\1 := (_h\d+)\) is dict else None\)")
_EMPTY: dict = {}  # only ever read: .get on it gives what a read on a non-dict gives, None


def _dict_reads(head: list[str], rest: list[str], env: dict) -> list[str]:
    """Key reads on a hoisted local `_hN` become `_dN.get(k)`, `_dN` being the local when it is
    a dict and an empty dict when not: one type test at the top instead of one per read."""
    made: dict[str, str] = {}
    hoisted = {line.split(" = ", 1)[0].strip() for line in head}

    def to_get(m):
        local = m.group(3)
        if local not in hoisted:
            return m.group(0)
        made.setdefault(local, "_d" + local[2:])
        return f"{made[local]}.get({m.group(2)})"
    head = [_LOCAL_GET.sub(to_get, line) for line in head]
    rest = [_LOCAL_GET.sub(to_get, line) for line in rest]
    if not made:
        return head + rest
    env["_empty_dict"] = _EMPTY
    out = []
    for line in head:
        out.append(line)
        local = line.split(" = ", 1)[0].strip()
        if local in made:
            out.append(f"    {made[local]} = {local} if type({local}) is dict else _empty_dict")
    return out + rest


def item_reads(src: str, name: str, item: str, env: dict) -> str:
    """The body of an `each` map's lambda (`src`, the item bound to the parameter `item`, once
    `name` in the scope) with its key reads on the item, `(_pa_NAME.get(k) if type(_pa_NAME :=
    item) is dict else None)`, written `_dITEM.get(k)`, `_dITEM` being the item when it is a dict
    and an empty dict when not: one type test per item instead of one per read. Only where it
    reads two keys or more, and only when nothing else names `_pa_NAME`."""
    read = re.compile(rf"\(_pa_{re.escape(name)}\.get\((_kr_\w+)\) if type\(_pa_{re.escape(name)} := "
                      rf"{re.escape(item)}\) is dict else None\)")
    local = "_d" + item.lstrip("_")
    out, n = read.subn(lambda m: f"{local}.get({m.group(1)})", src)
    if n < 2 or f"_pa_{name}" in out:
        return src
    env["_empty_dict"] = _EMPTY
    return f"(({local} := {item} if type({item}) is dict else _empty_dict) is {local} and ({out}))"


_PY_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
# the custom type tests (functions.py), written in place: they are isinstance and nothing else
_TYPE_TESTS = {"is_string": "str", "is_object": "dict", "is_array": "list"}
# two-argument functions written in place for the argument types they take (_Gen.gen)
_FAST_PAIRS = {"contains": None, "starts_with": "startswith", "ends_with": "endswith"}
_SIMPLE = re.compile(r"^(_\w+|None|True|False|-?\d+)$")


def flatten_present(base):
    """`x[]`: flatten, then the projection's nulls left out; null for a non-list."""
    if type(base) is not list:
        return None
    out = []
    for e in base:
        if type(e) is list:
            # most lists hold no null: extended as they are, without a generator
            out.extend([v for v in e if v is not None] if None in e else e)
        elif e is not None:
            out.append(e)
    return out


def absent_falsy(node, known: dict | None = None) -> frozenset | None:
    """Members of `src` such that the expression is false or null whenever `src` holds none of
    them (or holds them as null), whatever else the scope holds; None when no such set is
    known. A checks or drops rule about fields a request does not carry is then not evaluated
    (compiler._guarded): most rules are, and most requests carry few of those fields. `known`
    holds the vars whose value is known while `src` holds none of some members:
    {var: (those members, that value)} (compiler._absent_vars)."""
    t = node.get("type")
    ch = node.get("children") or ()
    if t == "and_expression":
        for c in ch:
            found = absent_falsy(c, known)
            if found is not None:
                return found
        return None
    if t == "or_expression":
        found = [absent_falsy(c, known) for c in ch]
        return None if None in found else frozenset().union(*found)
    if t == "comparator":
        a, b = ch
        if node["value"] in _PY_OPS:  # ordered: null when either side is not a number
            return _null_without(a, known) or _null_without(b, known)
        lit, other = (b, a) if b.get("type") == "literal" else (a, b) if a.get("type") == "literal" else (None, None)
        if lit is None:
            return None
        # null == 'x' and null != null are false; null == null and null != 'x' are true
        if (node["value"] == "eq") == (lit["value"] is not None):
            return _null_without(other, known)
        return None
    var = _var_read(node, known)
    if var is not None and (var[1] is None or var[1] is False or (type(var[1]) in (str, list, dict) and not var[1])):
        return var[0]  # a var that is then false, empty or null (0 is true in JMESPath)
    return _null_without(node, known)


def _var_read(node, known: dict | None):
    """(members, value) of the known var `vars.NAME` the expression is, else None."""
    ch = node.get("children") or ()
    if known and node.get("type") == "subexpression" and len(ch) == 2 \
            and ch[0].get("type") == "field" and ch[0].get("value") == "vars" and ch[1].get("type") == "field":
        return known.get(ch[1]["value"])
    return None


def _null_without(node, known: dict | None = None) -> frozenset | None:
    """{m} when the expression is a path (fields, indexes, projections, filters, flattenings)
    into `src.m`: null while `src` has no m; a known var's members where the path starts at a
    var that is then null."""
    t = node.get("type")
    ch = node.get("children") or ()
    if t == "subexpression":
        head = ch[0].get("type") == "field" and ch[0].get("value")
        if head == "src":
            member = _first_field(ch[1])
            return None if member is None else frozenset({member})
        if head == "vars" and known:
            name = _first_field(ch[1])
            var = None if name is None else known.get(name)
            return var[0] if var is not None and var[1] is None else None
        return _null_without(ch[0], known)
    if t in _NULL_ON_NULL:
        return _null_without(ch[0], known)
    return None


def _first_field(node) -> str | None:
    t = node.get("type")
    if t == "field":
        return node["value"]
    if t in _NULL_ON_NULL or t == "subexpression":
        return _first_field(node["children"][0])
    return None


# what gives null when the value it is applied to (its first child) is null
_NULL_ON_NULL = frozenset({"index_expression", "projection", "filter_projection", "flatten"})


def boolish(node) -> bool:
    """True when the expression's value is true, false or null, whose truthiness is Python's:
    comparisons (ordered ones give null for values that do not compare), `!`, boolean literals,
    the type tests (is_string ...), and `||` / `&&` of such."""
    t = node.get("type")
    if t == "comparator":
        return node.get("value") in _CMP
    if t == "not_expression":
        return True
    if t == "literal":
        return type(node.get("value")) is bool
    if t in ("or_expression", "and_expression"):
        return all(boolish(c) for c in node.get("children", ()))
    # contains, starts_with, ends_with give true or false (or raise)
    return t == "function_expression" and (node.get("value") in _TYPE_TESTS or (
        node.get("value") in _FAST_PAIRS and node.get("value") not in CUSTOM_FUNCTIONS))


def flatten(base):
    """JMESPath's `[]`: list items spliced in, other values kept; null for a non-list."""
    if type(base) is not list:
        return None
    out = []
    for e in base:
        if type(e) is list:
            out.extend(e)
        else:
            out.append(e)
    return out


def _generated(parsed):
    """(fn, (source, env)) for a parsed expression evaluated on the scope dict."""
    g = _Gen()
    src = g.gen(parsed, "scope", True)
    compile(f"lambda scope: {src}", "<string>", "eval")
    env = g.env  # its names are its globals, as in nodes._Src.make
    return codegen.lazy(lambda: codegen.scope_lambda(src, env), env, "<lambda>", "<string>"), (src, env)


_KEPT_ROOTS = frozenset({"src", "vars"})  # where a client's kept tools, or a list kept of them, are read


def _may_be_kept(node) -> bool:
    """Whether a filter's list may be a kept one: a path from the request or the vars, or the
    current value (a pipe's left side). A loop's item, a projection, a flattening or a function
    gives a list that is never kept."""
    t = node["type"]
    if t in ("current", "identity"):
        return True
    if t == "field":
        return node["value"] in _KEPT_ROOTS
    ch = node.get("children") or ()
    return t == "subexpression" and all(c["type"] == "field" for c in ch) and ch[0]["value"] in _KEPT_ROOTS


def _may_grow(node) -> bool:
    """Whether a list operation's list may be a conversation or what another one made of it (a
    path from the request or the vars, the current value, or such an operation), so that it is
    worth looking up (grown.py: right for any list). A loop item's lists (`it.content`) are one
    turn's."""
    if _may_be_kept(node):
        return True
    ch = node.get("children") or ()
    return node["type"] in ("subexpression", "projection", "filter_projection", "flatten") and bool(ch) \
        and _may_grow(ch[0])


def _functions_in(node, out: set):
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            out.add(node["value"])
        for child in node.get("children", ()):
            _functions_in(child, out)
    return out


def compile_expr(text: str):
    """Returns (fn, functions_used). Raises ExprError with the parser's message."""
    if _PLAIN.match(text) and text not in ("null", "true", "false"):
        return _getter(tuple(text.split("."))), frozenset()
    try:
        parsed = _PARSER.parse(text).parsed
    except jexc.JMESPathError as e:
        msg = getattr(e, "msg", None) or str(e).splitlines()[0]
        tok = getattr(e, "token_value", None)
        where = f" (at {tok!r})" if tok not in (None, "") else ""
        raise ExprError(f"invalid JMESPath expression: {msg}{where}", getattr(e, "lex_position", 0) or 0) from None
    used = frozenset(_functions_in(parsed, set()))
    fn, code = _generated(parsed)
    fn.code = code
    fn.boolish = boolish(parsed)
    fn.guard = absent_falsy(parsed)
    return fn, used


def negates_before_path(text: str) -> bool:
    """True when a `!` applies to the head of a dotted path (`!a.b` is `(!a).b`: always null)."""
    if _PLAIN.match(text):
        return False
    try:
        parsed = _PARSER.parse(text).parsed
    except jexc.JMESPathError:
        return False

    def walk(node):
        if not isinstance(node, dict):
            return False
        ch = node.get("children", ())
        if node.get("type") == "subexpression" and ch and isinstance(ch[0], dict) \
                and ch[0].get("type") == "not_expression":
            return True
        return any(walk(c) for c in ch)
    return walk(parsed)


_KEYWORDS = ("null", "true", "false")
_PROJECTIONS = frozenset({"projection", "value_projection", "filter_projection"})


def bare_keyword(text: str) -> str | None:
    """`null`, `true` or `false` when the expression uses one as a name (`a != null`): JMESPath
    reads it as a field of that name, not as the literal `` `null` ``. A name after a dot
    (`a.null`) is left alone."""
    if _PLAIN.match(text):
        return None
    try:
        parsed = _PARSER.parse(text).parsed
    except jexc.JMESPathError:
        return None

    def walk(node, after_dot: bool):
        if not isinstance(node, dict):
            return None
        if node.get("type") == "field" and node.get("value") in _KEYWORDS and not after_dot:
            return node["value"]
        t = node.get("type")
        for i, child in enumerate(node.get("children", ())):
            # `a.b.null` (every step after the first), `a[].null` (the projected side)
            found = walk(child, (t == "subexpression" and i > 0) or (t in _PROJECTIONS and i == 1))
            if found:
                return found
        return None
    return walk(parsed, False)


def is_builtin(name: str) -> bool:
    return name in jmespath.functions.Functions.FUNCTION_TABLE and name not in CUSTOM_FUNCTIONS
