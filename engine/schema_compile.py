"""JSON Schemas compiled once into plain-Python predicates: ``is_valid(instance) -> bool``.

Every request is valid far more often than not, and jsonschema pays for its error reporting on
every call (a child validator, an error generator and a type-checker lookup per keyword), about
55 µs for a two-message Chat request. The predicate here answers only "valid or not", as a tree
of closures built once per schema: a few µs for the same request. jsonschema is still what
explains an invalid body (schemas.first_error runs it only when the predicate says no), so
messages and paths do not change.

The predicate must agree with jsonschema's Draft 2020-12 validator exactly (without a format
checker, as schemas.validator builds it): tests/test_schema_compile.py checks both on generated
valid and mutated instances of every schema. A subschema using a keyword not handled here is
handed whole to jsonschema, so an unknown keyword costs speed, never correctness.
"""
from __future__ import annotations

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
_TYPES: dict[str, Predicate] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": _is_integer,
    "number": _is_number,
}


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


class Compiler:
    """Compiles subschemas reached from one registry; `fallback(schema, resolver)` returns
    jsonschema's own is_valid for a subschema this module does not handle."""


    def __init__(self, fallback: Callable[[Any, Any], Predicate], enter: Callable[[Any, Any], Any]):
        self.fallback = fallback
        self.enter = enter  # the resolver inside a subschema that has its own $id
        self.done: dict[int, tuple[Any, Predicate]] = {}

    def compile(self, schema: Any, resolver) -> Predicate:
        if schema is True:
            return _always
        if schema is False:
            return _never
        hit = self.done.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        # a recursive $ref reaches this schema again while it compiles: point it at a cell
        cell: list[Predicate] = []
        self.done[id(schema)] = (schema, lambda x: cell[0](x))
        pred = self._build(schema, resolver)
        cell.append(pred)
        self.done[id(schema)] = (schema, pred)
        return pred

    def _sub(self, schema: Any, resolver) -> Predicate:
        """A subschema met in place (not through $ref), which may open a new base URI."""
        if isinstance(schema, dict) and "$id" in schema:
            resolver = self.enter(schema, resolver)
        return self.compile(schema, resolver)

    def _build(self, s: Any, resolver) -> Predicate:
        if not isinstance(s, dict):
            return self.fallback(s, resolver)
        kinds = s.get("type")
        if not set(s) <= _HANDLED | _IGNORED or \
                not all(k in _TYPES for k in ([kinds] if isinstance(kinds, str) else kinds or ())):
            return self.fallback(s, resolver)
        checks: list[Predicate] = []
        kind = s.get("type")
        if kind is not None:
            checks.append(self._type(kind))
        if "const" in s:
            checks.append(_const(s["const"]))
        if "enum" in s:
            checks.append(_enum(s["enum"]))
        obj = self._object(s, resolver)
        if obj is not None:
            checks.append(obj)
        arr = self._array(s, resolver)
        if arr is not None:
            checks.append(arr)
        checks.extend(_string(s))
        checks.extend(_number(s))
        if "$ref" in s:
            checks.append(self._ref(s["$ref"], resolver))
        if "allOf" in s:
            checks.extend(self._all_of(s["allOf"], resolver))
        if "anyOf" in s:
            subs = [self._sub(sub, resolver) for sub in s["anyOf"]]
            checks.append(lambda x: any(p(x) for p in subs))
        if "oneOf" in s:
            subs1 = [self._sub(sub, resolver) for sub in s["oneOf"]]
            checks.append(lambda x: sum(1 for p in subs1 if p(x)) == 1)
        if "not" in s:
            neg = self._sub(s["not"], resolver)
            checks.append(lambda x: not neg(x))
        if "if" in s:
            checks.append(self._if(s, resolver))
        return _all(checks)

    def _type(self, kind) -> Predicate:
        if isinstance(kind, str):
            return _TYPES[kind]
        if all(k in _PLAIN_TYPES for k in kind):
            # `["string", "array"]`: one isinstance over the Python types, not a test per kind
            types = tuple(_PLAIN_TYPES[k] for k in kind)
            return lambda x: isinstance(x, types)
        tests = [_TYPES[k] for k in kind]
        return lambda x: any(t(x) for t in tests)

    def _ref(self, ref: str, resolver) -> Predicate:
        resolved = resolver.lookup(ref)
        return self.compile(resolved.contents, resolved.resolver)

    def _all_of(self, subs: list, resolver) -> list[Predicate]:
        """allOf; its `{"if": {"required": [k], "properties": {k: {"const": "v"}}}, "then": S}`
        entries on one key (how every schema here dispatches on role / type) become one table
        lookup instead of one test per entry."""
        table: dict[str, list[Predicate]] = {}
        key = None
        checks = []
        for sub in subs:
            d = _discriminated(sub)
            if d is not None and key in (None, d[0]):
                key = d[0]
                table.setdefault(d[1], []).append(self._sub(sub["then"], resolver))
            else:
                checks.append(self._sub(sub, resolver))
        if table:
            thens = {v: _all(ps) for v, ps in table.items()}
            every = _all([p for ps in table.values() for p in ps])
            get = thens.get

            def dispatch(x) -> bool:
                if not isinstance(x, dict):
                    return every(x)  # required/properties pass on non-objects: every `then` applies
                v = x.get(key)
                if type(v) is str:
                    then = get(v)
                    if then is not None:
                        return then(x)
                return True
            checks.append(dispatch)
        return checks

    def _if(self, s: dict, resolver) -> Predicate:
        cond = self._sub(s["if"], resolver)
        then = self._sub(s["then"], resolver) if "then" in s else _always
        other = self._sub(s["else"], resolver) if "else" in s else _always
        return lambda x: then(x) if cond(x) else other(x)

    def _object(self, s: dict, resolver) -> Predicate | None:
        keys = ("properties", "required", "additionalProperties", "patternProperties",
                "minProperties", "maxProperties", "propertyNames")
        if not any(k in s for k in keys):
            return None
        props = {k: self._sub(v, resolver) for k, v in s.get("properties", {}).items()}
        required = tuple(s.get("required", ()))
        patterns = [(re.compile(p), self._sub(v, resolver))
                    for p, v in s.get("patternProperties", {}).items()]
        extra_schema = s.get("additionalProperties", True)
        extra = None if extra_schema is True else self._sub(extra_schema, resolver)
        lo, hi = s.get("minProperties"), s.get("maxProperties")
        names = self._sub(s["propertyNames"], resolver) if "propertyNames" in s else None
        get = props.get
        if not patterns and names is None and lo is None and hi is None:
            return _plain_object(get, required, extra)

        def check(x) -> bool:
            if not isinstance(x, dict):
                return True
            for k in required:
                if k not in x:
                    return False
            if (lo is not None and len(x) < lo) or (hi is not None and len(x) > hi):
                return False
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

    def _array(self, s: dict, resolver) -> Predicate | None:
        if not any(k in s for k in ("items", "minItems", "maxItems", "uniqueItems")):
            return None
        item = self._sub(s["items"], resolver) if "items" in s else None
        lo, hi = s.get("minItems"), s.get("maxItems")
        unique = s.get("uniqueItems") is True

        def check(x) -> bool:
            if not isinstance(x, list):
                return True
            if (lo is not None and len(x) < lo) or (hi is not None and len(x) > hi):
                return False
            if item is not None:
                for v in x:
                    if not item(v):
                        return False
            if unique:
                for i, a in enumerate(x):
                    for b in x[i + 1:]:
                        if equal(a, b):
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


