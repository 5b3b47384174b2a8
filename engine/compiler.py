"""Spec -> compiled program. Collects every error before failing.

The compiler assumes the structure was checked by the meta-schema (engine.metaschema); what it
adds is what a schema cannot see: JMESPath syntax, helper declarations, `use` targets."""
from __future__ import annotations

import contextlib
import re
import jmespath.functions
from jmespath.parser import Parser

from . import codegen, stream_codegen
from .stream_codegen import noop as _noop
from . import nodes as N
from . import schemas, serialize
from .spec_errors import SpecError, spec_path
from .program import END, CompiledSpec, Raw, TextOut, json_copy, mutated
from .expr import (ExprError, absent_falsy, bare_keyword, compile_expr, fresh_name, hoist_paths, is_builtin,
                   negates_before_path, truthy_source)
from .functions import CUSTOM_FUNCTIONS, TRANSFORMS, VOLATILE
from .names import ITEM, members_read, near_typo, nearest, paths, roots, token_offset
from .shapes import check_path
from .scope import USAGE_NAMES, names_for, schemas_for

TEMPLATE_KEYS = {
    "const": set(), "each": {"as", "map", "flatten", "index"}, "switch": {"cases", "default"},
    "lookup": {"table", "default"}, "coalesce": set(), "when": {"value", "else"},
    "concat": set(), "merge": set(), "use": {"with"}, "pipe": {"input", "args"},
    "fields": {"keep_null"},
}
# Keys that only mean something under their keyword: an object holding one without that keyword
# is a misspelled or forgotten keyword, not a literal (a literal object with such a key is written
# {fields: {...}}). `index`, `input` and `args` are left out: they are common fields of the wire
# shapes the templates build.
KEYWORD_PARAMS = {"cases": ("switch",), "table": ("lookup",), "value": ("when",), "else": ("when",),
                  "default": ("switch", "lookup"), "map": ("each",), "as": ("each",), "flatten": ("each",),
                  "with": ("use",), "keep_null": ("fields",), "then": ("when",)}
REQUIRED_PARAMS = {"switch": ("cases",), "lookup": ("table",)}


_MISSING = object()
ACTION_KEYS = {"set", "put", "incr", "append", "emit", "when", "switch", "end", "do", "each"}
ACTION_PARAMS = {"when": {"then", "else"}, "switch": {"cases", "default"}, "each": {"as", "then"}}


_PARSER = Parser()
_PLAIN_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Ctx:
    def __init__(self, source, errors: list):
        self.source = source
        self.errors = errors
        self.helpers: set = set()
        self.defs: dict = {}
        self.def_names: set = set()
        self.procs: dict = {}
        self.proc_names: set = set()
        self.framing: dict = {}
        self.finalizers: list = []
        self.names: frozenset = frozenset()  # what the spec kind and its sections put in scope
        self.local: frozenset = frozenset()  # each/as and index names bound around this point
        self.in_def: str | None = None       # the block of defs being compiled
        self.use_sites: dict = {}            # block name -> [(with names, local names, in_def)]
        self.def_reads: list = []            # (block, name, path, col offset) left to the use sites
        self.shaped: dict = {}               # scope name -> schema id of its value (engine/shapes.py)
        self.known: dict = {}                # path tuple -> the value a switch or `on:` fixed there
        self.rebound: frozenset = frozenset()  # names some `use ... with` binds: unshaped in defs
        self.loop_shapes: dict = {}          # loop name -> (schema id, path of its items)
        self.set_keys: frozenset = frozenset()  # state keys some `set`/`incr` writes (_set_keys)
        self.binders: list = []              # each/as and index names, innermost last
        self.reading: list = []              # _Reads of the regions being compiled (item memos)
        self.def_reading: dict = {}          # block of defs -> _Reads of its body
        self.memos: list = []                # (nodes.ItemMemo, _Reads of the `each` body, its path)
        self.req_members: frozenset | None = frozenset()  # of `req` read: names.members_read

    def error(self, path, message, col_offset=0, key=False):
        """`key`: point at the last key of `path` rather than at its value."""
        path = tuple(path)
        file, line, col, text = self.source.locate(path, key=key)
        self.errors.append(SpecError(file, line, col + col_offset, spec_path(path), message, text, keypath=path))

    def expr_col(self, path, offset):
        """Column offset of character `offset` of the expression at `path` (quoted scalars start
        one column after their quote)."""
        _file, _line, col, text = self.source.locate(tuple(path))
        quoted = text[col - 1:col] in ("'", '"')
        return offset + (1 if quoted else 0)
    def shape_of(self, steps):
        """(schema id, path from its scope name) of a plain path `steps` ('m', 'content'), when
        its first name is a scope name with a schema or a loop name over one; else None."""
        if not steps:
            return None
        root = steps[0]
        if root in self.loop_shapes:
            sid, prefix = self.loop_shapes[root]
            return sid, list(prefix) + list(steps[1:])
        if root in self.shaped and root not in self.local and not (self.in_def is not None and root in self.rebound):
            return self.shaped[root], list(steps)
        return None

    # generator context managers, not a class per call: a class is a reference cycle, and one
    # holding the context would keep the spec's source alive until the next full collection
    @contextlib.contextmanager
    def knowing(self, selector, value):
        """A context in which the plain path `selector` is known to hold `value` (a switch case)."""
        outer = self.known
        steps = selector.split(".") if isinstance(selector, str) and _PLAIN_PATH.match(selector) else None
        shape = self.shape_of(steps)
        if shape is not None:
            self.known = {**outer, tuple(shape[1]): value}
        try:
            yield
        finally:
            self.known = outer

    @contextlib.contextmanager
    def bound(self, *names, over=None):
        """A context binding loop names: `with ctx.bound('x', over=source): ...`; the first name
        takes the shape of the items of `over` when that is a plain path with a known schema."""
        outer, outer_shapes = self.local, self.loop_shapes
        shapes = {k: v for k, v in outer_shapes.items() if k not in names}
        steps = over.split(".") if isinstance(over, str) and _PLAIN_PATH.match(over) else None
        shape = self.shape_of(steps)
        if shape is not None and names and names[0]:
            shapes[names[0]] = (shape[0], tuple(shape[1]) + (ITEM,))
        self.local = outer | {n for n in names if n}
        self.loop_shapes = shapes
        depth = len(self.binders)
        self.binders.extend(n for n in names if n)
        try:
            yield
        finally:
            self.local, self.loop_shapes = outer, outer_shapes
            del self.binders[depth:]

    @contextlib.contextmanager
    def reading_into(self, reads: "_Reads"):
        """A region whose free reads `reads` collects, besides the regions around it."""
        reads.depth = len(self.binders)
        self.reading.append(reads)
        try:
            yield
        finally:
            self.reading.pop()


