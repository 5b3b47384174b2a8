"""Compiled template nodes: each is a plain function `f(scope) -> value`.

Functions rather than node objects: no attribute lookups per call. Most nodes also carry their
Python source (`.code`, see "nodes as source" below), which parents inline into their own
generated functions, so a template is a few calls, not one per node. Constant subtrees are
folded at compile time (`Const`); outputs that are constants are shared between calls, so
nothing downstream may mutate a spec's output in place."""
from __future__ import annotations

from . import codegen, serialize
from .constant import Const
from .expr import OPAQUE, fresh_name, hoist_paths, item_reads, truthy_source
from .grown import common_start
from .jsontext import dumps  # noqa: F401 - N.dumps, as the rest of the engine calls it
from .program import KEPT_TEXTS, MUTATIONS, SHARED, SHARED_ITEMS, is_kept, keep, release, truthy


def as_fn(node):
    if isinstance(node, Const):
        v = node.value
        return lambda scope: v
    return node


def obj(items, keep_null=frozenset()):
    if all(isinstance(n, Const) for _, n in items):
        return Const({k: n.value for k, n in items if n.value is not None or k in keep_null})
    build = _codegen("obj", items, keep_null)
    build.json = serialize.object_text(items, keep_null)  # the same value, as JSON text
    build.fields = (items, keep_null)
    _display(build, "obj", items, keep_null)
    return build


def arr(nodes):
    if all(isinstance(n, Const) for n in nodes):
        return Const([n.value for n in nodes if n.value is not None])
    build = _codegen("arr", list(enumerate(nodes)), frozenset())
    build.json = serialize.array_text(nodes)
    build.items = tuple(nodes)
    _display(build, "arr", list(enumerate(nodes)), frozenset())
    return build


_MAX_OPTIONAL = 2  # members that may be left out (null): a display per combination of them


def _display(build, kind: str, items, keep_null):
    """Gives an object or array node a source too (`.code`): a dict or list display, one per
    combination of the members that may be null, so a parent inlines it (and a `use` or `each`
    around it can put its bound names in place). Values are read in template order first."""
    g = _Src()
    members, first, optional = [], [], []
    for k, n in items:
        if isinstance(n, Const):
            if n.value is None and k not in keep_null:
                continue
            members.append((k, g.part(n)))
            continue
        t = fresh_name("m")
        first.append(f"({t} := {g.part(n)}) is {t}")
        members.append((k, t))
        if k not in keep_null:
            optional.append(t)
    if len(optional) > _MAX_OPTIONAL:
        return

    def shown(present) -> str:
        kept = [(k, v) for k, v in members if v not in optional or v in present]
        if kind == "arr":
            return "[" + "".join(f"{v}, " for _, v in kept) + "]"
        return "{" + "".join(f"{g.bind(k, 'key')}: {v}, " for k, v in kept) + "}"

    def choose(i: int, present: tuple) -> str:
        if i == len(optional):
            return shown(present)
        t = optional[i]
        return f"({choose(i + 1, present + (t,))} if {t} is not None else {choose(i + 1, present)})"
    src = choose(0, ())
    if first:
        src = f"({' and '.join(first)} and {src})"
    code = g.make(src, None)
    if code is not None:
        build.code = code.code


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
    lines = lines[:1] + hoist_paths(lines[1:], env)
    try:
        return codegen.define("\n".join(lines), f"template {kind}", env, "build")
    except (SyntaxError, RecursionError, MemoryError):
        if not any(getattr(n, "code", None) is not None for _, n in items):
            raise
        # inlined sources the parser refuses together: every member called instead
        return _codegen(kind, [(k, n if isinstance(n, Const) else _called(n)) for k, n in items], keep_null)


def _called(node):
    return lambda scope: node(scope)


# ---------------------------------------------------------------- nodes as source
#
# when/switch/lookup/coalesce/use/each/concat/merge/pipe nodes carry their source too (`.code`,
# as expressions do): a parent template inlines it into its own generated function, so a
# `when` over a `lookup` over paths is one Python expression, not three closure calls. A part
# with no source of its own (an object or array template) is called from that source; such a
# source is marked OPAQUE, since what the call reads is not in it. A source too long or too
# deeply nested to compile keeps the closure.

_MAX_SOURCE = 6000
_MAX_DEPTH = 80  # brackets; CPython's parser stops at 200


def _fits(src: str) -> bool:
    if len(src) > _MAX_SOURCE:
        return False
    depth = top = 0
    for ch in src:  # generated source holds no string literals (constants are bound names)
        if ch in "([{":
            depth += 1
            top = max(top, depth)
        elif ch in ")]}":
            depth -= 1
    return top <= _MAX_DEPTH


