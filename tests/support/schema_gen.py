"""Hypothesis strategies drawn from the wire-format JSON Schemas under schemas/, and mutations
that turn a valid request into a hostile one.

Why not hypothesis-jsonschema: it does not resolve the relative ``$id`` references these 2020-12
schemas use between files (``chat.request#/$defs/function_name``: "does not fetch remote
references"), and the schemas dispatch on ``type``/``role`` with ~120 ``if``/``then`` pairs,
which it can only handle by rejection. The generator here follows what the schemas do use:

* ``$ref`` (same file, or another file by relative id), ``allOf``;
* ``if``/``then``/``else``: discriminating properties (``type``, ``role``) are drawn first, then
  each ``if`` is evaluated on the partial object and the chosen branch is merged in;
  an ``if`` on ``type`` alone is evaluated as soon as the instance's type is chosen;
* ``type`` (one or a list), ``const``, ``enum``, ``properties``, ``required``,
  ``additionalProperties``, ``maxProperties``, ``propertyNames.maxLength``, ``items``,
  ``minItems``/``maxItems``, ``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``.

    >>> from_schema("openai/chat.request").example()   # a valid Chat Completions body

Valid means valid for the schema; whether the gateway can translate it is for it to say (the
tests only ask that it answers in the caller's shape, never with a 5xx).

Mutations (``mutated``) work on the JSON tree (a node replaced by a value of another type, a
number out of range, odd strings, deep nesting, unknown fields, deleted keys, huge arrays) and on
the encoded bytes (NaN/Infinity literals, duplicate keys, invalid UTF-8, truncation, trailing
garbage, UTF-16).
"""
from __future__ import annotations

import functools
import json
import math
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import strategies as st

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

__all__ = [
    "ODD_NUMBERS",
    "ODD_STRINGS",
    "SCHEMA_DIR",
    "WRONG_TYPE_VALUES",
    "RawJSON",
    "ShortBytes",
    "ShortDict",
    "byte_mutation",
    "documents",
    "encode",
    "from_schema",
    "get_at",
    "json_values",
    "mutated",
    "nested",
    "paths_of",
    "resolve",
    "set_at",
    "tree_mutation",
]


# ------------------------------------------------------------------------------ schemas


@functools.cache
def documents() -> dict[str, Any]:
    """Every schema file, keyed by its ``$id`` (``openai/chat.request``)."""
    docs = {}
    for file in sorted(SCHEMA_DIR.rglob("*.json")):
        doc = json.loads(file.read_text(encoding="utf-8"))
        docs[doc.get("$id") or file.relative_to(SCHEMA_DIR).with_suffix("").as_posix()] = doc
    return docs


def resolve(ref: str, base: str) -> tuple[Any, str]:
    """(subschema, id of the document it lives in) for a ``$ref`` seen inside document ``base``."""
    docs = documents()
    doc_part, _, fragment = ref.partition("#")
    if not doc_part:
        doc_id = base
    elif doc_part in docs:
        doc_id = doc_part
    else:
        doc_id = posixpath.normpath(posixpath.join(posixpath.dirname(base), doc_part))
    node = docs[doc_id]
    for token in [t for t in fragment.split("/") if t]:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node, doc_id


_Part = tuple  # (schema dict, base document id)


def _flatten(parts: list[_Part]) -> list[_Part]:
    """The parts with every ``$ref`` and ``allOf`` expanded in (conditionals stay in their part)."""
    out: list[_Part] = []
    seen: set[int] = set()
    todo = list(parts)
    while todo:
        schema, base = todo.pop(0)
        if not isinstance(schema, dict) or id(schema) in seen:
            continue
        seen.add(id(schema))
        out.append((schema, base))
        if "$ref" in schema:
            todo.append(resolve(schema["$ref"], base))
        for sub in schema.get("allOf", ()):
            todo.append((sub, base))
    return out


_PLACEHOLDER = {"string": "", "integer": 0, "number": 0.5, "boolean": False, "null": None,
                "array": [], "object": {}}
_TYPE_ORDER = ["object", "array", "string", "integer", "number", "boolean", "null"]


