"""Field paths of spec expressions checked against the JSON Schemas of what they read.

`engine check` walks each static path an expression reads from a shaped scope name (`src` of a
request or response spec, `event` of a stream spec) through the schema of that name, narrowed by
what the spec already knows at that point: under `on: content_block_delta` the event's `type`
is `content_block_delta`; in the case `text_delta` of a `switch: event.delta.type` the delta's
`type` is `text_delta`. The rule for a field the schema does not name:

* an object whose schema (with its allOf, if/then, anyOf and oneOf parts that can apply) lists
  `properties` is closed for reading: a name none of them lists is reported, even when the
  schema accepts unknown fields on the wire (`additionalProperties` left open so that a new
  upstream field passes validation). A spec that reads a new field adds it to the schema.
* an object that lists no properties (free-form, such as `metadata` or a tool's `input`), has
  `patternProperties`, or whose `additionalProperties` is a schema (a map) accepts any name.
* a value that cannot be an object (a string, a number) has no fields: reading one is reported.
Anything the walk cannot follow (a computed key, a projection over `*`, a name rebound by
`with`) is not checked."""
from __future__ import annotations

from functools import lru_cache
from urllib.parse import urljoin

from . import schemas
from .names import ANY, ITEM, nearest


def _resolve(s, base: str):
    """(schema, base id) with every $ref followed."""
    for _ in range(32):
        if not isinstance(s, dict) or "$ref" not in s:
            return s, base
        ref = s["$ref"]
        doc_id, _, pointer = ref.partition("#")
        doc_id = urljoin(base, doc_id) if doc_id else base
        try:
            target = schemas.schema(doc_id)
        except KeyError:
            return None, base
        for part in [p for p in pointer.split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        extra = {k: v for k, v in s.items() if k != "$ref"}
        if extra and isinstance(target, dict):  # $ref next to other keywords: both apply
            return {"allOf": [target, extra]}, doc_id
        s, base = target, doc_id
    return None, base


class _View:
    """What one object position of a schema allows: the names it lists and how open it is."""
    __slots__ = ("props", "extra", "free", "types", "items")

    def __init__(self):
        self.props: dict = {}   # name -> [(schema, base)]
        self.extra: list = []   # additionalProperties schemas (a map's values)
        self.free = False       # some alternative lists no properties: any name may be there
        self.types: set = set()
        self.items: list = []   # [(schema, base)] of the array items


def _disc(cond):
    """{field: allowed values} of a discriminator condition `if: {properties: {k: {const|enum}}}`."""
    if not isinstance(cond, dict) or set(cond) - {"properties", "required", "type"}:
        return None
    out = {}
    for k, v in (cond.get("properties") or {}).items():
        if isinstance(v, dict) and "const" in v:
            out[k] = {v["const"]}
        elif isinstance(v, dict) and isinstance(v.get("enum"), list):
            out[k] = set(v["enum"])
        else:
            return None
    return out or None


def _excluded(s, known: dict) -> bool:
    """An alternative whose discriminator field cannot hold the value known for it."""
    props = s.get("properties") if isinstance(s, dict) else None
    if not isinstance(props, dict):
        return False
    for k, v in known.items():
        p = props.get(k)
        if isinstance(p, dict) and "const" in p and p["const"] != v:
            return True
        if isinstance(p, dict) and isinstance(p.get("enum"), list) and v not in p["enum"]:
            return True
    return False


def _gather(s, base, known: dict, view: _View, depth=0):
    s, base = _resolve(s, base)
    if s is True or s == {} or s is None or depth > 40:
        if s is True or s == {}:
            view.free = True
        return
    if not isinstance(s, dict):
        return
    t = s.get("type")
    types = set(t) if isinstance(t, list) else {t} if t else set()
    view.types |= types
    composite = any(k in s for k in ("allOf", "anyOf", "oneOf", "if", "properties"))
    if "properties" in s:
        for k, v in s["properties"].items():
            view.props.setdefault(k, []).append((v, base))
    ap = s.get("additionalProperties")
    if isinstance(ap, dict) and ap:
        view.extra.append((ap, base))
    if s.get("patternProperties"):
        view.free = True
    if "items" in s and isinstance(s["items"], dict):
        view.items.append((s["items"], base))
    for p in s.get("prefixItems") or ():
        view.items.append((p, base))
    if not composite and not (isinstance(ap, dict) and ap) and (not types or "object" in types):
        view.free = True  # an object of any fields
    for sub in s.get("allOf") or ():
        _gather(sub, base, known, view, depth + 1)
    for key in ("anyOf", "oneOf"):
        for sub in s.get(key) or ():
            r, rb = _resolve(sub, base)
            if not _excluded(r, known):
                _gather(r, rb, known, view, depth + 1)
    if "if" in s:
        cond = _disc(s["if"])
        if cond and all(k in known for k in cond):
            branch = "then" if all(known[k] in vals for k, vals in cond.items()) else "else"
            if branch in s:
                _gather(s[branch], base, known, view, depth + 1)
        else:
            for branch in ("then", "else"):
                if branch in s:
                    _gather(s[branch], base, known, view, depth + 1)


def _view(alts, known) -> _View:
    view = _View()
    for s, base in alts:
        _gather(s, base, known, view)
    return view


@lru_cache(maxsize=None)
def _root(schema_id: str):
    """The schema a scope name's id names (`doc` or `doc#/json/pointer`), or None if unknown."""
    s, base = _resolve({"$ref": schema_id}, "")
    return None if s is None else (s, base)


def check_path(schema_id: str, path: list, known: dict, alias=None) -> tuple[int, str] | None:
    """(index of the step in `path` that cannot exist, why) or None. `path[0]` is the scope name
    the schema describes; `known` maps a path tuple to the value known for it there. `alias`
    (n, name): the first n steps are written `name` in the spec (a loop name), in messages."""
    root = _root(schema_id)
    if root is None:
        return None
    alts = [root]
    where = (path[0],)
    for i in range(1, len(path)):
        step = path[i]
        here = {k[-1]: v for k, v in known.items() if len(k) == len(where) + 1 and k[:-1] == where}
        view = _view(alts, here)
        if step == ANY:
            return None
        if step == ITEM:
            if not view.items:
                return None
            alts = view.items
            where = where + (ITEM,)
            continue
        if step in view.props:
            alts = view.props[step]
        elif view.extra:
            alts = view.extra
        elif view.free:
            return None
        elif view.types and "object" not in view.types and not view.props:
            kinds = " or ".join(sorted(view.types))
            return i, f"`{_fmt(path[:i], alias)}` is {_a(kinds)} here: it has no field `{step}`"
        elif view.props:
            near = nearest(str(step), view.props)
            at = _fmt(path[:i], alias)
            ctx = " and ".join(f"{_fmt(k)} == {v!r}" for k, v in sorted(known.items(), key=len)
                            if len(k) <= i + 1 and tuple(path[:len(k) - 1]) == k[:-1])
            names = sorted(view.props)
            listed = f"; {schema_id} lists {len(names)} fields there" if len(names) > 12 else \
                f" ({schema_id} lists: {', '.join(names)})"
            return i, (f"`{step}` cannot be a field of `{at}`" + (f" where {ctx}" if ctx else "")
                       + (f": did you mean `{near}`?" if near else listed))
        else:
            return None
        where = where + (step,)
    return None


def _fmt(path, alias=None) -> str:
    if alias is not None and len(path) >= alias[0]:
        return _fmt([alias[1]] + list(path[alias[0]:]))
    out = ""
    for p in path:
        out += "[]" if p == ITEM else ("." if out else "") + str(p)
    return out


def _a(kinds: str) -> str:
    return ("an " if kinds[:1] in "aeiou" else "a ") + kinds
