"""A spec version written as an overlay of an earlier one.

A spec whose `metadata.extends` names a version holds only what changes: the catalog resolves
that version of the same spec, applies the overlay, and compiles the result as a whole spec.

    remove:            paths deleted from the base first
    vars/defs/procs/state/on:
                       entries replace the base entry of the same name, or are added after them
    checks:            entries replace the base check of the same `name` (else `param`), or are added
    drops:             the entries for one `name` (else `param`) replace all the base's entries for
                       it, in the place of the first; entries for a new one are added
    helpers:           added to the base's
    template, framing: objects merged key by key (literal objects and `fields:` nodes), anything
                       else replaces what the base has there
    anything else:     replaces the base's (source, target, usage, discriminator, init, eof, error)
    patch:             {path: value}, applied last: the value replaces what is at the path, or is
                       added under it (a new table entry, a new field)

A path is dot-separated keys with [n] for list items (`template.choices[0].fields.finish_reason`);
a key holding dots is quoted (`on."response.completed"`); a list of named items (checks) is
entered by name (`checks.n.message`).

Every value keeps the file and position it was written at, so an error in what an overlay wrote
points into the overlay file, and one in what it inherited points into the base."""
from __future__ import annotations

import re

from .spec_errors import SpecError, spec_path
from .source import Source

NAMED = ("vars", "defs", "procs", "state", "on")
MERGED = ("template", "framing")
OVERLAY_ONLY = ("patch", "remove")
TEMPLATE_HEADS = {"const", "each", "switch", "lookup", "coalesce", "when", "concat", "merge", "use", "pipe",
                  "fields"}


class A:
    """A value with the place it was written: (source, line, col), and its key's place."""
    __slots__ = ("v", "src", "pos", "key")

    def __init__(self, v, src, pos, key=None):
        self.v, self.src, self.pos, self.key = v, src, pos, key


def annotate(source: Source, path=(), value=None, top=True):
    value = source.value if top else value
    pos = source.marks.get(tuple(path)) or source.mark(tuple(path))
    src = source.origin.get(tuple(path), source) if source.origin else source
    key = source.marks.get(tuple(path) + ("<key>",))
    if type(value) is dict:
        v = {k: annotate(source, path + (k,), x, False) for k, x in value.items()}
    elif type(value) is list:
        v = [annotate(source, path + (i,), x, False) for i, x in enumerate(value)]
    else:
        v = value
    return A(v, src, pos, key)


def flatten(a: A, path, marks: dict, origin: dict):
    marks[path] = a.pos
    origin[path] = a.src
    if a.key is not None:
        marks[path + ("<key>",)] = a.key
        origin[path + ("<key>",)] = a.src
    if type(a.v) is dict:
        return {k: flatten(x, path + (k,), marks, origin) for k, x in a.v.items()}
    if type(a.v) is list:
        return [flatten(x, path + (i,), marks, origin) for i, x in enumerate(a.v)]
    return a.v


_SEGMENT = re.compile(r'\s*(?:"([^"]*)"|\'([^\']*)\'|([^.\[\]"\']+)|\[(\d+)\])\s*(\.|(?=\[)|$)')


def parse_path(text: str) -> list | None:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if not m or m.end() == pos:
            return None
        dq, sq, word, idx, _sep = m.groups()
        out.append(int(idx) if idx is not None else (dq if dq is not None else sq if sq is not None else word.strip()))
        pos = m.end()
    return out or None


def _segments(text: str) -> list:
    return parse_path(text) or [text]


def _merge_groups(base: list, over: list) -> list:
    """`drops:` entries grouped by name (else param): one field may be dropped for several
    reasons, so an overlay restates all of a field's entries or none."""
    ids = {_check_id(x) for x in over} - {None}
    out, placed = [], set()
    for b in base:
        ident = _check_id(b)
        if ident not in ids:
            out.append(b)
        elif ident not in placed:
            placed.add(ident)
            out.extend(x for x in over if _check_id(x) == ident)
    return out + [x for x in over if _check_id(x) not in placed]


def _check_id(a: A):
    if type(a.v) is dict:
        for k in ("name", "param"):
            x = a.v.get(k)
            if x is not None and isinstance(x.v, str):
                return x.v
    return None


def _step(node: A, seg):
    """The child of `node` at one path segment, as (container, key), or None."""
    if type(node.v) is dict and isinstance(seg, str):
        return seg
    if type(node.v) is list:
        if isinstance(seg, int):
            return seg if -len(node.v) <= seg < len(node.v) else None
        for i, item in enumerate(node.v):
            if _check_id(item) == seg:
                return i
    return None


def _walk(root: A, segs):
    node = root
    for seg in segs:
        key = _step(node, seg)
        if key is None or (type(node.v) is dict and key not in node.v):
            return None
        node = node.v[key]
    return node


def _is_node(a: A) -> bool:
    return type(a.v) is dict and any(k in TEMPLATE_HEADS for k in a.v)


def merge_template(base: A, over: A) -> A:
    """Literal objects and `fields:` nodes merge key by key; anything else replaces."""
    if type(base.v) is not dict or type(over.v) is not dict:
        return over
    if _is_node(base) or _is_node(over):
        if set(base.v) & TEMPLATE_HEADS == {"fields"} and set(over.v) & TEMPLATE_HEADS == {"fields"}:
            out = dict(base.v)
            for k, x in over.v.items():
                inner = base.v.get(k)
                if k == "fields" and inner is not None and type(inner.v) is dict and type(x.v) is dict:
                    # the keys of `fields:` are field names, keywords included: merged as names
                    x = A({**inner.v, **{n: merge_template(inner.v[n], y) if n in inner.v else y
                                         for n, y in x.v.items()}}, inner.src, inner.pos, inner.key)
                out[k] = x
            return A(out, over.src, over.pos, base.key)
        return over
    out = dict(base.v)
    for k, x in over.v.items():
        out[k] = merge_template(out[k], x) if k in out else x
    return A(out, base.src, base.pos, base.key)