@functools.cache
def _if_validator(if_id: int, if_json: str):
    return jsonschema.Draft202012Validator(json.loads(if_json))


def _if_holds(if_schema: Any, instance: Any) -> bool:
    return _if_validator(id(if_schema), json.dumps(if_schema, sort_keys=True)).is_valid(instance)


def _type_only(if_schema: Any) -> bool:
    return isinstance(if_schema, dict) and set(if_schema) <= {"type"}


def _types(parts: list[_Part]) -> list[str] | None:
    allowed = None
    for schema, _ in parts:
        if "type" not in schema:
            continue
        t = schema["type"]
        ts = {t} if isinstance(t, str) else set(t)
        if "number" in ts:
            ts.add("integer")
        allowed = ts if allowed is None else allowed & ts
    if allowed is None:
        return None
    return [t for t in _TYPE_ORDER if t in allowed]


def _choices(parts: list[_Part]) -> list | None:
    choices = None
    for schema, _ in parts:
        here = None
        if "const" in schema:
            here = [schema["const"]]
        elif "enum" in schema:
            here = list(schema["enum"])
        if here is not None:
            choices = here if choices is None else [c for c in choices if c in here]
    return choices


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# text: mostly ASCII, some of everything else a client may send (no lone surrogates: those are
# a mutation, not part of a valid request)
_TEXT = st.one_of(
    st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=24),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
)
_KEYS = st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=1, max_size=10)


