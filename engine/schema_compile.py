"""JSON Schemas compiled once into plain-Python predicates: ``is_valid(instance) -> bool``.

Every request is valid far more often than not, and jsonschema pays for its error reporting on
every call (a child validator, an error generator and a type-checker lookup per keyword), about
55 µs for a two-message Chat request. The predicate here answers only "valid or not", as Python
source generated once per schema: one function per object, array or branching subschema, its
keywords as `if not ...: return False` lines, and the simple subschemas (a type, an enum, a
bound, a `$ref` to one, an anyOf of them) written as expressions where they are used: a property
check is an `isinstance` in place, not a call. jsonschema is still what explains an invalid body
(schemas.first_error runs it only when the predicate says no), so messages and paths do not
change.

The predicate must agree with jsonschema's Draft 2020-12 validator exactly (without a format
checker, as schemas.validator builds it): tests/test_schema_compile.py checks both on generated
valid and mutated instances of every schema. A subschema using a keyword not handled here is
handed whole to jsonschema, so an unknown keyword costs speed, never correctness.
"""
from __future__ import annotations

import itertools
import re
from typing import Any, Callable

from referencing.jsonschema import DRAFT202012

Predicate = Callable[[Any], bool]

# keywords that never affect validity (annotations, and $defs reached only through $ref)
_IGNORED = frozenset({"$schema", "$id", "$defs", "definitions", "$comment", "title", "description",
                      "default", "examples", "deprecated", "readOnly", "writeOnly", "format",
                      "contentEncoding", "contentMediaType", "then", "else"})