class _Src:
    """The names a generated source refers to."""

    def __init__(self):
        self.names: dict = {}

    def bind(self, value, prefix: str) -> str:
        k = fresh_name(prefix)
        self.names[k] = value
        return k

    def part(self, node) -> str:
        """Source of a node's value: its own source, a constant, or a call."""
        if node is None:
            return "None"
        if isinstance(node, Const):
            v = node.value
            return repr(v) if v is None or type(v) is bool else self.bind(v, "c")
        code = getattr(node, "code", None)
        if code is not None:
            self.names.update(code[1])
            return code[0]
        self.names[OPAQUE] = True
        return f"{self.bind(node, 'n')}(scope)"

    def make(self, src: str, closure):
        """A function evaluating src that carries it as `.code`; the closure if it cannot."""
        if not _fits(src):
            return closure
        try:
            compile(f"lambda scope: {src}", "<string>", "eval")  # refused now, not on first call
        except (SyntaxError, RecursionError, MemoryError):
            return closure
        # the names are the lambda's globals too, not a copy: one dict per node
        names = self.names
        fn = codegen.lazy(lambda: codegen.scope_lambda(src, names), names, "<lambda>", "<string>")
        fn.code = (src, self.names)
        return fn


class ItemMemo:
    """What an `each` made of each shared item (program.SHARED_ITEMS: a client's tools, sent
    again with every request of a session), kept for the next request. The compiler enables it
    (`roots`) only for a body that reads nothing but its item and names whose values it is keyed
    on (the model's profile, the config: the same objects request after request) and calls no
    volatile function; the key is those values, an item is known by identity, and a change of
    MUTATIONS retires everything. Items that are not shared are mapped as usual. Over a kept
    list itself (a client's tools, or what a filter kept of them: program.filtered), the list
    made of it is kept too: the same list object is the answer until the key or MUTATIONS
    changes (nothing changes a spec's output in place)."""
    __slots__ = ("roots", "members", "cache", "lists", "last")
    # items kept per `each`: every tool of the tools texts the members memo keeps, at 128 tools
    # each (the most OpenAI's APIs take). When it is full, what was made of items no longer
    # shared goes; if that is under an eighth of it, the memo starts over (a scan per insert would
    # cost more than the misses of clients in turn beyond what is kept). The same for lists, with
    # room for as many again as the members memo keeps: full, it takes in one text for one it
    # lets go (server/admission.py), and each such turn must not start the lists over.
    # Before that, what was made of items no longer shared goes whenever the memo holds more
    # than twice as many values as there are shared items, and SLACK more: what it keeps of a
    # conversation the history memo let go (100s of KB each) goes soon after it.
    LIMIT = KEPT_TEXTS * 128
    LISTS = 2 * KEPT_TEXTS
    SLACK = 1024
    RUN = 8  # items from which a list is compared whole with the last one (a conversation)

    @classmethod
    def fit(cls, texts: int, conversations: int) -> None:
        """Room for what the members memo's `texts` tools texts and the history memo's
        `conversations` hold (128 tools a text, 256 items a conversation): less, and the memo
        would start over on every request that brings it a kept item."""
        cls.LIMIT = 128 * max(texts, 2 * conversations, 1)
        cls.LISTS = 2 * max(texts, 1)

    def __init__(self):
        self.roots: tuple | None = None
        self.members: tuple = ()  # of `vars`, keyed on too
        self.cache: dict = {}
        self.lists: dict = {}
        # the last list of RUN items or more: (its items, MUTATIONS, key, what was made, its
        # length after each item); the next one that begins with those items (a conversation a
        # turn later) takes what was made of them as it is: one comparison of the lists in C,
        # not a lookup per item
        self.last: tuple | None = None

    def map(self, items, fn, scope, flat: bool, indexed: bool = False) -> list:
        """_mapped / _mapped_flat (the _index ones when `indexed`: `fn(item, i)`), each shared
        item's value from the memo where it is there. With an index, an item's value is kept
        for its place too: a conversation's earlier turns keep theirs as it grows."""
        key = tuple([scope.get(r) for r in self.roots])
        if self.members:
            v = scope.get("vars")
            key += tuple([v.get(m) for m in self.members]) if type(v) is dict else (None,) * len(self.members)
        gen = MUTATIONS[0]
        whole = is_kept(items)
        if whole:
            hit = self.lists.get(id(items))
            if hit is not None and hit[0] is items and hit[1] == gen and hit[2] == key:
                return hit[3]
        seq = _as_items(items)
        out, cuts, start = [], [], 0
        last = self.last
        if last is not None and len(seq) >= self.RUN and seq[0] is last[0][0] and last[1] == gen and last[2] == key:
            start = common_start(last[0], seq)
            if start:
                out, cuts = last[3][:last[4][start - 1]], last[4][:start]
        cache, k, at = self.cache, key, start - 1
        for item in seq[start:] if start else seq:
            at += 1
            if indexed:
                k = key + (at,)
            s = SHARED_ITEMS.get(id(item))
            if s is None or s[0] is not item or s[1] != gen:
                v = fn(item, at) if indexed else fn(item)
            else:
                hit = cache.get(id(item))
                if hit is not None and hit[0] is item and hit[1] == gen and hit[2] == k:
                    v = hit[3]
                else:
                    v = fn(item, at) if indexed else fn(item)
                    if hit is not None:
                        _released(hit[3])
                    if len(cache) >= self.LIMIT:
                        if self._prune()[0] < max(1, self.LIMIT // 8):
                            self.clear()
                    elif len(cache) > 2 * len(SHARED_ITEMS) + self.SLACK:
                        self._prune()
                    cache[id(item)] = (item, gen, k, v)
                    _kept(v)
            if type(v) is list and flat:
                out.extend(v)
            elif v is not None:
                out.append(v)
            cuts.append(len(out))
        if len(seq) >= self.RUN:
            self.last = (list(seq), gen, key, out, cuts)
        if whole:
            old = self.lists.pop(id(items), None)
            if old is not None:
                release(old[3])
            if len(self.lists) >= self.LISTS and self._prune()[1] < max(1, self.LISTS // 8):
                self.clear()
            self.lists[id(items)] = (items, gen, key, out)
            keep(out)
        return out

    def _prune(self) -> tuple[int, int]:
        """Lets go of what was made of items and lists no longer shared (their tools text left
        the members memo) or kept before the last MUTATIONS: (items, lists) let go."""
        gen = MUTATIONS[0]
        dead = [k for k, (item, g, _, _) in self.cache.items()
                if g != gen or (s := SHARED_ITEMS.get(k)) is None or s[0] is not item or s[1] != gen]
        for k in dead:
            _released(self.cache.pop(k)[3])
        gone = [k for k, (items, g, _, _) in self.lists.items() if g != gen or not is_kept(items)]
        for k in gone:
            release(self.lists.pop(k)[3])
        return len(dead), len(gone)

    def clear(self):
        for hit in self.cache.values():
            _released(hit[3])
        self.cache.clear()
        for hit in self.lists.values():
            release(hit[3])
        self.lists.clear()
        self.last = None


def _objects(v) -> tuple | list:
    """The objects a kept value puts in its `each`'s list: itself, or those of a flattened list."""
    if type(v) is dict:
        return (v,)
    if type(v) is list:
        return [x for x in v if type(x) is dict]
    return ()


def _kept(v):
    """A kept value's objects are written from their kept JSON text (program.keep)."""
    for x in _objects(v):
        keep(x)


def _released(v):
    for x in _objects(v):
        release(x)


def _memo_mapped(items, fn, scope, memo: ItemMemo, flat: bool) -> list:
    if memo.roots is None or not _shared_list(items):
        return _mapped_flat(items, fn) if flat else _mapped(items, fn)
    return memo.map(items, fn, scope, flat)


def _memo_mapped_index(items, fn, scope, memo: ItemMemo, flat: bool) -> list:
    if memo.roots is None or not _shared_list(items):
        return _mapped_flat_index(items, fn) if flat else _mapped_index(items, fn)
    return memo.map(items, fn, scope, flat, True)


def _shared_list(items) -> bool:
    """A list whose first item is shared (a client's tools, or what a filter kept of them, or a
    kept conversation's items): one lookup, so other lists are mapped at the usual cost."""
    if type(items) is not list or not items:
        return False
    s = SHARED_ITEMS.get(id(items[0]))
    return s is not None and s[0] is items[0]


def each(source, name, body, flatten=False, index=None, memo: ItemMemo | None = None):
    src = as_fn(source)
    f = as_fn(body)

    def items_of(items, scope):
        if items is None:
            return None
        if memo is not None and memo.roots is not None and _shared_list(items):
            inner = dict(scope)

            def one(item, *at):
                inner[name] = item
                if at:
                    inner[index] = at[0]
                return f(inner)
            return memo.map(items, one, scope, flatten, bool(index))
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

    def run(scope):
        return items_of(src(scope), scope)
    g = _Src()
    code = getattr(body, "code", None)
    names = (name,) if index is None else (name, index)
    if code is not None and OPAQUE not in code[1] and all(n.isidentifier() and n.isascii() for n in names):
        # the map's source as a lambda of the item (and index): its temporaries stay its own
        # locals (in a comprehension they would be cells of the enclosing function)
        item, pos, given = fresh_name("i"), fresh_name("i"), fresh_name("g")
        g.names.update(code[1])
        mapped = code[0].replace(f"scope.get(_kr_{name})", item)
        params = item
        if index is not None:
            mapped = mapped.replace(f"scope.get(_kr_{index})", pos)
            params = f"{item}, {pos}"
        mapped = item_reads(mapped, name, item, g.names)
        if memo is not None:
            walk = _memo_mapped if index is None else _memo_mapped_index
            return g.make(f"(None if ({given} := {g.part(source)}) is None else "
                          f"{g.bind(walk, 'e')}({given}, lambda {params}: {mapped}, scope, "
                          f"{g.bind(memo, 'y')}, {flatten!r}))", run)
        walk = _mapped_flat if flatten else _mapped
        if index is not None:
            walk = _mapped_flat_index if flatten else _mapped_index
        return g.make(f"(None if ({given} := {g.part(source)}) is None else "
                      f"{g.bind(walk, 'e')}({given}, lambda {params}: {mapped}))", run)
    g.names[OPAQUE] = True  # the map reads the item's scope
    return g.make(f"{g.bind(items_of, 'e')}({g.part(source)}, scope)", run)


def _as_items(items) -> list:
    """What `each` walks: a list as it is, an object's entries as {key, value}, anything else alone."""
    if type(items) is list:
        return items
    if type(items) is dict:
        return [{"key": k, "value": v} for k, v in items.items()]
    return [items]


def _mapped(items, fn) -> list:
    out = []
    for item in _as_items(items):
        v = fn(item)
        if v is not None:
            out.append(v)
    return out


def _mapped_flat(items, fn) -> list:
    out = []
    for item in _as_items(items):
        v = fn(item)
        if type(v) is list:
            out.extend(v)
        elif v is not None:
            out.append(v)
    return out


def _mapped_index(items, fn) -> list:
    return [v for v in (fn(item, i) for i, item in enumerate(_as_items(items))) if v is not None]


def _mapped_flat_index(items, fn) -> list:
    out = []
    for i, item in enumerate(_as_items(items)):
        v = fn(item, i)
        if type(v) is list:
            out.extend(v)
        elif v is not None:
            out.append(v)
    return out


def _switch_source(g: _Src, sel: str, cases: dict, default) -> str:
    k = fresh_name("k")
    if len(cases) > 8 or not all(type(c) in (str, int, float, bool) for c in cases):
        # a table of functions: one lookup instead of a chain of comparisons; what they read is
        # not in this source
        g.names[OPAQUE] = True
        table = g.bind({c: as_fn(v) for c, v in cases.items()}, "s")
        dflt = g.bind(as_fn(default) if default is not None else (lambda scope: None), "s")
        return (f"({table}.get({k}, {dflt}) if type({k} := {sel}) is not list and type({k}) is not dict "
                f"else {dflt})(scope)")
    out = f"({k} := {sel}) is {k} and ("  # binds the selector once, then the chain
    chain = []
    for c, node in cases.items():
        lit = repr(c) if type(c) in (bool, int) or c is None else g.bind(c, "c")
        chain.append(f"{g.part(node)} if {k} == {lit} else ")
    return f"({out}{''.join(chain)}{g.part(default)}))"


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
    g = _Src()
    return g.make(_switch_source(g, g.part(on), cases, default), run)


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
    g = _Src()
    k, r, t, miss = fresh_name("k"), fresh_name("r"), g.bind(table, "l"), g.bind(_MISSING, "m")
    return g.make(f"({r} if type({k} := {g.part(on)}) is not list and type({k}) is not dict and "
                  f"({r} := {t}.get({k}, {miss})) is not {miss} else {g.part(default)})", run)


_MISSING = object()


def coalesce(nodes):
    fns = tuple(as_fn(n) for n in nodes)

    def run(scope):
        for f in fns:
            v = f(scope)
            if v is not None:
                return v
        return None
    if not nodes:
        return run
    g = _Src()
    chain = []
    for n in nodes[:-1]:
        t = fresh_name("v")
        chain.append(f"{t} if ({t} := {g.part(n)}) is not None else ")
    return g.make(f"({''.join(chain)}{g.part(nodes[-1])})", run)


def when(cond, value, otherwise=None):
    c = as_fn(cond)
    v = as_fn(value)
    o = as_fn(otherwise) if otherwise is not None else None

    def run(scope):
        if truthy(c(scope)):
            return v(scope)
        return o(scope) if o is not None else None
    g = _Src()
    test = f"({g.part(cond)})" if getattr(cond, "boolish", False) else truthy_source(fresh_name("wt"), g.part(cond))
    return g.make(f"({g.part(value)} if {test} else {g.part(otherwise)})", run)


def _concat(parts):
    # the parts of most concats are all there: `None in` is a scan in C, a comprehension a call
    kept = [v for v in parts if v is not None] if None in parts else parts
    for p in kept:  # a loop, not all(genexpr): this runs for every concat of every request
        if type(p) is not str:
            if len(kept) == 1 and type(p) is list and p and id(p) in SHARED and is_kept(p):
                return p  # a kept list alone (a filter's list of a client's tools): itself, still kept
            out = []  # flatten(kept), in place
            for e in kept:
                if type(e) is list:
                    out += e
                else:
                    out.append(e)
            return out or None
    return "".join(kept) if kept else None


def concat(nodes):
    fns = tuple(as_fn(n) for n in nodes)

    def run(scope):
        return _concat([f(scope) for f in fns])
    g = _Src()
    if len(nodes) < 2:
        return g.make(f"{g.bind(_concat, 'h')}(({''.join(g.part(n) + ', ' for n in nodes)}))", run)
    # lists only (most concats: blocks, turns, tools): joined in place; anything else, or a part
    # left out, through _concat. `&`, not `and`: every part is evaluated, in order, either way
    parts = [fresh_name("p") for _ in nodes]
    lists = " & ".join(f"(type({p} := {g.part(n)}) is list)" for p, n in zip(parts, nodes))
    return g.make(f"(({' + '.join(parts)}) or None if {lists} else "
                  f"{g.bind(_concat, 'h')}(({''.join(p + ', ' for p in parts)})))", run)


def _merge(parts):
    out = {}
    for v in parts:
        if type(v) is dict:
            out.update(v)
    return out or None


def merge(nodes):
    fns = tuple(as_fn(n) for n in nodes)

    def run(scope):
        return _merge([f(scope) for f in fns])
    g = _Src()
    return g.make(f"{g.bind(_merge, 'h')}(({''.join(g.part(n) + ', ' for n in nodes)}))", run)


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
    g = _Src()
    target = defs.get(name)
    if not bindings and getattr(target, "code", None) is not None:
        src = g.part(target)  # a block compiled before this node, with nothing bound: its source
    elif bindings and _substitutable(getattr(target, "code", None), bindings):
        # the block's source with each bound name read from a local, set first: no scope copy
        src, names = target.code
        g.names.update(names)
        first = []
        for k, v in bindings:
            local = fresh_name("b")
            first.append(f"({local} := {g.part(v)}) is {local}")
            src = src.replace(f"scope.get(_kr_{k})", local)
        src = f"({' and '.join(first)} and {src})"
    else:
        g.names[OPAQUE] = True
        arg = "scope"
        if bindings:
            arg = "{**scope, " + ", ".join(f"{g.bind(k, 'b')}: {g.part(v)}" for k, v in bindings) + "}"
        src = f"{g.bind(defs, 'd')}[{g.bind(name, 'u')}]({arg})"
    fn = g.make(src, run)

    def text(scope):
        target = defs[name]
        inner = scope if inner_scope is None else inner_scope(scope)
        write = getattr(target, "json", None)
        if write is not None:
            return write(inner)
        v = target(inner)
        return None if v is None else serialize.enc(v)
    fn.json = text
    fn.target = (defs, name, inner_scope)
    fn.bindings = tuple(bindings)
    return fn


def _substitutable(code, bindings) -> bool:
    """True when a block's source reads each bound name only as `scope.get(_kr_NAME)` (expr.py
    spells every read of an identifier-like name on the scope so), and calls nothing that would
    read the scope itself."""
    if code is None or OPAQUE in code[1]:
        return False
    return all(type(k) is str and k.isidentifier() and k.isascii() for k, _ in bindings)


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
    g = _Src()
    g.names[OPAQUE] = True  # a transform may raise or read anything it is given
    kwargs = "".join(f", **{{{g.bind(k, 'a')}: {g.part(v)}}}" for k, v in args)
    return g.make(f"{g.bind(transform, 'p')}({g.part(source)}{kwargs})", run)