def json_values(max_leaves: int = 8) -> st.SearchStrategy:
    """Small arbitrary JSON values (what a schema leaves open, e.g. tool `parameters`)."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                        st.floats(allow_nan=False, allow_infinity=False, width=32), _TEXT)
    return st.recursive(scalars, lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(_KEYS, kids, max_size=3)), max_leaves=max_leaves)


def _json_objects() -> st.SearchStrategy:
    return st.dictionaries(_KEYS, json_values(4), max_size=3)


class _Drawer:
    def __init__(self, draw, max_depth: int):
        self.draw = draw
        self.max_depth = max_depth

    def maybe(self, depth: int) -> bool:
        """Whether to add an optional property: one in four near the root, rarer deeper."""
        if depth >= self.max_depth:
            return False
        return self.draw(st.integers(0, 3 + depth // 2)) == 0

    def value(self, parts: list[_Part], depth: int) -> Any:
        parts = _flatten(parts)
        types = _types(parts)
        if types is None:
            if any(k in s for s, _ in parts for k in ("properties", "required", "additionalProperties")):
                types = ["object"]
            elif any("items" in s for s, _ in parts):
                types = ["array"]
        choices = _choices(parts)
        if choices is not None and types is not None:
            choices = [c for c in choices if _json_type(c) in types
                       or (_json_type(c) == "integer" and "number" in types)]
        if choices is not None and not _has_conditionals(parts):
            return self.draw(st.sampled_from(choices)) if choices else None
        if types is None:
            if choices:
                return self.draw(st.sampled_from(choices))
            return self.draw(json_values())
        t = self.draw(st.sampled_from(types))
        parts = self.expand_conditionals(parts, _PLACEHOLDER[t], only_type=(t == "object"))
        choices = _choices(parts)
        if choices is not None:
            choices = [c for c in choices if _json_type(c) == t or (t == "number" and _json_type(c) == "integer")]
            return self.draw(st.sampled_from(choices)) if choices else _PLACEHOLDER[t]
        return getattr(self, "gen_" + t)(parts, depth)

    def expand_conditionals(self, parts: list[_Part], instance: Any, only_type: bool) -> list[_Part]:
        done: set[int] = set()
        while True:
            pending = [(s, b) for s, b in parts if "if" in s and id(s) not in done
                       and (not only_type or _type_only(s["if"]))]
            if not pending:
                return parts
            for schema, base in pending:
                done.add(id(schema))
                branch = schema.get("then" if _if_holds(schema["if"], instance) else "else")
                if branch is not None:
                    parts = _flatten(parts + [(branch, base)])

    # scalars ---------------------------------------------------------------------------

    def gen_null(self, parts, depth):
        return None

    def gen_boolean(self, parts, depth):
        return self.draw(st.booleans())

    def _bounds(self, parts):
        lo = max((s["minimum"] for s, _ in parts if "minimum" in s), default=None)
        hi = min((s["maximum"] for s, _ in parts if "maximum" in s), default=None)
        return lo, hi

    def gen_integer(self, parts, depth):
        lo, hi = self._bounds(parts)
        lo = math.ceil(lo) if lo is not None else (-1000 if hi is None else math.ceil(hi) - 1000)
        hi = math.floor(hi) if hi is not None else lo + 100_000
        return self.draw(st.integers(lo, hi))

    def gen_number(self, parts, depth):
        lo, hi = self._bounds(parts)
        if self.draw(st.booleans()):
            return self.gen_integer(parts, depth)
        return self.draw(st.floats(lo if lo is not None else -1e6, hi if hi is not None else 1e6,
                                   allow_nan=False, allow_infinity=False))

    def gen_string(self, parts, depth):
        pattern = next((s["pattern"] for s, _ in parts if "pattern" in s), None)
        if pattern is not None:
            return self.draw(st.from_regex(pattern, fullmatch=True))
        lo = max((s["minLength"] for s, _ in parts if "minLength" in s), default=0)
        hi = min((s["maxLength"] for s, _ in parts if "maxLength" in s), default=None)
        text = self.draw(_TEXT)
        if len(text) < lo:
            text += "x" * (lo - len(text))
        if hi is not None:
            text = text[:hi]
        return text

    # containers ------------------------------------------------------------------------

    def gen_array(self, parts, depth):
        items = [(s["items"], b) for s, b in parts if isinstance(s.get("items"), dict)]
        lo = max((s["minItems"] for s, _ in parts if "minItems" in s), default=0)
        hi = min((s["maxItems"] for s, _ in parts if "maxItems" in s), default=None)
        top = lo if depth >= self.max_depth else max(lo, 3 if depth < 3 else 1)
        if hi is not None:
            top = min(top, hi)
        n = self.draw(st.integers(lo, max(lo, top)))
        if not items:
            return [self.draw(json_values(4)) for _ in range(n)]
        return [self.value(items, depth + 1) for _ in range(n)]

    def gen_object(self, parts, depth):
        out: dict[str, Any] = {}
        decided: set[str] = set()
        done: set[int] = set()
        while True:
            props, required = _props(parts)
            pending = [(s, b) for s, b in parts if "if" in s and id(s) not in done]
            if not pending:
                break
            keys: list[str] = []
            for schema, _ in pending:
                cond = schema["if"] if isinstance(schema["if"], dict) else {}
                for k in list(cond.get("required", [])) + list(cond.get("properties", {})):
                    if k not in keys:
                        keys.append(k)
            for k in keys:
                if k in decided or k not in props:
                    continue
                decided.add(k)
                if k in required or self.draw(st.integers(0, 4)) > 0:
                    out[k] = self.value(props[k], depth + 1)
            for schema, base in pending:
                done.add(id(schema))
                branch = schema.get("then" if _if_holds(schema["if"], out) else "else")
                if branch is not None:
                    parts = _flatten(parts + [(branch, base)])
        props, required = _props(parts)
        for k in sorted(required):
            if k not in out:
                out[k] = self.value(props[k], depth + 1) if k in props else self.draw(json_values(4))
        max_props = min((s["maxProperties"] for s, _ in parts if "maxProperties" in s), default=None)
        for k in props:
            if k in out or k in decided:
                continue
            if max_props is not None and len(out) >= max_props:
                break
            if self.maybe(depth):
                out[k] = self.value(props[k], depth + 1)
        extra = [(s["additionalProperties"], b) for s, b in parts
                 if isinstance(s.get("additionalProperties"), dict)]
        if extra and depth < self.max_depth:
            name_max = min((s["propertyNames"].get("maxLength", 64) for s, _ in parts
                            if isinstance(s.get("propertyNames"), dict)), default=64)
            room = 3 if max_props is None else max(0, min(3, max_props - len(out)))
            for _ in range(self.draw(st.integers(0, room))):
                k = self.draw(_KEYS)[:name_max]
                if k not in out:
                    out[k] = self.value(extra, depth + 1)
        if not props and not extra and not required and depth < self.max_depth and self.draw(st.booleans()):
            # a free-form object (tool parameters, input, ...): some content
            for k, v in self.draw(_json_objects()).items():
                out.setdefault(k, v)
        return out


def _has_conditionals(parts: list[_Part]) -> bool:
    return any("if" in s for s, _ in parts)


def _props(parts: list[_Part]) -> tuple[dict[str, list[_Part]], set[str]]:
    props: dict[str, list[_Part]] = {}
    required: set[str] = set()
    for schema, base in parts:
        for k, sub in (schema.get("properties") or {}).items():
            props.setdefault(k, []).append((sub, base))
        required.update(schema.get("required") or ())
    return props, required


def from_schema(schema_id: str, max_depth: int = 5, ref: str | None = None) -> st.SearchStrategy:
    """Values valid (in the vast majority) for ``schema_id`` (or ``ref`` inside it)."""
    doc = documents()[schema_id]
    root = resolve(ref, schema_id) if ref else (doc, schema_id)
    return _schema_values(root, max_depth)


@st.composite
def _schema_values(draw, root: _Part, max_depth: int):
    return _Drawer(draw, max_depth).value([root], 0)


# ------------------------------------------------------------------------------ tree paths


def paths_of(value: Any, limit: int = 400) -> list[tuple]:
    """Paths (tuples of keys and indexes) of every node, root first, at most ``limit``."""
    out: list[tuple] = []
    todo: list[tuple[tuple, Any]] = [((), value)]
    while todo and len(out) < limit:
        path, node = todo.pop(0)
        out.append(path)
        if isinstance(node, dict):
            todo.extend((path + (k,), v) for k, v in node.items())
        elif isinstance(node, list):
            todo.extend((path + (i,), v) for i, v in enumerate(node))
    return out


def get_at(value: Any, path: tuple) -> Any:
    for p in path:
        value = value[p]
    return value


def set_at(value: Any, path: tuple, new: Any) -> Any:
    """A copy of ``value`` with the node at ``path`` replaced (copies only along the path)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copy = dict(value)
    else:
        copy = list(value)
    copy[head] = set_at(value[head], rest, new) if rest else new
    return copy


