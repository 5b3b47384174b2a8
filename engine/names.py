"""What `engine check` reads out of one JMESPath expression: the names it starts from (which must
be in scope) and the static field paths it reads (which engine/shapes.py checks against the
schemas), plus the nearest-name suggestion every "did you mean" uses."""
from __future__ import annotations

import difflib
import re

from jmespath import exceptions as jexc
from jmespath.parser import Parser

ITEM = "[]"  # a path step into an array's items
ANY = "*"    # a path step into any value of an object
_PARSER = Parser()


def paths(text: str) -> list[list]:
    """Every static path read from the scope: ['event', 'delta', 'text'], ['src', 'messages', ITEM,
    'role'] for `src.messages[*].role`; a path's first step is a root name. [] on a syntax error
    (the compiler reports that)."""
    try:
        parsed = _PARSER.parse(text).parsed
    except jexc.JMESPathError:
        return []
    out: list = []
    _walk(parsed, [], out)
    return out


def roots(text: str) -> list[str]:
    seen: list = []
    for p in paths(text):
        if p and p[0] not in seen:
            seen.append(p[0])
    return seen


def _walk(node, base, out):
    """The static path of the value `node` gives (None when unknown), recording field paths."""
    if not isinstance(node, dict):
        return None
    t = node.get("type")
    ch = node.get("children") or []
    if t == "field":
        if base is None:
            return None
        p = base + [node["value"]]
        out.append(p)
        return p
    if t == "subexpression":
        cur = base
        for c in ch:
            cur = _walk(c, cur, out)
        return cur
    if t == "index_expression":
        left = _walk(ch[0], base, out)
        right = ch[1] if len(ch) > 1 else None
        if isinstance(right, dict) and right.get("type") == "index":
            return None if left is None else left + [ITEM]
        return left  # a slice is still the array
    if t in ("projection", "filter_projection", "value_projection"):
        left = _walk(ch[0], base, out)
        elem = None if left is None else left + [ANY if t == "value_projection" else ITEM]
        if t == "filter_projection" and len(ch) > 2:
            _walk(ch[2], elem, out)
        _walk(ch[1], elem, out)
        return None
    if t == "flatten":
        return _walk(ch[0], base, out)
    if t == "pipe":
        left = _walk(ch[0], base, out)
        return _walk(ch[1], left, out)
    if t in ("current", "identity"):
        return base
    if t == "expref":
        for c in ch:
            _walk(c, None, out)
        return None
    for c in ch:
        _walk(c, base, out)
    return None


_SCOPE, _ROOT, _OTHER = "scope", "root", "other"  # what a node's value is, for members_read


def members_read(text: str, root: str) -> frozenset | None:
    """The members of the scope name `root` that an expression reads: {'tools', 'model'} for
    `req.tools || req.model`, {'text'} for `req | text.format`; None when it reads the value of
    `root` itself (`req`, `keys(req)`, `req.*`, `req[0]`, `req | [a, @]`) or the scope that holds
    it (`values(@)`), or on a syntax error (the compiler reports that). What the gateway keeps of
    a request for the specs that run after it was sent (CompiledSpec.req_members)."""
    try:
        parsed = _PARSER.parse(text).parsed
    except jexc.JMESPathError:
        return None
    out: set = set()
    try:
        if _members(parsed, _SCOPE, root, out) is not _OTHER:
            return None
    except _Whole:
        return None
    return frozenset(out)


class _Whole(Exception):
    """The root's value itself is used: every member may be read."""


def _members(node, base, root: str, out: set):
    """What the value of `node` is (_SCOPE, _ROOT or _OTHER), evaluated on `base`; members of
    the root read on the way are added to `out`. Raises _Whole where the root's own value is
    used by anything but a field step."""
    if not isinstance(node, dict):
        return _OTHER
    t = node.get("type")
    ch = node.get("children") or []
    if t == "field":
        if base is _SCOPE:
            return _ROOT if node["value"] == root else _OTHER
        if base is _ROOT:
            out.add(node["value"])
        return _OTHER
    if t == "subexpression":
        cur = base
        for c in ch:
            cur = _members(c, cur, root, out)
        return cur
    if t == "pipe":
        return _members(ch[1], _members(ch[0], base, root, out), root, out)
    if t in ("current", "identity"):
        return base
    if t == "expref":  # evaluated on the items a function hands it, never on the scope
        for c in ch:
            _members(c, _OTHER, root, out)
        return _OTHER
    if t in ("index_expression", "projection", "filter_projection", "value_projection", "flatten"):
        if _members(ch[0], base, root, out) is not _OTHER:
            raise _Whole
        for c in ch[1:]:
            _members(c, _OTHER, root, out)
        return _OTHER
    # functions, comparisons, and/or/not, multi-selects: each operand is evaluated on `base`,
    # and an operand that is the root (or the scope holding it) hands its whole value on
    for c in ch:
        if _members(c, base, root, out) is not _OTHER:
            raise _Whole
    return _OTHER


def token_offset(text: str, steps: list) -> int:
    """Character offset of the last of `steps` (a path's names) in the expression, for the caret."""
    names = [s for s in steps if s not in (ITEM, ANY)]
    if not names:
        return 0
    # the dotted run up to that name, when the expression spells it so
    for k in range(len(names), 0, -1):
        run = r"\s*\.\s*".join(re.escape(n) for n in names[-k:])
        m = re.search(r"(?<![\w.'\"])" + run + r"(?!\w)" if k == len(names) else r"(?<=\.)" + run + r"(?!\w)", text)
        if m:
            return m.end() - len(names[-1])
    m = re.search(r"(?<!\w)" + re.escape(names[-1]) + r"(?!\w)", text)
    return m.start() if m else 0


def nearest(word: str, choices, cutoff: float = 0.6) -> str | None:
    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def near_typo(word: str, choices) -> str | None:
    """A choice `word` misspells by one swapped pair of neighbours or one wrong letter (`swtich`,
    `lookpu`, `cosnt`): close enough that a literal key of that spelling is a mistake."""
    for c in choices:
        if len(c) != len(word) or len(c) < 4 or c == word:
            continue
        diff = [i for i in range(len(c)) if c[i] != word[i]]
        if len(diff) == 1:
            return c
        if len(diff) == 2 and diff[1] == diff[0] + 1 and c[diff[0]] == word[diff[1]] and c[diff[1]] == word[diff[0]]:
            return c
    return None
