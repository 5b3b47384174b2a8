"""Stream handlers written as Python source for the byte path.

Per upstream event the compiled actions are closures calling closures: the handler, a `switch`
on the delta type, an `emit`, its frame writer, each a Python call with its own checks (~0.5
µs of a text delta's 2.5 µs). For StreamTranslator.feed, each handler is also written as one
function: `switch` and `when` become if/elif on inlined expressions, `do` inlines the named
list, `emit` calls its frame writers directly, `set`/`incr`/`append`/`put` assign inlined values,
`each` is a loop binding its name in the scope (read in place, never hoisted); `end` calls its
closure, which behaves the same on both paths.
The result is the same bytes as the closures give (tests/test_fastpaths.py,
tests/test_serialize.py compare every stream).
"""
from __future__ import annotations

import itertools

from . import codegen
from . import nodes as N
from .expr import hoist_paths, truthy_source
from .program import mutated


_MISSING = object()


class _Gen:
    def __init__(self):
        self.env: dict = {}
        self.ids = itertools.count()
        self.lines: list[str] = []
        self.inlining: list[str] = []  # procs being inlined: a recursive `do` is called instead
        self.loops: set[str] = set()  # scope names an inlined `each` binds: read where they are read

    def bind(self, value, prefix: str) -> str:
        name = self.name(prefix)
        self.env[name] = value
        return name

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def source(self, node) -> str:
        """A Python expression for a template's value (inlined when it carries its source)."""
        if isinstance(node, N.Const):
            return self.bind(node.value, "C")
        code = getattr(node, "code", None)
        if code is not None:
            self.env.update(code[1])
            return code[0]
        return f"{self.bind(node, 'F')}(scope)"

    def actions(self, fn, indent: str):
        shape = getattr(fn, "shape", None)
        kind = shape[0] if shape else None
        if kind == "seq":
            for a in shape[1]:
                self.actions(a, indent)
        elif kind == "emit":
            if any(frame is None for _, frame in shape[1]):
                # a template that is not an object: the closure frames it
                self.lines.append(f"{indent}{self.bind(fn, 'A')}(scope, out)")
                return
            for _, frame in shape[1]:
                t = self.name("t")
                self.lines += [f"{indent}{t} = {self.bind(frame, 'W')}(scope, out)",
                               f"{indent}if {t} is not None: out.append({t})"]
        elif kind == "when":
            _, cond, then, other = shape
            t = self.name("c")
            self.lines.append(f"{indent}if {truthy_source(t, self.source(cond))}:")
            self.block(then, indent + "    ")
            if other is not noop:
                self.lines.append(f"{indent}else:")
                self.block(other, indent + "    ")
        elif kind == "switch" and all(isinstance(k, str) for k in shape[2]):
            _, sel, cases, dflt = shape
            k = self.name("k")
            self.lines.append(f"{indent}{k} = {self.source(sel)}")
            word = "if"
            for key, body in cases.items():
                self.lines.append(f"{indent}{word} {k} == {self.bind(key, 'K')}:")
                self.block(body, indent + "    ")
                word = "elif"
            if cases:
                self.lines.append(f"{indent}else:")
                self.block(dflt, indent + "    ")
            else:
                self.actions(dflt, indent)
        elif kind in ("set", "incr", "append"):
            # as the closure does it (compiler.py), without its call and loop
            st = self.name("s")
            self.lines.append(f"{indent}{st} = scope['state']")
            if kind == "append":
                self.lines.append(f"{indent}out.memo = None")
            for k, f in shape[1]:
                key = self.bind(k, "K")
                if kind == "set":
                    self.lines.append(f"{indent}{st}[{key}] = {self.source(f)}")
                elif kind == "incr":
                    self.lines.append(f"{indent}{st}[{key}] = ({st}.get({key}) or 0) + {self.source(f)}")
                else:
                    v, cur = self.name("v"), self.name("a")
                    self.lines += [
                        f"{indent}if ({v} := {self.source(f)}) is not None:",
                        f"{indent}    if type({cur} := {st}.get({key})) is list:",
                        *([f"{indent}        {self.bind(mutated, 'M')}()"] if k in shape[2] else []),
                        f"{indent}        {cur}.append({v})",
                        f"{indent}    else:",
                        f"{indent}        {cur} = {st}.pop({key}, None) or ''",
                        f"{indent}        {cur} += {v}",
                        f"{indent}        {st}[{key}] = {cur}"]
            if kind != "append":
                self.lines.append(f"{indent}out.memo = None")
        elif kind == "each":
            # as do_each does it (compiler.py); the loop name is read from the scope in place
            _, src, name, body = shape
            items, before, item = self.name("i"), self.name("b"), self.name("e")
            key = self.bind(name, "K")
            self.loops.add(name)
            self.lines += [f"{indent}if {items} := {self.source(src)}:",
                           f"{indent}    {before} = scope.get({key}, _MISSING)",
                           f"{indent}    for {item} in {items} if type({items}) is list else ({items},):",
                           f"{indent}        scope[{key}] = {item}",
                           f"{indent}        out.memo = None"]
            self.block(body, indent + "        ")
            self.lines += [f"{indent}    if {before} is _MISSING:",
                           f"{indent}        scope.pop({key}, None)",
                           f"{indent}    else:",
                           f"{indent}        scope[{key}] = {before}"]
            self.env["_MISSING"] = _MISSING
        elif kind == "put":
            # as do_put does it: the key first, then the value, then the map
            _, m, kf, vf, aliased = shape
            k = self.name("k")
            self.lines.append(f"{indent}{k} = {self.source(kf)}")
            if aliased:
                self.lines.append(f"{indent}{self.bind(mutated, 'M')}()")
            self.lines += [f"{indent}scope['state'][{self.bind(m, 'K')}][{k} if type({k}) is str else str({k})] = "
                           f"{self.source(vf)}",
                           f"{indent}out.memo = None"]
        elif kind == "do" and shape[2] not in self.inlining:
            _, procs, name = shape
            self.inlining.append(name)
            self.actions(procs[name], indent)
            self.inlining.pop()
        elif fn is not noop:
            self.lines.append(f"{indent}{self.bind(fn, 'A')}(scope, out)")

    def block(self, fn, indent: str):
        start = len(self.lines)
        self.actions(fn, indent)
        if len(self.lines) == start:
            self.lines.append(f"{indent}pass")


def noop(scope, out):
    """An empty action list (compiler.py uses it for `ignore` branches and empty cases)."""
    return None


def text_handler(fn, part: str = "handler"):
    """`handler(scope, out)` for a TextOut: `fn`'s actions as one generated function, named for
    the spec `part` it runs (e.g. `on.message_start`)."""
    g = _Gen()
    g.block(fn, "    ")
    # state's keys change as the handler runs; every name of the scope stays (each restores its own)
    src = "\n".join(["def handler(scope, out):",
                     *hoist_paths(g.lines, g.env, written=frozenset({"state"}), loops=frozenset(g.loops))])
    with codegen.part(part):
        return codegen.define(src, "handler", g.env, "handler")
