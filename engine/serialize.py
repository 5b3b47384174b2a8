"""Templates written straight to JSON text, for the stream hot path.

An emitted chunk is mostly constant: `{"id":…,"object":"chat.completion.chunk","created":…,
"model":…,"choices":[{"index":0,"delta":{"content":…},…}]}`. Building it as a dict and running
the JSON encoder over it costs ~2.5 µs. Here an object or array template also gets a generated
function that writes its text: every varying value is evaluated in template order into a local
and encoded, constant members are pre-encoded at generation time, and the whole text is one
f-string (or, when a value that may be left out is null, the members present are joined).

A `use` of a block whose `with:` values are plain (constants, paths, objects of those) and
whose body reads each bound name only as a whole value is written as that block with the values
in place: no inner scope and no intermediate dict (the chunk's `delta`).

Frame writers and each spec's top-level writer are generated once the whole spec is compiled (a
`use` may name a block defined after it), nested writers on first use. The text is the same
`nodes.dumps` gives for the dict the template builds: tests/test_fastpaths.py compares the two
byte for byte on every recorded stream, tests/test_cases.py on every case file and
tests/test_serialize.py on shapes the shipped specs do not use.
"""
from __future__ import annotations

import itertools

from . import codegen
from .constant import Const
from .expr import OPAQUE, hoist_paths
from .jsontext import dumps, float_text, str_text
from .program import SHARED, shared_text

_str = str_text  # a string's JSON text, as nodes.dumps writes it
_long_str = str_text  # msgspec's C loop is the faster for long text as well
_LONG = 128
_WIDE = 16


def enc(v) -> str:
    """JSON text of one value, as nodes.dumps writes it."""
    t = type(v)
    if t is str:
        return _str(v) if len(v) < _LONG else _long_str(v)
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if t is int:
        return int.__repr__(v)
    if t is float:
        return float_text(v)
    if id(v) in SHARED:
        text = shared_text(v)
        if text is not None:
            return text
    return dumps(v)


_KEPT: dict = {}
_KEPT_MAX = 4096


def kept_str(v: str) -> str:
    """_str(v) of a short string, kept for the next frame that writes it (a str caches its
    hash, so finding it costs less than writing it). Bounded: past _KEPT_MAX it starts over."""
    t = _KEPT.get(v)
    if t is None:
        if len(_KEPT) >= _KEPT_MAX:
            _KEPT.clear()
        t = _KEPT[v] = str_text(v)
    return t


def _key(k) -> str:
    """`"key":` as the JSON encoder writes a dict key (a YAML key may be a number or a boolean)."""
    if not isinstance(k, str):
        k = enc(k) if not isinstance(k, float) else float.__repr__(k)  # as the json module writes a key
    return _str(k) + ":"


def enc_memo(v: dict, out) -> str:
    """enc(v), remembered on `out` (TextOut) for the next frame of the same object. Every
    action that changes state or scope clears the memo (compiler.py), so an object is only
    reused while nothing could have changed it."""
    memo = out.memo
    if memo is not None and memo[0] is v:
        return memo[1]
    # a response object (30 members) may echo the request's objects: their text is kept for
    # the stream (program.Echo); an item or a part (a few members) is written as it is
    text = dumps(v) if len(v) < _WIDE or out.echo is None else out.echo.dumps(v)
    out.memo = (v, text)
    return text


class _Unsupported(Exception):
    """A shape the generator leaves to the dict path."""


def _pure(node) -> bool:
    """No side effect, no error, no volatile value: may be evaluated where it is used."""
    if isinstance(node, Const) or getattr(node, "path", None):
        return True
    if getattr(node, "pure", False):
        return True
    fields = getattr(node, "fields", None)
    if fields is not None:
        return all(_pure(n) for _, n in fields[0])
    items = getattr(node, "items", None)
    if items is not None:
        return all(_pure(n) for n in items)
    return False


def _reads_only_whole(node, names: frozenset) -> bool:
    """True when `node` reads the names only as whole values (a path `name`), never inside an
    expression, a deeper path or a block that could not be inspected."""
    if isinstance(node, Const):
        return True
    path = getattr(node, "path", None)
    if path:
        return path[0] not in names or len(path) == 1
    # an object or array is judged by its members, as its source would not tell whole from deep reads
    fields = getattr(node, "fields", None)
    if fields is not None:
        return all(_reads_only_whole(n, names) for _, n in fields[0])
    items = getattr(node, "items", None)
    if items is not None:
        return all(_reads_only_whole(n, names) for n in items)
    code = getattr(node, "code", None)
    if code is not None:
        return OPAQUE not in code[1] and not any(type(v) is str and v in names for v in code[1].values())
    return False