class Overlay:
    def __init__(self, base: Source, over: Source, errors: list):
        self.base, self.over, self.errors = base, over, errors

    def error(self, path, message):
        # a patch is reported at its key: the path written there
        at = tuple(path) + (("<key>",) if len(path) == 2 and path[0] == "patch" else ())
        file, line, col, text = self.over.locate(at)
        self.errors.append(SpecError(file, line, col, spec_path(path), message, text))

    def apply(self) -> Source | None:
        """The resolved spec as one Source (values with their own files' marks), or None."""
        before = len(self.errors)
        root = annotate(self.base)
        over = annotate(self.over)
        ov = over.v
        if ov.get("kind") is not None and root.v.get("kind") is not None and ov["kind"].v != root.v["kind"].v:
            self.error(["kind"], f"an overlay keeps the kind of what it extends ({root.v['kind'].v})")
        rm = ov.get("remove")
        if rm is not None and (type(rm.v) is not list or not all(isinstance(x.v, str) for x in rm.v)):
            self.error(["remove"], "remove: is a list of paths, e.g. [vars.json_mode, on.ping]")
            rm = None
        if "patch" in ov and type(ov["patch"].v) is not dict:
            self.error(["patch"], "patch: maps paths to values, e.g. {template.usage.total_tokens: src.total}")
        for i, item in enumerate(rm.v if rm is not None and type(rm.v) is list else ()):
            self._remove(root, item, ["remove", i])
        for name, a in ov.items():
            if name in OVERLAY_ONLY or name == "apiVersion":
                continue
            if name == "metadata":
                meta = dict(a.v) if type(a.v) is dict else {}
                root.v["metadata"] = A(meta, a.src, a.pos, a.key)
            elif name in NAMED and type(a.v) is dict and name in root.v and type(root.v[name].v) is dict:
                out = dict(root.v[name].v)
                out.update(a.v)
                root.v[name] = A(out, a.src, a.pos, a.key)
            elif name == "checks" and type(a.v) is list and name in root.v and type(root.v[name].v) is list:
                out = list(root.v[name].v)
                for item in a.v:
                    ident = _check_id(item)
                    at = next((j for j, b in enumerate(out) if ident is not None and _check_id(b) == ident), None)
                    if at is None:
                        out.append(item)
                    else:
                        out[at] = item
                root.v[name] = A(out, a.src, a.pos, a.key)
            elif name == "drops" and type(a.v) is list and name in root.v and type(root.v[name].v) is list:
                root.v[name] = A(_merge_groups(root.v[name].v, a.v), a.src, a.pos, a.key)
            elif name == "helpers" and type(a.v) is list and name in root.v and type(root.v[name].v) is list:
                have = {x.v for x in root.v[name].v}
                root.v[name] = A(root.v[name].v + [x for x in a.v if x.v not in have], a.src, a.pos, a.key)
            elif name in MERGED and name in root.v:
                root.v[name] = merge_template(root.v[name], a)
            else:
                root.v[name] = a
        patch = ov.get("patch")
        if patch is not None and type(patch.v) is dict:
            for text, value in patch.v.items():
                self._patch(root, text, value)
        if len(self.errors) != before:
            return None
        marks: dict = {}
        origin: dict = {}
        value = flatten(root, (), marks, origin)
        value.pop("patch", None)
        value.pop("remove", None)
        return Source(path=self.over.path, text=self.over.text, value=value, marks=marks, origin=origin)

    def _target(self, root: A, text, where):
        segs = parse_path(text) if isinstance(text, str) else None
        if not segs:
            self.error(where, f"{text!r} is not a path such as template.usage or on.\"response.completed\"")
            return None, None
        parent = _walk(root, segs[:-1])
        if parent is None or type(parent.v) not in (dict, list):
            self.error(where, f"{self._ref()} has nothing at {spec_path(segs[:-1])}")
            return None, None
        return parent, segs[-1]

    def _ref(self) -> str:
        meta = self.base.value.get("metadata") or {}
        return f"{meta.get('name')}@{meta.get('version')}"

    def _remove(self, root: A, item: A, where):
        parent, last = self._target(root, item.v, where)
        if parent is None:
            return
        key = _step(parent, last)
        if key is None or (type(parent.v) is dict and key not in parent.v):
            self.error(where, f"{self._ref()} has no {spec_path(_segments(item.v))} to remove")
            return
        if type(parent.v) is dict:
            parent.v = {k: x for k, x in parent.v.items() if k != key}
        else:
            parent.v = [x for i, x in enumerate(parent.v) if i != key]

    def _patch(self, root: A, text, value: A):
        where = ["patch", text]
        parent, last = self._target(root, text, where)
        if parent is None:
            return
        key = _step(parent, last)
        if key is None:
            self.error(where, f"{self._ref()} has no item {last!r} in the list at {spec_path(parse_path(text)[:-1])}")
            return
        if type(parent.v) is dict:
            parent.v = {**parent.v, key: value}
        else:
            parent.v = [value if i == key else x for i, x in enumerate(parent.v)]