def _delete_at(value: Any, path: tuple) -> Any:
    parent = get_at(value, path[:-1])
    if isinstance(parent, dict):
        new_parent = {k: v for k, v in parent.items() if k != path[-1]}
    else:
        new_parent = [v for i, v in enumerate(parent) if i != path[-1]]
    return set_at(value, path[:-1], new_parent)


class Short:
    """Mixin: Hypothesis prints the value abbreviated in a falsifying example (a capture is 20 kB,
    a mutated body may be megabytes)."""

    LIMIT = 400

    def _repr_pretty_(self, p, cycle):
        text = self.short()
        p.text(text)

    def short(self) -> str:
        raw = bytes(self) if isinstance(self, bytes) else encode(self)
        more = f"... ({len(raw)} bytes)" if len(raw) > self.LIMIT else ""
        return f"{type(self).__name__}({raw[:self.LIMIT]!r}{more})"


class ShortBytes(Short, bytes):
    """A request body."""


class ShortDict(Short, dict):
    """A request, as a JSON object."""


class RawJSON(bytes):
    """Encoded JSON put as is in the body by ``encode`` (nesting too deep for json.dumps)."""


def nested(depth: int, kind: str = "list", leaf: Any = 1) -> Any:
    """``depth`` levels of arrays (or objects) around ``leaf``: a Python value up to 200 levels,
    beyond that a RawJSON (json.dumps would hit the recursion limit)."""
    if depth > 200:
        opener, closer = (b"[", b"]") if kind == "list" else (b'{"a":', b"}")
        return RawJSON(opener * depth + json.dumps(leaf).encode() + closer * depth)
    node = leaf
    for _ in range(depth):
        node = [node] if kind == "list" else {"a": node}
    return node


