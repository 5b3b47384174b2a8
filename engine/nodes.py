"""Compiled template nodes: each is a plain closure `f(scope) -> value`.

Closures rather than node objects: one call per node, no attribute lookups. Constant
subtrees are folded at compile time and wrapped by `const()`; outputs that are constants are
shared between calls, so nothing downstream may mutate a spec's output in place."""
from __future__ import annotations

from .expr import flatten
from .expr import fresh_name, truthy_source
from .jsontext import dumps  # noqa: F401 - N.dumps, as the rest of the engine calls it

class Const:
    """Marker for a folded constant during compilation (never reaches the hot path)."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def as_fn(node):
    if isinstance(node, Const):
        v = node.value
        return lambda scope: v
    return node


def truthy(v) -> bool:
    # JMESPath truthiness: null, false, '' [] {} are false; 0 is true.
    return not (v is None or v is False or v == "" or v == [] or v == {})


def obj(items, keep_null=frozenset()):
    if all(isinstance(n, Const) for _, n in items):
        return Const({k: n.value for k, n in items if n.value is not None or k in keep_null})
    from . import serialize  # here: serialize imports this module
    build = _codegen("obj", items, keep_null)
    build.json = serialize.object_text(items, keep_null)  # the same value, as JSON text
    build.fields = (items, keep_null)
    return build


def arr(nodes):
    if all(isinstance(n, Const) for n in nodes):
        return Const([n.value for n in nodes if n.value is not None])
    from . import serialize  # here: serialize imports this module
    build = _codegen("arr", list(enumerate(nodes)), frozenset())
    build.json = serialize.array_text(nodes)
    build.items = tuple(nodes)
    return build


def _codegen(kind: str, items, keep_null):
    """One straight-line Python function per object/array node, generated at compile time:
    constants are bound once, expressions (plain paths such as `state.id` included) are inlined
    from the source they carry (`.code`, engine/expr.py), other nodes are called; null values are left out
    unless keep_null. Same result as looping over per-field closures, without a call per field."""
    env = {}
    lines = ["def build(scope):", "    out = {}" if kind == "obj" else "    out = []"]
    for i, (k, n) in enumerate(items):
        env[f"K{i}"] = k
        keep = kind == "obj" and k in keep_null
        put = f"out[K{i}] = " if kind == "obj" else "out.append("
        end = "" if kind == "obj" else ")"
        if isinstance(n, Const):
            if n.value is None and not keep:
                continue
            env[f"C{i}"] = n.value
            lines.append(f"    {put}C{i}{end}")
            continue
        code = getattr(n, "code", None)
        if code is not None:
            src, names = code
            env.update(names)
            lines.append(f"    v = {src}")
        else:
            env[f"F{i}"] = n
            lines.append(f"    v = F{i}(scope)")
        if keep:
            lines.append(f"    {put}v{end}")
        else:
            lines.append("    if v is not None:")
            lines.append(f"        {put}v{end}")
    lines.append("    return out")
    exec(compile("\n".join(lines), f"<template {kind}>", "exec"), env)
    return env["build"]


def each(source, name, body, flatten=False, index=None):
    src = as_fn(source)
    f = as_fn(body)

    def run(scope):
        items = src(scope)
        if items is None:
            return None
        if type(items) is dict:
            items = [{"key": k, "value": v} for k, v in items.items()]
        elif type(items) is not list:
            items = [items]
        out = []
        inner = dict(scope)
        for i, item in enumerate(items):
            inner[name] = item
            if index:
                inner[index] = i
            v = f(inner)
            if v is None:
                continue
            if flatten and type(v) is list:
                out.extend(v)
            else:
                out.append(v)
        return out
    return run


def switch(on, cases: dict, default):
    sel = as_fn(on)
    table = {k: as_fn(v) for k, v in cases.items()}
    dflt = as_fn(default) if default is not None else (lambda scope: None)

    def run(scope):
        key = sel(scope)
        try:
            f = table.get(key, dflt)
        except TypeError:  # unhashable selector value
            f = dflt
        return f(scope)
    return run


def lookup(on, table: dict, default):
    sel = as_fn(on)
    dflt = as_fn(default) if default is not None else (lambda scope: None)

    def run(scope):
        key = sel(scope)
        try:
            if key in table:
                return table[key]
        except TypeError:
            pass
        return dflt(scope)
    return run


def coalesce(nodes):
    fns = tuple(as_fn(n) for n in nodes)

    def run(scope):
        for f in fns:
            v = f(scope)
            if v is not None:
                return v
        return None
    return run


def when(cond, value, otherwise=None):
    code = _when_code(cond, value, otherwise)
    if code is not None:
        # as source: templates inline it (expr.py, _codegen, serialize.py)
        run = eval(f"lambda scope: {code[0]}", dict(code[1]))  # noqa: S307 - built from compiled parts
        run.code = code
        return run
    c = as_fn(cond)
    v = as_fn(value)
    o = as_fn(otherwise) if otherwise is not None else None

    def run(scope):
        if truthy(c(scope)):
            return v(scope)
        return o(scope) if o is not None else None
    return run


def _when_code(cond, value, otherwise):
    """(source, names) of a `when` whose parts are constants or carry their source, else None."""
    names: dict = {}
    parts = []
    for node in (cond, value, otherwise):
        if node is None or isinstance(node, Const):
            value_ = None if node is None else node.value
            key = fresh_name("w")
            names[key] = value_
            parts.append(key)
            continue
        code = getattr(node, "code", None)
        if code is None:
            return None
        names.update(code[1])
        parts.append(code[0])
    c, v, o = parts
    return f"({v} if {truthy_source(fresh_name('wt'), c)} else {o})", names


def concat(nodes):
    fns = tuple(as_fn(n) for n in nodes)

    def run(scope):
        parts = [v for v in (f(scope) for f in fns) if v is not None]
        if not parts:
            return None
        if all(type(p) is str for p in parts):
            return "".join(parts)
        return flatten(parts) or None
    return run


def merge(nodes):
    fns = tuple(as_fn(n) for n in nodes)

    def run(scope):
        out = {}
        for f in fns:
            v = f(scope)
            if type(v) is dict:
                out.update(v)
        return out or None
    return run


def use(defs: dict, name: str, bindings):
    """Calls a named block from `defs`; resolved lazily so defs may use each other."""
    inner_scope = binder(bindings)
    if inner_scope is None:
        # templates never write to the scope: nothing to copy
        def run(scope):
            return defs[name](scope)
    else:
        def run(scope):
            return defs[name](inner_scope(scope))
    from .serialize import enc  # here: serialize imports this module

    def text(scope):
        target = defs[name]
        inner = scope if inner_scope is None else inner_scope(scope)
        write = getattr(target, "json", None)
        if write is not None:
            return write(inner)
        v = target(inner)
        return None if v is None else enc(v)
    run.json = text
    run.target = (defs, name, inner_scope)
    run.bindings = tuple(bindings)
    return run


def binder(bindings):
    """`scope -> inner scope` with the `with:` values bound, or None when there are none."""
    binds = tuple((k, as_fn(v)) for k, v in bindings)
    if not binds:
        return None

    def inner_scope(scope):
        inner = dict(scope)
        for k, f in binds:
            inner[k] = f(scope)
        return inner
    return inner_scope


def pipe(transform, source, args):
    src = as_fn(source)
    argf = tuple((k, as_fn(v)) for k, v in args)

    def run(scope):
        return transform(src(scope), **{k: f(scope) for k, f in argf})
    return run
