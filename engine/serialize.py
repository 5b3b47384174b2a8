"""Templates written straight to JSON text, for the stream hot path.

An emitted chunk is mostly constant: `{"id":…,"object":"chat.completion.chunk","created":…,
"model":…,"choices":[{"index":0,"delta":{"content":…},…}]}`. Building it as a dict and then
running the JSON encoder over it costs ~1.5 µs; here each object/array template also gets a
generated function that writes its text directly: constant members pre-encoded at compile
time, only the values that vary encoded per event (~0.4 µs). The output is the same text
`nodes.dumps` gives for the dict the template builds; tests/test_fastpaths.py compares the two
byte for byte on every recorded stream.
"""
from __future__ import annotations

from json import encoder as _jenc

from . import nodes as N

_str = _jenc.c_encode_basestring or _jenc.py_encode_basestring  # ensure_ascii=False, as nodes.dumps
_INF = float("inf")


def enc(v) -> str:
    """JSON text of one value, as nodes.dumps writes it."""
    t = type(v)
    if t is str:
        return _str(v)
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if t is int:
        return int.__repr__(v)
    if t is float:
        if v != v:
            return "NaN"
        if v == _INF:
            return "Infinity"
        if v == -_INF:
            return "-Infinity"
        return float.__repr__(v)
    return N.dumps(v)


def _value_lines(env: dict, i: int, node, keep: bool, put: str) -> list[str]:
    """Lines that append `put + <JSON of node's value>` to p, skipping null unless keep."""
    if isinstance(node, N.Const):
        if node.value is None and not keep:
            return []
        env[f"C{i}"] = put + enc(node.value)
        return [f"    p.append(C{i})"]
    env[f"K{i}"] = put
    text = getattr(node, "json", None)
    if text is not None:  # a nested object/array/use: its own text function
        env[f"J{i}"] = text
        if keep:
            return [f"    s = J{i}(scope)", f"    p.append(K{i} + (s if s is not None else 'null'))"]
        return [f"    s = J{i}(scope)", "    if s is not None:", f"        p.append(K{i} + s)"]
    lines = _eval_lines(env, i, node)
    if keep:
        return lines + [f"    p.append(K{i} + enc(v))"]
    return lines + ["    if v is not None:", f"        p.append(K{i} + enc(v))"]


def _eval_lines(env: dict, i: int, node) -> list[str]:
    """Lines that leave the node's value in v (inlined as in nodes._codegen)."""
    code = getattr(node, "code", None)
    if code is not None:
        src, names = code
        env.update(names)
        return [f"    v = {src}"]
    path = getattr(node, "path", None)
    if path:
        env[f"P{i}_0"] = path[0]
        lines = [f"    v = scope.get(P{i}_0)"]
        for j, part in enumerate(path[1:], 1):
            env[f"P{i}_{j}"] = part
            lines.append(f"    v = v.get(P{i}_{j}) if type(v) is dict else None")
        return lines
    env[f"F{i}"] = node
    return [f"    v = F{i}(scope)"]


def _name_lines(env: dict, i: int, node) -> list[str]:
    """Lines that leave the value of the event-name member in tv."""
    if isinstance(node, N.Const):
        env[f"TV{i}"] = node.value
        return [f"    tv = TV{i}"]
    write = getattr(node, "json", None)
    if write is not None:  # an object as the name: rare; evaluated as the dict path would
        env[f"F{i}"] = node
        return [f"    tv = F{i}(scope)"]
    return _eval_lines(env, i, node) + ["    tv = v"]


def _build(name: str, lines: list[str], env: dict):
    env.setdefault("enc", enc)
    exec(compile("\n".join(lines), f"<json {name}>", "exec"), env)  # noqa: S102 - generated above
    return env["ser"]


def object_text(items, keep_null: frozenset):
    """`ser(scope) -> str`: the JSON text of an object template."""
    env: dict = {}
    lines = ["def ser(scope):", "    p = []"]
    for i, (k, n) in enumerate(items):
        lines += _value_lines(env, i, n, k in keep_null, enc(k) + ":")
    lines.append("    return '{' + ','.join(p) + '}'")
    return _build("object", lines, env)


def array_text(nodes):
    """`ser(scope) -> str`: the JSON text of an array template (nulls left out, as in nodes.arr)."""
    env: dict = {}
    lines = ["def ser(scope):", "    p = []"]
    for i, n in enumerate(nodes):
        lines += _value_lines(env, i, n, False, "")
    lines.append("    return '[' + ','.join(p) + ']'")
    return _build("array", lines, env)


def frame_text(items, keep_null: frozenset, event_field: str | None, seq_field: str | None):
    """`ser(scope, out) -> str`: one whole SSE frame for an emitted object template, framed as
    StreamTranslator.encode frames the dict (`event: <event_field value>` line when the spec has
    one; `type` then `<seq_field>: out.seq` first when it stamps sequence numbers). None when the
    shape is one this does not cover (the dict path then runs)."""
    keys = [k for k, _ in items]
    if (event_field not in (None, "type")) or (seq_field is not None and seq_field in keys):
        return None
    env: dict = {}
    lines = ["def ser(scope, out):", "    p = []", "    tv = None"]
    order = list(enumerate(items))
    if seq_field is not None:
        # {"type": ev.get("type"), seq: n, **ev}: type first (null when left out), then the number
        typed = [(i, kn) for i, kn in order if kn[0] == "type"]
        order = [(i, kn) for i, kn in order if kn[0] != "type"]
        if typed:
            (i, (_, node)), = typed
            lines += _name_lines(env, i, node) + ["    p.append('\"type\":' + enc(tv))"]
        else:
            lines.append("    p.append('\"type\":null')")
        env["SEQ"] = enc(seq_field) + ":"
        lines += ["    p.append(SEQ + int.__repr__(out.seq))", "    out.seq += 1"]
    for i, (k, n) in order:
        if k == event_field and seq_field is None:
            env[f"K{i}"] = enc(k) + ":"
            lines += _name_lines(env, i, n)
            lines += [f"    p.append(K{i} + enc(tv))"] if k in keep_null else \
                ["    if tv is not None:", f"        p.append(K{i} + enc(tv))"]
            continue
        lines += _value_lines(env, i, n, k in keep_null, enc(k) + ":")
    body = "'{' + ','.join(p) + '}'"
    if event_field is not None:
        lines.append(f"    return f'event: {{tv}}\\ndata: ' + {body} + '\\n\\n'")
    else:
        lines.append(f"    return 'data: ' + {body} + '\\n\\n'")
    return _build("frame", lines, env)