class _Gen:
    """One generated function. A member value is ("lit", text) for a constant, or
    ("var", local, may_be_null) for text computed into a local."""

    def __init__(self):
        self.env: dict = {"enc": enc, "_str": _str, "_lstr": _long_str, "_kstr": kept_str, "_kget": _KEPT.get,
                          "_int": int.__repr__, "enc_memo": enc_memo}
        self.lines: list[str] = []
        self.ids = itertools.count()
        self.framed = False  # generating a frame: `out` (a TextOut) is in scope

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def bind(self, value, prefix: str = "B") -> str:
        n = self.name(prefix)
        self.env[n] = value
        return n

    def value(self, node, keep: bool, subst: dict, raw: str | None = None):
        """Lines computing one member's text (in template order); None for a member always left
        out. `raw` names a local that also gets the member's value (the event name)."""
        if isinstance(node, Const):
            if node.value is None and not keep:
                return None
            if raw:
                self.lines.append(f"    {raw} = {self.bind(node.value)}")
            return ("lit", enc(node.value), False)
        path = getattr(node, "path", None)
        if path and len(path) == 1 and path[0] in subst:
            return self.value(subst[path[0]], keep, {}, raw)
        if raw is None:
            fields = getattr(node, "fields", None)
            if fields is not None:
                return self.object(fields[0], fields[1], subst)
            items = getattr(node, "items", None)
            if items is not None:
                return self.array(items, subst)
            if getattr(node, "target", None) is not None and not subst:
                expanded = self.use(node)
                if expanded is not None:
                    return expanded
        write = getattr(node, "json", None)
        local = self.name("t")
        if write is not None:
            if raw:
                raise _Unsupported("an object as the event name")
            self.lines.append(f"    {local} = {self.bind(write, 'J')}(scope)")
            if keep:
                self.lines.append(f"    if {local} is None: {local} = 'null'")
            return ("var", local, not keep)
        null = "'null'" if keep else "None"
        # in a frame, an object is encoded through the frame's memo: the Responses stream
        # emits the same response object twice in a row (created, in_progress)
        other = "(enc_memo(v, out) if type(v) is dict else enc(v))" if self.framed else "enc(v)"
        # a stream state's strings (the message id, the model) stay the same over the stream's
        # every frame: their text is kept, not written again per event
        kept = self.framed and path and len(path) > 1 and path[0] == "state"
        # (a kept text is found by a lookup in C: no call of kept_str per frame)
        text = f"({'(_kget(v) or _kstr(v))' if kept else '_str(v)'} if len(v) < {_LONG} else _lstr(v))"
        self.lines.append(f"    {local} = {null} if (v := {self.source(node)}) is None else "
                          f"({text} if type(v) is str else _int(v) if type(v) is int else {other})")
        if raw:
            self.lines.append(f"    {raw} = v")
        return ("var", local, not keep)

    def source(self, node) -> str:
        """A Python expression for the node's value: its inlined source (every expression, plain
        paths included, carries one: expr.py), or a call."""
        code = getattr(node, "code", None)
        if code is not None:
            src, names = code
            self.env.update(names)
            return src
        return f"{self.bind(node, 'F')}(scope)"

    def use(self, node):
        """A `use` written as its block, or None when it cannot be."""
        expansion = _expansion(node)
        if expansion is None:
            return None
        (items, keep_null), subst = expansion
        return self.object(items, keep_null, subst)

    def object(self, items, keep_null, subst: dict):
        members = []
        for k, n in items:
            got = self.value(n, k in keep_null, subst)
            if got is not None:
                members.append((_key(k), got))
        return self.compose(members, "{", "}")

    def array(self, nodes, subst: dict):
        members = [("", got) for got in (self.value(n, False, subst) for n in nodes) if got is not None]
        return self.compose(members, "[", "]")

    def compose(self, members, open_: str, close: str):
        """An object or array: ("seg", f-string segments, False) spliced into its parent's
        f-string when no member can be null, else a local holding the text: one f-string when
        the few members that may be null are all there, else the members present joined."""
        segments = [("lit", open_), *_joined(members), ("lit", close)]
        maybe = [v[1] for _, v in members if v[2]]
        if not maybe:
            return ("seg", segments, False)
        local, parts = self.name("o"), self.name("p")
        indent = "    "
        if len(maybe) <= 6:  # more, and they are seldom all there (a request's optional fields)
            cond = " and ".join(f"{m} is not None" for m in maybe)
            self.lines += [f"    if {cond}:", f"        {local} = {_fstring(segments)}", "    else:"]
            indent = "        "
        # runs of members always present are one part, written together
        self.lines.append(f"{indent}{parts} = []")
        run: list = []
        for key, v in members:
            if not v[2]:
                run.append((key, v))
                continue
            if run:
                self.lines.append(f"{indent}{parts}.append({_fstring(_joined(run))})")
                run = []
            self.lines.append(f"{indent}if {v[1]} is not None: {parts}.append({self.bind(key, 'K')} + {v[1]})")
        if run:
            self.lines.append(f"{indent}{parts}.append({_fstring(_joined(run))})")
        self.lines.append(f"{indent}{local} = {open_!r} + ','.join({parts}) + {close!r}")
        return ("var", local, False)

    def text(self, v) -> str:
        """A Python expression for a member's text."""
        if v[0] == "lit":
            return self.bind(v[1], "L")
        if v[0] == "seg":
            return _fstring(v[1])
        return v[1]

    def build(self, params: str, result: str, label: str):
        src = "\n".join([f"def ser({params}):", *hoist_paths([*self.lines, f"    return {result}"], self.env)])
        return codegen.define(src, f"json {label}", self.env, "ser")