class _Reads:
    """What a region of a template (an `each` body, a block of defs) reads from outside itself:
    its free root names, the members of `vars` among them (None when it reads `vars` whole), the
    blocks it uses (name, names its `with` binds, names bound inside the region around the use)
    and whether it calls a volatile function. An `each` whose body, blocks included, reads only
    its item, STABLE_ROOTS, members of `vars` and names nothing binds around it keeps what it
    made of shared items (nodes.ItemMemo, keyed on the values of the names and members)."""
    __slots__ = ("roots", "vars", "src", "uses", "volatile", "depth")

    def __init__(self):
        self.roots: set = set()
        self.vars: set | None = set()
        self.src: set | None = set()  # the members of `src` read (None: `src` whole)
        self.uses: list = []
        self.volatile = False
        self.depth = 0

    def read(self, ctx: Ctx, names, text: str) -> None:
        inner = ctx.binders[self.depth:]
        self.roots.update(n for n in names if n not in inner)
        if "vars" in names and "vars" not in inner and self.vars is not None:
            members = members_read(text, "vars")
            self.vars = None if members is None else self.vars | members
        if "src" in names and "src" not in inner and self.src is not None:
            members = members_read(text, "src")
            self.src = None if members is None else self.src | members


# what an ItemMemo is keyed on: the same objects for every request to one model under one config
STABLE_ROOTS = frozenset({"profile", "cfg", "model"})


# ---------------------------------------------------------------- templates

def compile_expression(ctx: Ctx, text: str, path):
    try:
        fn, used = compile_expr(text)
    except ExprError as e:
        # a quoted scalar starts one column later than its text
        _file, _line, col, text = ctx.source.locate(tuple(path))
        quoted = text[col - 1:col] in ("'", '"')
        ctx.error(path, str(e), col_offset=e.offset + (1 if quoted else 0))
        return N.Const(None)
    check_names(ctx, text, path)
    if used & VOLATILE:
        for r in ctx.reading:
            r.volatile = True
    if negates_before_path(text):
        ctx.error(path, "`!a.b` reads as `(!a).b` in JMESPath, which is always null; write `!(a.b)`")
    word = bare_keyword(text)
    if word:
        ctx.error(path, f"`{word}` here is a field named {word} in JMESPath, not the literal; write `` `{word}` ``")
    for name in sorted(used):
        call = re.search(r"(?<![\w.])" + re.escape(name) + r"\s*\(", text)
        at = ctx.expr_col(path, call.start() if call else 0)
        if name in CUSTOM_FUNCTIONS:
            if name not in ctx.helpers:
                ctx.error(path, f"function {name}() is not declared under helpers:", col_offset=at)
        elif not is_builtin(name):
            near = nearest(name, CUSTOM_FUNCTIONS | {f for f in jmespath.functions.Functions.FUNCTION_TABLE if is_builtin(f)})
            ctx.error(path, f"unknown function {name}()" + (f": did you mean `{near}`?" if near else "")
                      + "; custom functions are: " + ", ".join(sorted(CUSTOM_FUNCTIONS)), col_offset=at)
    if not used and text in ("null",):
        return N.Const(None)
    # no function call: nothing volatile, nothing that raises; it may be evaluated where it is used
    fn.pure = not used
    return fn


def _not_in_scope(ctx: Ctx, name: str, text: str, path, in_scope) -> str:
    msg = f"`{name}` is not a name in scope (names here: {', '.join(sorted(in_scope))})"
    near = nearest(name, in_scope, 0.75)
    if near:
        msg += f"; did you mean `{near}`?"
    if text.strip() == name:
        msg += f"; a string is written '{name}' or {{const: {name}}}"
    return msg


def check_names(ctx: Ctx, text: str, path):
    """Every root name of the expression is one the spec kind provides or the spec binds; names a
    block of defs reads are checked against what its `use` sites bind (compile_spec)."""
    in_scope = ctx.names | ctx.local
    names = roots(text)
    for r in ctx.reading:
        r.read(ctx, names, text)
    if "req" in names and "req" not in ctx.local and ctx.req_members is not None:
        read = members_read(text, "req")
        ctx.req_members = None if read is None else ctx.req_members | read
    for name in names:
        if name in in_scope:
            continue
        if name in ("null", "true", "false") and (text.strip() == "null" or bare_keyword(text)):
            continue  # the literal `null`, or reported above as a keyword read as a field
        offset = ctx.expr_col(path, token_offset(text, [name]))
        if ctx.in_def is not None:
            ctx.def_reads.append((ctx.in_def, name, text, list(path), offset, in_scope))
        else:
            ctx.error(path, _not_in_scope(ctx, name, text, path, in_scope), col_offset=offset)
    check_paths(ctx, text, path)


def check_paths(ctx: Ctx, text: str, path):
    """Each static path read from a name with a known schema can exist there (engine/shapes.py)."""
    if not ctx.shaped:
        return
    reported = set()
    for p in paths(text):
        shape = ctx.shape_of(p) if len(p) > 1 else None
        if shape is None:
            continue
        sid, full = shape
        lead = len(full) - len(p)  # a loop name stands for this many steps of `full`
        bad = check_path(sid, full, ctx.known, alias=(lead + 1, p[0]) if lead else None)
        if bad is None:
            continue
        i, message = bad
        i -= lead
        if tuple(p[:i + 1]) in reported:
            continue
        reported.add(tuple(p[:i + 1]))
        ctx.error(path, message, col_offset=ctx.expr_col(path, token_offset(text, p[:i + 1])))