WRONG_TYPE_VALUES = [None, True, False, 0, -1, 1.5, "", "x", [], {}, [None], {"": None},
                     [[]], {"type": None}, "null", "[]", "{}"]
ODD_NUMBERS = [0, -1, 2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**30, -10**30, 1e308, -1e308,
               5e-324, 1.7976931348623157e308, 0.1, -0.0, 10**4000]
ODD_STRINGS = ["", " ", "\x00", "\x00\x01\x1f", "\u2028\u2029", "\ufeff", "\U0001F600" * 50,
               "\u202e\u202d", "a\r\nb", "\\", '"', "</script>", "%s%n%x", "${jndi:x}",
               "\udcff", "\ud800", "\ud83d", "x" * 70_000, "\u00e9" * 1000, "claude-sonnet-4-5\x00x",
               "../../etc/passwd", "💥" * 3000]


@st.composite
def tree_mutation(draw, value: Any):
    """One mutation of the JSON tree ``value``: (description, new value)."""
    paths = paths_of(value)
    path = draw(st.sampled_from(paths))
    node = get_at(value, path)
    op = draw(st.sampled_from(["wrong_type", "number", "string", "nested", "unknown_field",
                               "delete", "empty", "explode"]))
    where = "/".join(map(str, path)) or "<root>"
    if op == "wrong_type":
        new = draw(st.sampled_from([v for v in WRONG_TYPE_VALUES if type(v) is not type(node)]))
        return f"{where}: wrong type {new!r}", set_at(value, path, new)
    if op == "number":
        new = draw(st.sampled_from(ODD_NUMBERS))
        return f"{where}: number {str(new)[:30]}", set_at(value, path, new)
    if op == "string":
        new = draw(st.sampled_from(ODD_STRINGS))
        return f"{where}: string {new[:30]!r}", set_at(value, path, new)
    if op == "nested":
        depth = draw(st.sampled_from([2, 10, 50, 95, 99, 100, 101, 150, 1000, 5000]))
        kind = draw(st.sampled_from(["list", "dict"]))
        return f"{where}: nested {kind} x{depth}", set_at(value, path, nested(depth, kind))
    if op == "unknown_field":
        target_paths = [p for p in paths if isinstance(get_at(value, p), dict)] or [()]
        tp = draw(st.sampled_from(target_paths))
        obj = get_at(value, tp)
        if not isinstance(obj, dict):
            return "root: unknown field on a non-object", value
        key = draw(st.one_of(_KEYS, st.sampled_from(["__proto__", "constructor", "", "model",
                                                     "stream", "\u0000", "x" * 5000])))
        new_obj = {**obj, key: draw(json_values(6))}
        return f"{'/'.join(map(str, tp)) or '<root>'}: field {key[:20]!r}", set_at(value, tp, new_obj)
    if op == "delete":
        if not path:
            return "<root>: emptied", {}
        return f"{where}: deleted", _delete_at(value, path)
    if op == "empty":
        new = draw(st.sampled_from([[], {}, "", None]))
        return f"{where}: empty {new!r}", set_at(value, path, new)
    # explode: a list with very many entries (past the message-count limit too)
    n = draw(st.sampled_from([50, 5001]))
    item = node if not isinstance(node, list) else (node[0] if node else {})
    n = max(2, min(n, (4 << 20) // max(1, len(encode(item)))))  # at most ~4 MB
    return f"{where}: {n} copies", set_at(value, path, [item] * n)



def encode(value: Any, ensure_ascii: bool = False) -> bytes:
    """The JSON body for ``value``: UTF-8, lone surrogates as \\uXXXX escapes (valid JSON that
    decodes to a lone surrogate), RawJSON nodes inserted as they are."""
    raws: list[bytes] = []

    def swap(node):
        if isinstance(node, RawJSON):
            raws.append(bytes(node))
            return f"\u0002RAW{len(raws) - 1}\u0002"
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    has_raw = any(isinstance(n, RawJSON) for n in iter_nodes(value))
    if has_raw:
        value = swap(value)
    out = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "backslashreplace")
    for i, raw in enumerate(raws):
        out = out.replace(json.dumps(f"\u0002RAW{i}\u0002", ensure_ascii=ensure_ascii).encode(), raw)
    return out


_encode = encode


_SENTINEL = "\u0001SENTINEL\u0001"


@st.composite
def byte_mutation(draw, value: Any):
    """One mutation at the level of the encoded body: (description, bytes)."""
    paths = paths_of(value)
    op = draw(st.sampled_from(["literal", "duplicate_key", "bad_utf8", "truncate", "garbage",
                               "utf16", "bom", "ascii_escapes"]))
    body = _encode(value)
    if op == "literal":
        path = draw(st.sampled_from(paths))
        lit = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400",
                                    b"1" * 5000, b"-0", b"1E+999999999", b"0.0000000000e-99999",
                                    b"123456789012345678901234567890"]))
        raw = _encode(set_at(value, path, _SENTINEL))
        return f"{'/'.join(map(str, path)) or '<root>'}: literal {lit[:20]!r}", \
            raw.replace(json.dumps(_SENTINEL).encode(), lit)
    if op == "duplicate_key":
        dicts = [p for p in paths if isinstance(get_at(value, p), dict) and get_at(value, p)]
        if not dicts:
            return "no object to duplicate a key in", body
        p = draw(st.sampled_from(dicts))
        obj = get_at(value, p)
        key = draw(st.sampled_from(sorted(obj)))
        dup = draw(st.sampled_from(WRONG_TYPE_VALUES + ["claude-sonnet-4-5", "gpt-4o"]))
        # the object re-encoded by hand: the duplicate first, then the original members
        inner = ", ".join([f"{json.dumps(key)}: {json.dumps(dup)}"]
                          + [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in obj.items()])
        raw = _encode(set_at(value, p, _SENTINEL))
        return f"{'/'.join(map(str, p)) or '<root>'}: duplicate {key!r}", \
            raw.replace(json.dumps(_SENTINEL).encode(), ("{" + inner + "}").encode("utf-8", "backslashreplace"))
    if op == "bad_utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1",
                                    b"\xf0\x28\x8c\xbc", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                                    b"\x80"]))
        strings = [p for p in paths if isinstance(get_at(value, p), str)]
        if strings:
            p = draw(st.sampled_from(strings))
            raw = _encode(set_at(value, p, _SENTINEL))
            return f"{'/'.join(map(str, p))}: invalid UTF-8 {bad!r} in a string", \
                raw.replace(_SENTINEL.encode(), bad)
        pos = draw(st.integers(0, len(body)))
        return f"invalid UTF-8 {bad!r} at byte {pos}", body[:pos] + bad + body[pos:]
    if op == "truncate":
        pos = draw(st.integers(0, max(0, len(body) - 1)))
        return f"truncated at {pos}", body[:pos]
    if op == "garbage":
        tail = draw(st.sampled_from([b"x", b"}", b"]", b"{}", b"\x00", b" \n\t", b"// c", b",", b"\xff"]))
        return f"trailing {tail!r}", body + tail
    if op == "utf16":
        return "UTF-16 encoded", body.decode("utf-8", "replace").encode("utf-16")
    if op == "bom":
        return "UTF-8 BOM", b"\xef\xbb\xbf" + body
    return "ASCII escapes only", encode(value, ensure_ascii=True)



@st.composite
def mutated(draw, value: Any):
    """(description, body bytes): ``value`` mutated once or twice in its tree, or in its bytes."""
    if draw(st.integers(0, 3)) == 0:
        what, raw = draw(byte_mutation(value))
        return what, ShortBytes(raw)
    what, new = draw(tree_mutation(value))
    if draw(st.booleans()):
        more, new = draw(tree_mutation(new))
        what += "; " + more
    return what, ShortBytes(_encode(new))


def iter_nodes(value: Any) -> Iterator[Any]:
    todo = [value]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list) and not isinstance(node, RawJSON):
            todo.extend(node)