def _joined(members) -> list:
    """f-string segments of members: `key` then the value, comma-separated."""
    out = []
    for i, (key, v) in enumerate(members):
        out.append(("lit", ("," if i else "") + key))
        if v[0] == "seg":
            out.extend(v[1])
        else:
            out.append(("lit", v[1]) if v[0] == "lit" else ("var", v[1]))
    return out


def _fstring(segments) -> str:
    """Python source of an f-string: literal text (braces doubled) and `{local}` holes."""
    parts = []
    for kind, value in segments:
        parts.append(value.replace("{", "{{").replace("}", "}}") if kind == "lit" else "{" + value + "}")
    return "f" + repr("".join(parts))


def _expansion(node, depth: int = 0):
    """((items, keep_null), subst) to write a `use` node as its block with the `with:` values in
    place, or None when the block is not an object or the values cannot be moved there."""
    defs, name, _inner = node.target
    target = defs[name]
    binds = getattr(node, "bindings", ())
    if not binds and getattr(target, "target", None) is not None:
        # a block that is only a `use` of another (tool_delta -> chunk); a cycle is left alone
        return _expansion(target, depth + 1) if depth < 8 else None
    fields = getattr(target, "fields", None)
    if fields is None:
        return None
    names = frozenset(k for k, _ in binds)
    if not all(_pure(v) for _, v in binds) or not _reads_only_whole(target, names):
        return None
    return fields, dict(binds)


def _lazy(make):
    """A function generated on its first call (every block of the spec exists by then), or by
    settle() once the spec is compiled."""
    cell: list = []
    make = codegen.within(make)

    def generate():
        if not cell:
            cell.append(make())
        return cell[0]

    def first(*args):
        return generate()(*args)
    first.generate = generate
    return first


def settle(fn):
    """The generated function behind a _lazy one (generated now), without the wrapper's call."""
    generate = getattr(fn, "generate", None)
    return generate() if generate is not None else fn


def object_text(items, keep_null: frozenset):
    """`ser(scope) -> str`: the JSON text of an object template."""
    def make():
        g = _Gen()
        return g.build("scope", g.text(g.object(items, keep_null, {})), "object")
    return _lazy(make)


def array_text(nodes):
    """`ser(scope) -> str`: the JSON text of an array template (nulls left out, as nodes.arr)."""
    def make():
        g = _Gen()
        return g.build("scope", g.text(g.array(nodes, {})), "array")
    return _lazy(make)


def frame_text(node, event_field: str | None, seq_field: str | None):
    """`frame(scope, out) -> str | None`: one whole SSE frame for an emitted template, framed as
    StreamTranslator.encode frames its dict (`event: <event_field value>` when the spec names
    one; `type` then `<seq_field>: out.seq` first when it stamps sequence numbers). None when
    the template is neither an object nor a `use` of one: the dict path runs for it. Called
    once the whole spec is compiled (a `use` names blocks that may come later)."""
    if event_field not in (None, "type"):
        return None
    if getattr(node, "fields", None) is None and getattr(node, "target", None) is None:
        return None
    fields = getattr(node, "fields", None)
    subst: dict = {}
    if fields is None:
        expansion = _expansion(node)
        if expansion is None:
            return _dict_frame(node)
        fields, subst = expansion
    items, keep_null = fields
    if seq_field is not None and any(k == seq_field for k, _ in items):
        return _dict_frame(node)
    try:
        return _frame(_Gen(), items, keep_null, subst, event_field, seq_field)
    except _Unsupported:
        return _dict_frame(node)


def _dict_frame(node):
    def frame(scope, out):
        v = node(scope)
        return None if v is None else out.frame(v)
    return frame


def _frame(g: _Gen, items, keep_null, subst, event_field, seq_field):
    g.framed = True
    g.lines.append("    tv = None")
    named_key = "type" if (seq_field is not None or event_field == "type") else None
    members, head = [], None
    for k, n in items:
        named = k == named_key
        # stamped events always carry type, null when the template leaves it out
        got = g.value(n, k in keep_null or (named and seq_field is not None), subst, "tv" if named else None)
        if got is None:
            continue
        if named and seq_field is not None:
            head = (_key(k), got)
        else:
            members.append((_key(k), got))
    if seq_field is not None:
        # {"type": ev.get("type"), seq: n, **ev}: type first, then the number, then the rest
        g.lines += ["    sq = int.__repr__(out.seq)", "    out.seq += 1"]
        members = [head or ('"type":', ("lit", "null", False)), (_key(seq_field), ("var", "sq", False))] \
            + members
    prefix = [("lit", "event: "), ("var", "tv"), ("lit", "\ndata: ")] if event_field else [("lit", "data: ")]
    body = g.compose(members, "{", "}")
    inner = body[1] if body[0] == "seg" else [("var", body[1])]
    result = _fstring([*prefix, *inner, ("lit", "\n\n")])
    return g.build("scope, out", result, "frame")