def _an(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _literal_keys(ctx: Ctx, t: dict, path) -> bool:
    """A literal object must not hold a keyword's parameters nor a near-spelling of a keyword:
    both are a keyword written wrong. True when an error was reported."""
    bad = False
    for k in t:
        kw = near_typo(k, TEMPLATE_KEYS) if isinstance(k, str) else None
        if kw:
            ctx.error(path + [k], f"unknown key `{k}`: did you mean `{kw}`? (a literal object with this key "
                                  "is written {fields: {...}})", key=True)
            bad = True
    if bad:
        return True
    for k in t:
        owners = KEYWORD_PARAMS.get(k)
        if not owners:
            continue
        # the sibling key that misspells the keyword, when there is one
        cands = [o for o in owners if all(p in TEMPLATE_KEYS[o] or p == o for p in t if p in KEYWORD_PARAMS)] \
            or list(owners)
        typo = next(((o, x) for o in cands for x in t if isinstance(x, str) and x not in KEYWORD_PARAMS
                     and nearest(x, [o], 0.6)), None)
        if typo:
            ctx.error(path + [typo[1]], f"unknown key `{typo[1]}` next to `{k}`: did you mean `{typo[0]}`?", key=True)
        else:
            ctx.error(path + [k], f"`{k}` belongs to {_an(cands[0])} `{'`/`'.join(cands)}` node and this object has no "
                                  f"`{cands[0]}`: did you mean `{cands[0]}`? (a literal object with a key `{k}` "
                                  "is written {fields: {...}})", key=True)
        return True
    return False


def compile_template(ctx: Ctx, t, path):
    if isinstance(t, str):
        return compile_expression(ctx, t, path)
    if t is None or isinstance(t, (bool, int, float)):
        return N.Const(t)
    if isinstance(t, list):
        return N.arr([compile_template(ctx, v, path + [i]) for i, v in enumerate(t)])
    if not isinstance(t, dict):
        ctx.error(path, f"unsupported template value {t!r}")
        return N.Const(None)
    heads = [k for k in t if k in TEMPLATE_KEYS]
    if not heads:
        if _literal_keys(ctx, t, path):
            return N.Const(None)  # a keyword written wrong: what is under it would only add noise
        return N.obj([(k, compile_template(ctx, v, path + [k])) for k, v in t.items()])
    if len(heads) > 1:
        ctx.error(path, f"a template node has one of {sorted(TEMPLATE_KEYS)}; found {heads}"
                        " (wrap a literal object in {fields: ...})")
        return N.Const(None)
    head = heads[0]
    unknown = False
    for k in t:
        if k != head and k not in TEMPLATE_KEYS[head]:
            unknown = True
            near = nearest(k, TEMPLATE_KEYS[head])
            ctx.error(path + [k], f"unknown key `{k}` in {_an(head)} `{head}` node"
                      + (f": did you mean `{near}`?" if near else "")
                      + (f" (`{head}` takes {', '.join(sorted(TEMPLATE_KEYS[head]))})" if TEMPLATE_KEYS[head]
                         else f" (`{head}` takes nothing else)"), key=True)
    for k in REQUIRED_PARAMS.get(head, ()):
        if k not in t and not unknown:
            ctx.error(path + [head], f"a `{head}` node needs `{k}`", key=True)
    sub = lambda key: compile_template(ctx, t[key], path + [key])  # noqa: E731
    if head == "const":
        return N.Const(t["const"])
    if head == "fields":
        keep = t.get("keep_null", False)
        inner = t["fields"] or {}
        keep_set = frozenset(inner) if keep is True else frozenset(keep or ())
        return N.obj([(k, compile_template(ctx, v, path + ["fields", k])) for k, v in inner.items()], keep_set)
    if head == "each":
        source = sub("each")
        item, index = t.get("as", "item"), t.get("index")
        memo, reads = N.ItemMemo(), _Reads()
        ctx.memos.append((memo, reads, spec_path(path), ctx.local, ctx.in_def))
        with ctx.reading_into(reads), ctx.bound(item, index, over=t["each"]):
            body = sub("map") if "map" in t else N.Const(None)
        return N.each(source, item, body, bool(t.get("flatten")), index, memo)
    if head == "switch":
        cases = {}
        for k, v in (t.get("cases") or {}).items():
            with ctx.knowing(t["switch"], k):
                cases[k] = compile_template(ctx, v, path + ["cases", k])
        return N.switch(sub("switch"), cases, sub("default") if "default" in t else None)
    if head == "lookup":
        return N.lookup(sub("lookup"), dict(t.get("table") or {}), sub("default") if "default" in t else None)
    if head == "coalesce":
        return N.coalesce([compile_template(ctx, v, path + ["coalesce", i]) for i, v in enumerate(t["coalesce"])])
    if head == "when":
        return N.when(sub("when"), sub("value") if "value" in t else N.Const(None),
                      sub("else") if "else" in t else None)
    if head == "concat":
        return N.concat([compile_template(ctx, v, path + ["concat", i]) for i, v in enumerate(t["concat"])])
    if head == "merge":
        return N.merge([compile_template(ctx, v, path + ["merge", i]) for i, v in enumerate(t["merge"])])
    if head == "use":
        name = t["use"]
        if name not in ctx.def_names:
            ctx.error(path + ["use"], f"no block named {name!r} under defs:")
            return N.Const(None)
        binds = [(k, compile_template(ctx, v, path + ["with", k])) for k, v in (t.get("with") or {}).items()]
        bound = frozenset(k for k, _ in binds)
        ctx.use_sites.setdefault(name, []).append((bound, ctx.local, ctx.in_def))
        for r in ctx.reading:
            r.uses.append((name, bound, frozenset(ctx.binders[r.depth:])))
        return N.use(ctx.defs, name, binds)
    if head == "pipe":
        name = t["pipe"]
        fn = TRANSFORMS.get(name)
        if fn is None:
            ctx.error(path + ["pipe"], f"unknown transform {name!r}; transforms are: {', '.join(sorted(TRANSFORMS))}")
            return N.Const(None)
        if name not in ctx.helpers:
            ctx.error(path + ["pipe"], f"transform {name} is not declared under helpers:")
        args = [(k, compile_template(ctx, v, path + ["args", k])) for k, v in (t.get("args") or {}).items()]
        return N.pipe(fn, sub("input") if "input" in t else N.Const(None), args)
    raise AssertionError(head)


# ---------------------------------------------------------------- stream actions

def _changed(out):
    """State or scope changed: a JSON text remembered for an object may be stale."""
    if type(out) is TextOut:
        out.memo = None


def _frame_writer(node, framing: dict):
    """`frame(scope, out) -> str` writing an emitted template straight to its SSE frame
    (engine/serialize.py), or None when the template is not an object (the dict path runs)."""
    return serialize.frame_text(node, framing.get("event_field"), framing.get("sequence_field"))


def _seq(acts):
    acts = tuple(acts)
    if len(acts) == 1:
        return acts[0]

    def run(scope, out):
        for a in acts:
            a(scope, out)
    run.shape = ("seq", acts)
    return run


def compile_actions(ctx: Ctx, actions, path):
    if actions in (None, "ignore"):
        return None
    if isinstance(actions, dict):
        acts = [compile_action(ctx, actions, path)]
    elif isinstance(actions, list):
        acts = [compile_action(ctx, a, path + [i]) for i, a in enumerate(actions)]
    else:
        word = str(actions)
        near = nearest(word, ["ignore"])
        ctx.error(path, f"unknown action `{word}`: a rule is `ignore`, an action or a list of actions"
                        + (f"; did you mean `{near}`?" if near else ""))
        return None
    acts = [a for a in acts if a is not None]
    return _seq(acts) if acts else _noop


def _action_keys(ctx: Ctx, a, path) -> bool:
    """Every key of an action is its one action keyword or that keyword's parameters."""
    valid = ", ".join(sorted(ACTION_KEYS))
    if not isinstance(a, dict):
        near = nearest(str(a), ACTION_KEYS | {"ignore"})
        ctx.error(path, f"an action is an object with one of {valid}"
                        + (f"; did you mean `{near}`?" if near else ""))
        return False
    heads = [k for k in a if k in ACTION_KEYS]
    if len(heads) > 1:
        ctx.error(path + [heads[1]], f"an action has one of {valid}; found {', '.join(heads)}", key=True)
        return False
    if not heads:
        for k in a:
            params = [h for h, ps in ACTION_PARAMS.items() if k in ps]
            near = nearest(k, ACTION_KEYS)
            hint = f"did you mean `{near}`?" if near else (f"`{k}` belongs to `{'`/`'.join(params)}`" if params else "")
            ctx.error(path + [k], f"unknown action `{k}`; actions are: {valid}" + (f"; {hint}" if hint else ""),
                      key=True)
        return False
    head = heads[0]
    ok = True
    for k in a:
        if k == head or k in ACTION_PARAMS.get(head, ()):
            continue
        params = ACTION_PARAMS.get(head, set())
        near = nearest(k, params | ACTION_KEYS)
        ctx.error(path + [k], f"unknown key `{k}` in {_an(head)} `{head}` action"
                  + (f": did you mean `{near}`?" if near else "")
                  + (f" (`{head}` takes {', '.join(sorted(params))})" if params else f" (`{head}` takes nothing else)"),
                  key=True)
        ok = False
    if head == "switch" and "cases" not in a and ok:
        ctx.error(path + ["switch"], "a `switch` action needs `cases`", key=True)
        ok = False
    return ok


def compile_action(ctx: Ctx, a, path):
    if not _action_keys(ctx, a, path):
        return None
    if "each" in a:
        src = N.as_fn(compile_template(ctx, a["each"], path + ["each"]))
        name = a.get("as", "item")
        with ctx.bound(name, over=a["each"]):
            body = compile_actions(ctx, a.get("then"), path + ["then"]) or _noop

        def do_each(scope, out):
            items = src(scope)
            if not items:
                return
            before = scope.get(name, _MISSING)
            for item in items if type(items) is list else (items,):
                scope[name] = item
                _changed(out)
                body(scope, out)
            # the scope as it was: a generated handler reads its names once, at its top
            if before is _MISSING:
                scope.pop(name, None)
            else:
                scope[name] = before
        do_each.shape = ("each", src, name, body)
        return do_each
    if "set" in a:
        items = tuple((k, N.as_fn(compile_template(ctx, v, path + ["set", k]))) for k, v in a["set"].items())

        def do_set(scope, out):
            state = scope["state"]
            for k, f in items:
                state[k] = f(scope)
            _changed(out)
        do_set.shape = ("set", items)
        return do_set
    if "put" in a:
        p = a["put"]
        m = p["map"]
        kf = N.as_fn(compile_template(ctx, p["key"], path + ["put", "key"]))
        vf = N.as_fn(compile_template(ctx, p["value"], path + ["put", "value"]))

        aliased = m in ctx.set_keys

        def do_put(scope, out):
            key = kf(scope)
            if aliased:
                mutated()
            scope["state"][m][key if type(key) is str else str(key)] = vf(scope)
            _changed(out)
        do_put.shape = ("put", m, kf, vf, aliased)
        return do_put
    if "incr" in a:
        spec = a["incr"]
        items = [(spec, N.Const(1))] if isinstance(spec, str) else \
            [(k, compile_template(ctx, v, path + ["incr", k])) for k, v in spec.items()]
        items = tuple((k, N.as_fn(f)) for k, f in items)

        def do_incr(scope, out):
            state = scope["state"]
            for k, f in items:
                state[k] = (state.get(k) or 0) + f(scope)
            _changed(out)
        do_incr.shape = ("incr", items)
        return do_incr
    if "append" in a:
        items = tuple((k, N.as_fn(compile_template(ctx, v, path + ["append", k]))) for k, v in a["append"].items())
        aliased = frozenset(k for k, _ in items if k in ctx.set_keys)

        def do_append(scope, out):
            _changed(out)
            state = scope["state"]
            for k, f in items:
                v = f(scope)
                if v is None:
                    continue
                cur = state.get(k)
                if type(cur) is list:
                    if k in aliased:
                        mutated()
                    cur.append(v)
                else:
                    # popped first, the string has one reference and CPython extends it in
                    # place: long answers cost linear, not quadratic, time
                    cur = state.pop(k, None) or ""
                    cur += v
                    state[k] = cur
        do_append.shape = ("append", items, aliased)
        return do_append
    if "emit" in a:
        one = not isinstance(a["emit"], list)
        items = [a["emit"]] if one else a["emit"]
        fns = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and set(item) == {"raw"}:
                raw = Raw(item["raw"])
                fns.append(lambda scope, raw=raw: raw)
            else:
                fns.append(N.as_fn(compile_template(ctx, item, path + (["emit"] if one else ["emit", i]))))
        fns = tuple(fns)
        framed: list = []  # (template, frame writer): written once the whole spec is compiled
        framing = ctx.framing  # not ctx: a finalizer held by ctx and holding it is a reference cycle
        ctx.finalizers.append(codegen.within(lambda: framed.extend((f, _frame_writer(f, framing)) for f in fns)))

        def do_emit(scope, out):
            if type(out) is TextOut:  # the byte path: whole SSE frames, written now
                for f, frame in framed:
                    if frame is not None:
                        text = frame(scope, out)
                    else:
                        v = f(scope)
                        text = None if v is None else out.frame(v)
                    if text is not None:
                        out.append(text)
                return
            for f in fns:
                v = f(scope)
                if v is not None:
                    out.append(v)
        do_emit.shape = ("emit", framed)
        return do_emit
    if "when" in a:
        cond = N.as_fn(compile_template(ctx, a["when"], path + ["when"]))
        then = compile_actions(ctx, a.get("then"), path + ["then"]) or _noop
        other = compile_actions(ctx, a.get("else"), path + ["else"]) or _noop

        def do_when(scope, out):
            (then if N.truthy(cond(scope)) else other)(scope, out)
        do_when.shape = ("when", cond, then, other)
        return do_when
    if "switch" in a:
        sel = N.as_fn(compile_template(ctx, a["switch"], path + ["switch"]))
        cases = {}
        for k, v in (a.get("cases") or {}).items():
            with ctx.knowing(a["switch"], k):
                cases[k] = compile_actions(ctx, v, path + ["cases", k]) or _noop
        dflt = compile_actions(ctx, a.get("default"), path + ["default"]) or _noop

        def do_switch(scope, out):
            try:
                f = cases.get(sel(scope), dflt)
            except TypeError:
                f = dflt
            f(scope, out)
        do_switch.shape = ("switch", sel, cases, dflt)
        return do_switch
    if "end" in a:
        def do_end(scope, out):
            out.append(END)
            if type(out) is TextOut:
                out.ended = True
        return do_end
    if "do" in a:
        name = a["do"]
        if name not in ctx.proc_names:
            ctx.error(path + ["do"], f"no action list named {name!r} under procs:")
            return None
        procs = ctx.procs

        def do_proc(scope, out):
            procs[name](scope, out)
        do_proc.shape = ("do", procs, name)
        return do_proc
    return None


# ---------------------------------------------------------------- whole spec

def _set_keys(node, found=None) -> frozenset:
    """Every state key a `set` or `incr` anywhere in these rules writes (a literal object with
    such a key counts too: more keys only cost speed). A key no rule sets holds the container
    initial_state made for it, which no request object can be: put/append on it changes
    nothing of the request (program.Echo)."""
    found = set() if found is None else found
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("set", "incr"):
                if isinstance(v, dict):
                    found.update(str(x) for x in v)
                elif isinstance(v, str):
                    found.add(v)
            _set_keys(v, found)
    elif isinstance(node, list):
        for v in node:
            _set_keys(v, found)
    return frozenset(found)


def compile_spec(source, errors: list) -> CompiledSpec | None:
    """Compile a meta-schema-valid spec; appends to `errors`, returns None if any were added.
    The Python it generates is named for the spec and kept on it (`generated`, engine/codegen.py)."""
    meta = source.value.get("metadata") if isinstance(source.value, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    with codegen.spec(f"{meta.get('name')}@{meta.get('version')}") as generated:
        out = _compile_spec(source, errors)
    if out is not None:
        out.generated = generated
    return out


def _compile_spec(source, errors: list) -> CompiledSpec | None:
    spec = source.value
    before = len(errors)
    ctx = Ctx(source, errors)
    ctx.helpers = set(spec.get("helpers") or ())
    ctx.framing = spec.get("framing") or {}
    ctx.names = names_for(spec.get("kind"), spec)
    ctx.shaped = schemas_for(spec.get("kind"), spec)
    ctx.rebound = frozenset(_with_names(spec))
    for i, h in enumerate(spec.get("helpers") or ()):
        if h not in CUSTOM_FUNCTIONS and h not in TRANSFORMS:
            near = nearest(str(h), CUSTOM_FUNCTIONS | set(TRANSFORMS))
            ctx.error(["helpers", i], f"unknown helper {h!r}" + (f": did you mean `{near}`?" if near else "")
                      + "; helpers are: " + ", ".join(sorted(CUSTOM_FUNCTIONS | set(TRANSFORMS))))
    defs = spec.get("defs") or {}
    ctx.def_names = set(defs)
    for name, body in defs.items():
        ctx.in_def = name
        ctx.def_reading[name] = reads = _Reads()
        with codegen.part(f"defs.{name}"), ctx.reading_into(reads):
            ctx.defs[name] = N.as_fn(compile_template(ctx, body, ["defs", name]))
    ctx.in_def = None
    procs = spec.get("procs") or {}
    ctx.proc_names = set(procs)
    ctx.set_keys = _set_keys([spec.get(k) for k in ("init", "on", "procs", "eof", "error")])
    for name, body in procs.items():
        with codegen.part(f"procs.{name}"):
            ctx.procs[name] = compile_actions(ctx, body, ["procs", name]) or _noop
    meta = spec.get("metadata") or {}
    out = CompiledSpec(
        name=meta.get("name"), version=str(meta.get("version")), kind=spec.get("kind"),
        file=source.path, status=meta.get("status", "stable"), changes=list(meta.get("changes") or ()),
        source=spec.get("source"), target=spec.get("target"),
    )
    var_reads = []
    with codegen.part("vars"):
        compiled = []
        for k, v in (spec.get("vars") or {}).items():
            var_reads.append(reads := _Reads())
            with ctx.reading_into(reads):
                compiled.append((k, N.as_fn(compile_template(ctx, v, ["vars", k]))))
        out.vars = tuple(compiled)
    with codegen.part("checks"):
        out.checks = tuple(
            (N.as_fn(compile_template(ctx, c["when"], ["checks", i, "when"])), c.get("param"), c["message"],
             int(c.get("status", 400)), c.get("code"))
            for i, c in enumerate(spec.get("checks") or ())
        )
    with codegen.part("drops"):
        out.drops = tuple(
            (N.as_fn(compile_template(ctx, d["when"], ["drops", i, "when"])), d["param"], d["reason"])
            for i, d in enumerate(spec.get("drops") or ())
        )
    if out.kind == "StreamMapping":
        out.state = spec.get("state") or {}
        with codegen.part("init"):
            out.init = compile_actions(ctx, spec.get("init"), ["init"])
        with codegen.part("discriminator"):
            out.discriminator = N.as_fn(compile_template(ctx, spec["discriminator"], ["discriminator"]))
        path = getattr(out.discriminator, "path", None)
        out.disc_key = path[1] if path is not None and len(path) == 2 and path[0] == "event" else None
        out.handlers = {}
        for k, v in (spec.get("on") or {}).items():
            with ctx.knowing(spec["discriminator"], str(k)), codegen.part(f"on.{k}"):
                out.handlers[str(k)] = compile_actions(ctx, v, ["on", k])
        with codegen.part("eof"):
            out.eof = compile_actions(ctx, spec.get("eof"), ["eof"])
        with codegen.part("error"):
            out.error = compile_actions(ctx, spec.get("error"), ["error"])
        framing = spec.get("framing") or {}
        out.event_field = framing.get("event_field")
        out.sequence_field = framing.get("sequence_field")
    else:
        with codegen.part("template"):
            out.template = N.as_fn(compile_template(ctx, spec.get("template"), ["template"]))
    if isinstance(spec.get("usage"), dict):
        names = ctx.names
        ctx.names = USAGE_NAMES.get(out.kind, names)
        with codegen.part("usage"):
            out.usage = tuple(N.as_fn(compile_template(ctx, spec["usage"][k], ["usage", k])) for k in ("input", "output"))
        ctx.names = names
    _check_def_reads(ctx)
    if len(errors) != before:
        return None
    _enable_memos(ctx)
    out.item_memos = {p: memo for memo, _, p, _, _ in ctx.memos}
    out.req_members = ctx.req_members
    for finish in ctx.finalizers:
        finish()
    if out.kind == "StreamMapping":
        # the byte path's handlers, each one generated function (engine/stream_codegen.py)
        out.text_handlers = {k: None if v is None else stream_codegen.text_handler(v, f"on.{k}")
                             for k, v in out.handlers.items()}
        out.text_init, out.text_eof, out.text_error = (
            None if a is None else stream_codegen.text_handler(a, part) for a, part in
            ((out.init, "init"), (out.eof, "eof"), (out.error, "error")))
    if getattr(out.template, "json", None) is not None:
        with codegen.part("template"):
            out.template.json = serialize.settle(out.template.json)  # the server calls it per request
    # a client's request leaves out most of what its API takes; an upstream's answer, little
    out.absent_vars = _absent_vars(ctx, out.vars, var_reads, _required(out.source)) \
        if len(errors) == before and out.kind == "RequestMapping" else {}
    if out.absent_vars:
        _guard_rules_on_vars(spec, out)
    out.scope = _scope_fn(out.vars, out.absent_vars)
    out.check = _check_fn(out.checks)
    out.dropped = _drops_fn(out.drops)
    if out.state:
        out.initial_state = _state_fn(out.state) or out.initial_state
    return out


def _free_reads(ctx: Ctx, reads: _Reads, seen: tuple) -> tuple[set, set | None, set, set | None] | None:
    """(the root names a region reads from outside itself, the members of `vars` among them or
    None when it reads `vars` whole, the names among them read through a block that uses
    itself, the members of `src` as for `vars`), through the blocks it uses; None when that
    cannot be known or it calls a volatile function. A block reached again through its own uses
    (a document inside a document) counts with all it and the blocks it reaches read, and what
    a `with` around the first use binds is not taken off those: a use of the block from inside
    itself need not pass it on (generated code binds it to a local)."""
    if reads.volatile:
        return None
    out, members, deep, src = set(reads.roots), reads.vars, set(), reads.src
    for name, binds, inner in reads.uses:
        block = ctx.def_reading.get(name)
        if block is None:
            return None
        if name in seen:
            reach = _reachable_reads(ctx, name)
            if reach is None:
                return None
            sub = (reach[0], reach[1], reach[0], reach[2])  # all of it read deep: nothing taken off
            free = reach[0]
        else:
            sub = _free_reads(ctx, block, seen + (name,))
            if sub is None:
                return None
            free = (sub[0] - binds - inner) | sub[2]
        out |= free
        deep |= sub[2]
        if "vars" in free:
            members = None if members is None or sub[1] is None else members | sub[1]
        if "src" in free:
            src = None if src is None or sub[3] is None else src | sub[3]
    return out, members, deep, src


def _reachable_reads(ctx: Ctx, name: str) -> tuple[set, set | None, set | None] | None:
    """Every root name the block `name` and the blocks it reaches read, and the members of
    `vars` and of `src` among them; None when one calls a volatile function or is not a block."""
    names, members, src, todo, done = set(), set(), set(), [name], set()
    while todo:
        block = ctx.def_reading.get(todo.pop())
        if block is None or block.volatile:
            return None
        if id(block) in done:
            continue
        done.add(id(block))
        names |= block.roots
        members = None if members is None or block.vars is None else members | block.vars
        src = None if src is None or block.src is None else src | block.src
        todo.extend(n for n, _, _ in block.uses)
    return names, members, src


def _bound_around(ctx: Ctx, local: frozenset, block: str | None, seen: tuple = ()) -> set | None:
    """The names something binds around a point of a template: the `each` names around it, and
    for a point in a block of defs, what every use of the block binds or has bound around it
    (None when a block is reached again through its own uses)."""
    out = set(local)
    if block is None:
        return out
    if block in seen:
        return None
    for bound, around, in_def in ctx.use_sites.get(block, ()):
        sub = _bound_around(ctx, around, in_def, seen + (block,))
        if sub is None:
            return None
        out |= bound | sub
    return out


def _enable_memos(ctx: Ctx) -> None:
    """Turns on the item memo of each `each` whose body reads only its item, STABLE_ROOTS,
    members of `vars` and names no spec section provides (always null there), keyed on the
    values of the stable names and the members. A name something binds around the `each` (a
    `use ... with` around it, an outer `each`) is read from a local in generated code, not from
    the scope the memo keys on: such a body is not memoized."""
    for memo, reads, _, local, block in ctx.memos:
        found = _free_reads(ctx, reads, ())
        if found is None or (found[1] is None and "vars" in found[0]):
            continue
        names, members, _, _ = found
        around = _bound_around(ctx, local, block)
        if around is None or names & around:
            continue
        if all(n in STABLE_ROOTS or n == "vars" or n not in ctx.names for n in names):
            memo.roots = tuple(sorted(names & STABLE_ROOTS))
            memo.members = tuple(sorted(members)) if "vars" in names else ()


def _with_names(v, out=None) -> set:
    out = set() if out is None else out
    if isinstance(v, dict):
        if "use" in v and isinstance(v.get("with"), dict):
            out.update(v["with"])
        for x in v.values():
            _with_names(x, out)
    elif isinstance(v, list):
        for x in v:
            _with_names(x, out)
    return out


def _check_def_reads(ctx: Ctx):
    """A name a block of defs reads and the spec does not provide is a parameter of the block: some
    `use` of it binds it (by `with`, by an enclosing each/as, or through the use sites of the
    block that uses it); a use that does not bind it reads null."""
    for block, name, text, path, offset, in_scope in ctx.def_reads:
        if _provided(ctx, block, name, frozenset()):
            continue
        msg = _not_in_scope(ctx, name, text, path, in_scope)
        msg += f"; no `use: {block}` binds it (with: {{{name}: ...}})"
        ctx.error(path, msg, col_offset=offset)


def _provided(ctx: Ctx, block, name, seen) -> bool:
    for binds, local, in_def in ctx.use_sites.get(block, ()):
        if name in binds or name in local:
            return True
        if in_def is not None and in_def not in seen and _provided(ctx, in_def, name, seen | {block}):
            return True
    return False


def _state_fn(state: dict):
    """CompiledSpec.initial_state as one generated dict display: new containers every call,
    scalars shared (0.9 µs for the Responses spec's 29 fields, against 1.7 copying them)."""
    env: dict = {}

    def display(v) -> str:
        if type(v) is dict:
            return "{" + ", ".join(f"{display(k)}: {display(x)}" for k, x in v.items()) + "}"
        if type(v) is list:
            return "[" + ", ".join(display(x) for x in v) + "]"
        name = f"V{len(env)}"
        env[name] = v
        return name
    try:
        return codegen.define(f"def initial_state():\n    return {display(state)}", "state", env, "initial_state")
    except (SyntaxError, RecursionError, MemoryError):  # nested too deep for the parser: copy it
        return None


def _source(node, env: dict, i: int, prefix: str) -> str:
    """A node's inlined source (expr.py), or a call of it."""
    code = getattr(node, "code", None)
    if code is not None:
        env.update(code[1])
        return code[0]
    env[f"{prefix}{i}"] = node
    return f"{prefix}{i}(scope)"


def _scope_fn(vars_: tuple, absent: dict | None = None):
    """CompiledSpec.scope as one generated function: every var inlined in order. A var whose
    value is known while the request holds none of some members (`absent`, _absent_vars) is
    that value, unless one of them is there (the set of those present made once, `_gp`)."""
    env: dict = {}
    absent = absent or {}
    lines = ["def scope(**scope):"]
    cold = set()
    if vars_:
        lines.append("    scope['vars'] = v = {}")
        if absent:
            lines.append(_present_line(env, frozenset().union(*(g for g, _ in absent.values()))))
        for i, (k, f) in enumerate(vars_):
            env[f"K{i}"] = k
            src = _source(f, env, i, "F")
            if k in absent:
                guard, value = absent[k]
                env[f"G{i}"] = next(iter(guard)) if len(guard) == 1 else guard
                test = f"G{i} not in _gp" if len(guard) == 1 else f"G{i}.isdisjoint(_gp)"
                cold.add(len(lines) - 2)
                src = f"{_const_source(value, env, i)} if {test} else ({src})"
            lines.append(f"    v[K{i}] = {src}")
    lines.append("    return scope")
    # vars are written here, one after the other: none of them is read ahead
    lines = lines[:2] + hoist_paths(lines[2:], env, written=frozenset({"vars"}), cold=frozenset(cold))
    return codegen.define("\n".join(lines), "scope", env, "scope")


def _const_source(value, env: dict, i: int) -> str:
    """Source giving `value` (JSON, _literal): a string bound once, containers made anew."""
    if type(value) is str:
        env[f"V{i}"] = value
        return f"V{i}"
    return repr(value)


def _literal(value, budget: int = 32) -> bool:
    """A small JSON value written as Python source gives back equal: scalars, finite numbers,
    and lists and objects of those."""
    if value is None or type(value) in (bool, int, str):
        return True
    if type(value) is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if type(value) is list and len(value) <= budget:
        return all(_literal(x, budget // 2) for x in value)
    if type(value) is dict and len(value) <= budget:
        return all(type(k) is str and _literal(x, budget // 2) for k, x in value.items())
    return False


def _required(schema_id: str | None) -> frozenset:
    """The top-level members the source schema requires: there in every `src` a spec sees (the
    server checks bodies and answers against it first)."""
    try:
        doc = schemas.schema(schema_id) if schema_id else None
    except KeyError:
        doc = None
    return frozenset(doc.get("required") or ()) if isinstance(doc, dict) else frozenset()


def _absent_vars(ctx: Ctx, vars_: tuple, var_reads: list, required: frozenset = frozenset()) -> dict:
    """{var: (members of `src`, its value while the request holds none of them)} for each var
    that reads nothing but members of `src` and vars of this kind (through the blocks it uses,
    calling no volatile function): its value is then what it is on a request without those
    members, worked out here once. One that raises there is left to raise as it does. A var
    reading a member the source schema requires is left out: that member is always there."""
    out: dict = {}
    for (name, fn), reads in zip(vars_, var_reads):
        found = _free_reads(ctx, reads, ())
        if found is None:
            continue
        names, members, _, src = found
        if not names <= {"src", "vars"} or ("src" in names and src is None) \
                or ("vars" in names and (members is None or not members <= out.keys())):
            continue
        guard = set(src) if "src" in names else set()
        for m in members if "vars" in names else ():
            guard |= out[m][0]
        if not guard or guard & required:
            continue
        known = {k: json_copy(v) for k, (_, v) in out.items()}
        try:
            value = codegen.call_cold(fn, {"src": {}, "vars": known})
        except Exception:  # noqa: BLE001 - what a request without the members meets too
            continue
        if _literal(value):
            out[name] = (frozenset(guard), value)
    return out


def _guard_rules_on_vars(spec: dict, out: CompiledSpec) -> None:
    """A checks or drops rule that reads such vars is guarded by their members too, where it is
    false while they are what a request without those members makes of them
    (expr.absent_falsy)."""
    for section, rules in (("checks", out.checks), ("drops", out.drops)):
        for rule, raw in zip(rules, spec.get(section) or ()):
            cond, text = rule[0], raw.get("when")
            if getattr(cond, "guard", None) is None and hasattr(cond, "code") and isinstance(text, str):
                cond.guard = absent_falsy(_PARSER.parse(text).parsed, out.absent_vars)


def _present_line(env: dict, members: frozenset) -> str:
    """The line making `_gp`, those of `members` that `src` holds (none when it is no object)."""
    env.update(_g_all=members, _g_src="src", _g_none=frozenset())
    return "    _gp = _g_all.intersection(_gs) if type(_gs := scope.get(_g_src)) is dict else _g_none"


def _rule_test(cond, env: dict, i: int, prefix: str) -> str:
    """The source of a checks/drops rule's condition as an `if` test (JMESPath truthiness)."""
    src = _source(cond, env, i, prefix)
    return f"({src})" if getattr(cond, "boolish", False) else truthy_source(fresh_name("c"), src)


def _guarded(rules: tuple, env: dict, lines: list, prefix: str) -> list[tuple[str, bool]]:
    """(the `if` test, whether it is guarded) of each rule. A rule whose condition is false
    while `src` holds none of some members (expr.absent_falsy) first asks whether one of them
    is there, in the set of those present, made once (`_gp`): a rule about a field the request
    does not carry costs a set lookup, not its condition, nor the reads of the paths only it
    reads (hoist_paths `cold`)."""
    guards = [getattr(cond, "guard", None) for cond, *_ in rules]
    known = frozenset().union(*(g for g in guards if g))
    if known:
        lines.append(_present_line(env, known))
    tests = []
    for i, ((cond, *_), guard) in enumerate(zip(rules, guards)):
        test = _rule_test(cond, env, i, prefix)
        if guard:
            env[f"G{i}"] = next(iter(guard)) if len(guard) == 1 else guard
            test = f"G{i} in _gp and {test}" if len(guard) == 1 else f"not G{i}.isdisjoint(_gp) and {test}"
        tests.append((test, bool(guard)))
    return tests


def _check_fn(checks: tuple):
    """CompiledSpec.check as one generated function: each rule's condition inlined, in order."""
    if not checks:
        return lambda scope: None
    return _rules_fn(checks, "C", ["def check(scope):"], "        return R{i}", "    return None", "checks", "check")


def _drops_fn(drops: tuple):
    """CompiledSpec.dropped as one generated function: each rule's condition inlined, in order,
    the paths several rules read read once (most requests drop nothing: no list is built)."""
    if not drops:
        return lambda scope: []
    return _rules_fn(drops, "D", ["def dropped(scope):", "    out = None"],
                     "        out = [R{i}] if out is None else out + [R{i}]", "    return [] if out is None else out",
                     "drops", "dropped")


def _rules_fn(rules: tuple, prefix: str, head: list, then: str, tail: str, what: str, name: str):
    """A function of `head` lines, then for each rule `if` its test (_guarded) the line `then`
    (formatted with the rule's index i; R{i} is the rule's tuple after its condition), then
    `tail`."""
    env: dict = {}
    lines = list(head)
    cold = set()
    for i, (test, guarded) in enumerate(_guarded(rules, env, lines, prefix)):
        env[f"R{i}"] = tuple(rules[i][1:])
        if guarded:
            cold.add(len(lines) - 1)
        lines.append(f"    if {test}:")
        lines.append(then.format(i=i))
    lines.append(tail)
    lines = lines[:1] + hoist_paths(lines[1:], env, cold=frozenset(cold))
    return codegen.define("\n".join(lines), what, env, name)