def _plain_object(get, required: tuple, extra: Predicate | None) -> Predicate:
    """properties / required / additionalProperties alone: the shape of nearly every object here."""
    def check(x) -> bool:
        if not isinstance(x, dict):
            return True
        for k in required:
            if k not in x:
                return False
        for k, v in x.items():
            p = get(k)
            if p is None:
                if extra is not None and not extra(v):
                    return False
            elif not p(v):
                return False
        return True
    return check


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


def _all(checks: list[Predicate]) -> Predicate:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    # one `and` chain, generated: a generator over the checks costs a frame per call
    env = {f"c{i}": c for i, c in enumerate(checks)}
    return eval("lambda x: " + " and ".join(f"c{i}(x)" for i in range(len(checks))), env)  # noqa: S307


def _const(value) -> Predicate:
    if isinstance(value, str):
        return lambda x: x == value and isinstance(x, str)
    return lambda x: equal(x, value)


def _enum(values: list) -> Predicate:
    if all(isinstance(v, str) for v in values):
        allowed = frozenset(values)
        return lambda x: isinstance(x, str) and x in allowed
    return lambda x: any(equal(x, v) for v in values)


def _string(s: dict) -> list[Predicate]:
    out = []
    lo, hi = s.get("minLength"), s.get("maxLength")
    if lo is not None or hi is not None:
        lo = lo or 0
        hi_ = float("inf") if hi is None else hi
        out.append(lambda x: not isinstance(x, str) or lo <= len(x) <= hi_)
    if "pattern" in s:
        rx = re.compile(s["pattern"])
        out.append(lambda x: not isinstance(x, str) or rx.search(x) is not None)
    return out


def _number(s: dict) -> list[Predicate]:
    out = []
    for key, ok in (("minimum", lambda x, b: x >= b), ("maximum", lambda x, b: x <= b),
                    ("exclusiveMinimum", lambda x, b: x > b), ("exclusiveMaximum", lambda x, b: x < b)):
        if key in s:
            bound = s[key]
            out.append(lambda x, b=bound, ok=ok: not _is_number(x) or ok(x, b))
    return out