_HANDLED = frozenset({"type", "properties", "required", "additionalProperties", "patternProperties",
                      "$ref", "const", "enum", "if", "allOf", "anyOf", "oneOf", "not", "items",
                      "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern",
                      "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                      "minProperties", "maxProperties", "propertyNames"})
# keywords written as an expression where the subschema is used (no function of its own)
_INLINE = frozenset({"type", "const", "enum", "minLength", "maxLength", "pattern", "minimum", "maximum",
                     "exclusiveMinimum", "exclusiveMaximum", "$ref", "anyOf", "not"})
_OBJECT = ("properties", "required", "additionalProperties", "patternProperties", "minProperties",
           "maxProperties", "propertyNames")
_BOUNDS = (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"), ("exclusiveMaximum", "<"))
_CHAIN = 8  # up to this many names, a key is matched by an if/elif chain rather than a table
_DEPTH = 4  # subschemas written into one expression, at most this deep


def _is_integer(x) -> bool:
    t = type(x)
    if t is int:
        return True
    if t is bool:
        return False
    if isinstance(x, int):
        return True
    return isinstance(x, float) and x.is_integer()


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# the kinds whose test is one isinstance (integer and number need more than that)
_PLAIN_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
_KINDS = {"object": "isinstance({x}, dict)", "array": "isinstance({x}, list)", "string": "isinstance({x}, str)",
          "boolean": "isinstance({x}, bool)", "null": "{x} is None", "integer": "_is_integer({x})",
          "number": "_is_number({x})"}


def equal(a, b) -> bool:
    """jsonschema's equality: JSON values, with booleans never equal to numbers."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    return a == b


def _unique(x: list) -> bool:
    for i, a in enumerate(x):
        for b in x[i + 1:]:
            if equal(a, b):
                return False
    return True


def _in_enum(x, values) -> bool:
    return any(equal(x, v) for v in values)


class Compiler:
    """Compiles subschemas reached from one registry; `fallback(schema, resolver)` returns
    jsonschema's own is_valid for a subschema this module does not handle. Every function it
    writes lives in one namespace, so subschemas shared through $ref (or reached again through a
    recursive one) are written once and called by name."""

    def __init__(self, fallback: Callable[[Any, Any], Predicate], enter: Callable[[Any, Any], Any]):
        self.fallback = fallback
        self.enter = enter  # the resolver inside a subschema that has its own $id
        self.done: dict[int, tuple[Any, str]] = {}  # id(schema) -> (schema, its function's name)
        self.env: dict = {"_is_integer": _is_integer, "_is_number": _is_number, "_equal": equal,
                          "_unique": _unique, "_in_enum": _in_enum}
        self.pending: list[str] = []  # function sources not yet executed
        self.tables: list[str] = []  # lines run after them (tables of their functions)
        self.ids = itertools.count()
        self.inlining: list[int] = []  # schemas being written as expressions: a cycle stops it

    def compile(self, schema: Any, resolver) -> Predicate:
        if schema is True:
            return _always
        if schema is False:
            return _never
        name = self._function(schema, resolver)
        if self.pending:
            src = "\n\n".join(self.pending) + "\n" + "\n".join(self.tables)
            self.pending, self.tables = [], []
            exec(compile(src, "<schema>", "exec"), self.env)  # noqa: S102 - generated here
        return self.env[name]

    def bind(self, value, prefix: str = "c") -> str:
        name = f"_{prefix}{next(self.ids)}"
        self.env[name] = value
        return name

    # -- a subschema as an expression on a variable
    def _sub(self, schema: Any, resolver, x: str) -> str:
        """A subschema met in place (not through $ref), which may open a new base URI."""
        if isinstance(schema, dict) and "$id" in schema:
            resolver = self.enter(schema, resolver)
        return self.test(schema, resolver, x)

    def test(self, s: Any, resolver, x: str) -> str:
        """A Python boolean expression: `x` is valid against `s`."""
        if s is True:
            return "True"
        if s is False:
            return "False"
        if isinstance(s, dict) and set(s) <= _INLINE | _IGNORED and len(self.inlining) < _DEPTH \
                and id(s) not in self.inlining and self._kinds_known(s):
            self.inlining.append(id(s))
            try:
                return self._expression(s, resolver, x)
            finally:
                self.inlining.pop()
        return f"{self._function(s, resolver)}({x})"

    @staticmethod
    def _kinds_known(s: dict) -> bool:
        kinds = s.get("type")
        return all(k in _KINDS for k in ([kinds] if isinstance(kinds, str) else kinds or ()))

    def _expression(self, s: dict, resolver, x: str) -> str:
        kind = s.get("type")
        parts = [self._type(kind, x)] if kind is not None else []
        if "const" in s:
            parts.append(self._const(s["const"], x))
        if "enum" in s:
            parts.append(self._enum(s["enum"], x))
        parts += self._string(s, x, kind == "string")
        parts += self._number(s, x, kind in ("integer", "number"))
        if "$ref" in s:
            parts.append(self._ref(s["$ref"], resolver, x))
        if "anyOf" in s:
            parts.append(" or ".join(f"({self._sub(sub, resolver, x)})" for sub in s["anyOf"]) or "False")
        if "not" in s:
            parts.append(f"not ({self._sub(s['not'], resolver, x)})")
        if "False" in parts:
            return "False"
        parts = [p for p in parts if p != "True"]
        return " and ".join(f"({p})" for p in parts) if parts else "True"

    def _ref(self, ref: str, resolver, x: str) -> str:
        resolved = resolver.lookup(ref)
        return self.test(resolved.contents, resolved.resolver, x)

    def _type(self, kind, x: str) -> str:
        if isinstance(kind, str):
            return _KINDS[kind].format(x=x)
        if all(k in _PLAIN_TYPES for k in kind):
            # `["string", "array"]`: one isinstance over the Python types, not a test per kind
            return f"isinstance({x}, {self.bind(tuple(_PLAIN_TYPES[k] for k in kind), 't')})"
        return " or ".join(f"({_KINDS[k].format(x=x)})" for k in kind) or "False"

    def _const(self, value, x: str) -> str:
        if isinstance(value, str):
            return f"{x} == {value!r} and isinstance({x}, str)"
        return f"_equal({x}, {self.bind(value)})"

    def _enum(self, values: list, x: str) -> str:
        if all(isinstance(v, str) for v in values):
            return f"isinstance({x}, str) and {x} in {self.bind(frozenset(values), 'e')}"
        return f"_in_enum({x}, {self.bind(values, 'e')})"

    def _string(self, s: dict, x: str, known: bool) -> list[str]:
        out = []
        guard = "" if known else f"not isinstance({x}, str) or "
        lo, hi = s.get("minLength"), s.get("maxLength")
        if lo is not None or hi is not None:
            bounds = f"{lo or 0} <= len({x})" + (f" <= {hi}" if hi is not None else "")
            out.append(f"{guard}{bounds}")
        if "pattern" in s:
            out.append(f"{guard}{self.bind(re.compile(s['pattern']), 'rx')}.search({x}) is not None")
        return out

    def _number(self, s: dict, x: str, known: bool) -> list[str]:
        guard = "" if known else f"not _is_number({x}) or "
        return [f"{guard}{x} {op} {self.bind(s[key], 'b')}" for key, op in _BOUNDS if key in s]

    # -- a subschema as a function of its own
    def _function(self, s: Any, resolver) -> str:
        hit = self.done.get(id(s))
        if hit is not None and hit[0] is s:
            return hit[1]
        name = f"_s{next(self.ids)}"
        self.done[id(s)] = (s, name)  # a recursive $ref met while writing it calls it by name
        if s is True or s is False:
            body = [f"    return {s}"]
        elif not isinstance(s, dict) or not set(s) <= _HANDLED | _IGNORED or not self._kinds_known(s):
            body = [f"    return {self.bind(self.fallback(s, resolver), 'j')}(x)"]
        else:
            # a function starts its own expressions (it may be written from inside another's)
            outer, self.inlining = self.inlining, []
            try:
                body = self._body(s, resolver) + ["    return True"]
            finally:
                self.inlining = outer
        self.pending.append("\n".join([f"def {name}(x):", *body]))
        return name

    def _callable(self, s: Any, resolver) -> str:
        """The name of a function for `s`, inline-able or not (for a table of them)."""
        if isinstance(s, dict) and "$id" in s:
            resolver = self.enter(s, resolver)
        expr = self.test(s, resolver, "x")
        m = re.fullmatch(r"(_s\d+)\(x\)", expr)
        if m:
            return m.group(1)
        name = f"_s{next(self.ids)}"
        self.pending.append(f"def {name}(x):\n    return {expr}")
        return name

    def _body(self, s: dict, resolver) -> list[str]:
        # the keywords an expression can hold, as one test first (the type leads it)
        test = self._expression({k: v for k, v in s.items() if k in _INLINE}, resolver, "x")
        lines = [f"    if not ({test}): return False"] if test != "True" else []
        kind = s.get("type")
        if any(k in s for k in _OBJECT):
            lines += self._object(s, resolver, kind == "object")
        if any(k in s for k in ("items", "minItems", "maxItems", "uniqueItems")):
            lines += self._array(s, resolver, kind == "array")
        if "allOf" in s:
            lines += self._all_of(s["allOf"], resolver)
        if "oneOf" in s:
            count = " + ".join(f"(1 if ({self._sub(sub, resolver, 'x')}) else 0)" for sub in s["oneOf"]) or "0"
            lines.append(f"    if {count} != 1: return False")
        if "if" in s:
            cond = self._sub(s["if"], resolver, "x")
            then = self._sub(s["then"], resolver, "x") if "then" in s else "True"
            other = self._sub(s["else"], resolver, "x") if "else" in s else "True"
            lines.append(f"    if {cond}:")
            lines.append(f"        if not ({then}): return False" if then != "True" else "        pass")
            if other != "True":
                lines += ["    else:", f"        if not ({other}): return False"]
        return lines

    def _object(self, s: dict, resolver, known: bool) -> list[str]:
        ind = "    " if known else "        "
        lines = [] if known else ["    if isinstance(x, dict):"]
        required = s.get("required", ())
        if required:
            lines.append(f"{ind}if {' or '.join(f'{k!r} not in x' for k in required)}: return False")
        lo, hi = s.get("minProperties"), s.get("maxProperties")
        if lo is not None:
            lines.append(f"{ind}if len(x) < {lo}: return False")
        if hi is not None:
            lines.append(f"{ind}if len(x) > {hi}: return False")
        props = s.get("properties", {})
        patterns = s.get("patternProperties", {})
        extra_schema = s.get("additionalProperties", True)
        names = s.get("propertyNames")
        if patterns or names is not None:
            # rare here: the keys go through a closure over the subschemas' functions
            check = self.bind(None, "o")
            table = ", ".join(f"{k!r}: {self._callable(v, resolver)}" for k, v in props.items())
            rxs = ", ".join("(" + self.bind(re.compile(p), "rx") + ", " + self._callable(v, resolver) + ")"
                            for p, v in patterns.items())
            extra = "None" if extra_schema is True else self._callable(extra_schema, resolver)
            named = "None" if names is None else self._callable(names, resolver)
            self.tables.append(f"{check} = _keys({{{table}}}, [{rxs}], {extra}, {named})")
            self.env["_keys"] = _keys
            lines.append(f"{ind}if not {check}(x): return False")
            return lines if len(lines) > 1 or known else []
        extra = None if extra_schema is True else self._sub(extra_schema, resolver, "v")
        if not props and extra is None:
            return lines if len(lines) > 1 or known else []
        lines.append(f"{ind}for k, v in x.items():")
        inner = ind + "    "
        if len(props) <= _CHAIN:
            word = "if"
            for k, v in props.items():
                test = self._sub(v, resolver, "v")
                lines.append(f"{inner}{word} k == {k!r}:")
                lines.append(f"{inner}    if not ({test}): return False" if test != "True" else f"{inner}    pass")
                word = "elif"
            if extra is not None:
                if props:
                    lines.append(f"{inner}else:")
                    inner += "    "
                lines.append(f"{inner}if not ({extra}): return False")
        else:
            table = self.bind(None, "p")
            self.tables.append(f"{table} = {{{', '.join(f'{k!r}: {self._callable(v, resolver)}' for k, v in props.items())}}}.get")
            lines.append(f"{inner}p = {table}(k)")
            if extra is None:
                lines.append(f"{inner}if p is not None and not p(v): return False")
            else:
                lines += [f"{inner}if p is None:", f"{inner}    if not ({extra}): return False",
                          f"{inner}elif not p(v): return False"]
        return lines

    def _array(self, s: dict, resolver, known: bool) -> list[str]:
        ind = "    " if known else "        "
        lines = [] if known else ["    if isinstance(x, list):"]
        lo, hi = s.get("minItems"), s.get("maxItems")
        if lo is not None:
            lines.append(f"{ind}if len(x) < {lo}: return False")
        if hi is not None:
            lines.append(f"{ind}if len(x) > {hi}: return False")
        item = self._sub(s["items"], resolver, "v") if "items" in s else "True"
        if item != "True":
            lines += [f"{ind}for v in x:", f"{ind}    if not ({item}): return False"]
        if s.get("uniqueItems") is True:
            lines.append(f"{ind}if not _unique(x): return False")
        return lines if len(lines) > 1 or known else []

    def _all_of(self, subs: list, resolver) -> list[str]:
        """allOf; its `{"if": {"required": [k], "properties": {k: {"const": "v"}}}, "then": S}`
        entries on one key (how every schema here dispatches on role / type) become one branch
        on x[k] instead of one test per entry."""
        table: dict[str, list[str]] = {}
        key = None
        lines = []
        for sub in subs:
            d = _discriminated(sub)
            if d is not None and key in (None, d[0]):
                key = d[0]
                table.setdefault(d[1], []).append(self._sub(sub["then"], resolver, "x"))
            else:
                test = self._sub(sub, resolver, "x")
                if test != "True":
                    lines.append(f"    if not ({test}): return False")
        if not table:
            return lines
        every = " and ".join(f"({t})" for ts in table.values() for t in ts)
        lines += ["    if isinstance(x, dict):", f"        d = x.get({key!r})", "        if type(d) is str:"]
        if len(table) <= _CHAIN:
            word = "if"
            for value, tests in table.items():
                lines += [f"            {word} d == {value!r}:",
                          f"                if not ({' and '.join(f'({t})' for t in tests)}): return False"]
                word = "elif"
        else:
            thens = self.bind(None, "d")
            names = []
            for tests in table.values():
                name = f"_s{next(self.ids)}"
                self.pending.append(f"def {name}(x):\n    return {' and '.join(f'({t})' for t in tests)}")
                names.append(name)
            self.tables.append(f"{thens} = {{{', '.join(f'{v!r}: {n}' for v, n in zip(table, names))}}}.get")
            lines += [f"            t = {thens}(d)", "            if t is not None and not t(x): return False"]
        # required/properties pass on non-objects: every `then` applies
        lines += ["    else:", f"        if not ({every}): return False"]
        return lines


def _keys(props: dict, patterns: list, extra, names) -> Predicate:
    """An object's keys against properties, patternProperties, additionalProperties and
    propertyNames together."""
    get = props.get

    def check(x) -> bool:
        for k, v in x.items():
            p = get(k)
            if p is not None and not p(v):
                return False
            matched = False
            for rx, pp in patterns:
                if rx.search(k):
                    matched = True
                    if not pp(v):
                        return False
            if p is None and not matched and extra is not None and not extra(v):
                return False
            if names is not None and not names(k):
                return False
        return True
    return check


def _discriminated(sub) -> tuple[str, str] | None:
    """(key, value) when `sub` is exactly {"if": {"required": [key], "properties": {key: {"const":
    value}}}, "then": ...} with a string value: its `if` holds for an object exactly when
    object[key] == value, and for every non-object."""
    if not isinstance(sub, dict) or set(sub) != {"if", "then"}:
        return None
    cond = sub["if"]
    if not isinstance(cond, dict) or set(cond) != {"required", "properties"}:
        return None
    req, props = cond["required"], cond["properties"]
    if not (isinstance(req, list) and len(req) == 1 and isinstance(props, dict) and list(props) == req):
        return None
    spec = props[req[0]]
    if not (isinstance(spec, dict) and list(spec) == ["const"] and isinstance(spec["const"], str)):
        return None
    return req[0], spec["const"]


def compiler_for(validator) -> Compiler | None:
    """A Compiler over the registry of a jsonschema validator, which also checks whatever
    subschema the Compiler does not handle. None when this jsonschema lacks the internals used."""
    if not (hasattr(validator, "_resolver") and hasattr(validator, "evolve")):
        return None

    def fallback(sub, resolver):
        return validator.evolve(schema=sub, _resolver=resolver).is_valid

    def enter(sub, resolver):
        return resolver.in_subresource(DRAFT202012.create_resource(sub))
    return Compiler(fallback, enter)


def predicate(validator) -> Predicate:
    """``validator.is_valid`` compiled (or itself, when it cannot be)."""
    compiler = compiler_for(validator)
    if compiler is None:
        return validator.is_valid
    return compiler.compile(validator.schema, validator._resolver)


def _always(x) -> bool:
    return True


def _never(x) -> bool:
    return False
