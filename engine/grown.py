"""What a list operation made of a conversation, reused for the next request's, a turn longer.

Clients send the whole conversation with every request, one turn longer each time (Claude Code
also rewrites its last message, to move its cache breakpoint). A spec's filters, projections and
flattenings over it (`src.messages[].content[] | [?type=='input_audio']`, `vars.items[?role ==
'tool']`) would each walk the whole history again, item by item in Python, on every request.
They are list-homomorphic: what one makes of `a + b` is what it makes of `a`, then what it makes
of `b`. So each such site in generated code (expr.py) keeps the last list it was given and what
it made of it, per first item. A list that begins with the kept one (compared in C, identity
first) costs one comparison and the operation on its new items; one whose last kept item was
rewritten, the operation on that item twice (to find where its output began) and on the new
ones.

Only a kept conversation is looked up: a list whose first item is a shared item
(program.SHARED_ITEMS: a kept turn, engine/server/history.py, or a client's kept tool) or a kept
value (program.SHARED: what an `each` made of one, a translated turn), or a list one of these
operations made of one; each is the same objects from one request to the next. An entry holds
that first item (its root); one whose root is no longer kept is not used, and goes when the site
next meets a conversation it does not hold. So the memo holds lists of references into the
conversations the history memo keeps, never conversations of its own. Lists of fewer than RUN
items are made again, faster than looked up. Bounds: SITE_ENTRIES conversations per site, the
oldest first out. An entry made before program.MUTATIONS last moved (a stream rule that may have
changed a value in place) is not used. What is handed out is never changed in place by the
gateway, which makes and never edits JSON values."""
from __future__ import annotations

from .program import MUTATIONS, SHARED, SHARED_ITEMS

RUN = 8
SITE_ENTRIES = 16
MADE_KEEP = 256

# site (a number of expr.py's) -> {id(first item): (the list, what was made of it, MUTATIONS
# then, the root)}
_SITES: dict[int, dict] = {}
# what the last operations made of a kept conversation, for the next operation over it (a
# filter after a flattening): id -> (the list, its root)
_MADE: dict[int, tuple] = {}


def _root(items: list):
    """The kept object a list's memo entries live by, or None: the list is not a conversation
    kept by the history memo, nor what the gateway made of one, nor made of one here."""
    first = items[0]
    if _alive(first):
        return first
    m = _MADE.get(id(items))
    if m is not None and m[0] is items and _alive(m[1]):
        return m[1]
    return None


def _alive(root) -> bool:
    """Whether `root` is a shared item (a kept turn or tool) or a kept value (what an `each`
    made of one, nodes.ItemMemo: a translated turn)."""
    s = SHARED_ITEMS.get(id(root))
    if s is not None and s[0] is root:
        return True
    s = SHARED.get(id(root))
    return s is not None and s[0] is root


def common_start(old: list, items: list) -> int:
    """How many first items of `items` are `old`'s, compared in C (identity first): all of them
    (the same conversation, perhaps longer), all but the last (its last item rewritten, as Claude
    Code does to move its cache breakpoint), else 0."""
    n = len(old)
    if len(items) >= n and items[:n] == old:
        return n
    if len(items) >= n - 1 and items[:n - 1] == old[:-1]:
        return n - 1
    return 0


def grown(site: int, items: list, fn):
    """fn(items) for a list-homomorphic fn (a filter, projection or flattening), from what
    fn made of the last list this site saw that `items` begins with, where there is one."""
    root = _root(items)
    if root is None:
        return fn(items)
    entries = _SITES.get(site)
    if entries is None:
        entries = _SITES[site] = {}
    key = id(items[0])
    gen = MUTATIONS[0]
    made = None
    e = entries.pop(key, None)
    if e is not None and e[2] == gen:  # its list holds that first item: no other object has its id
        old, res = e[0], e[1]
        k = common_start(old, items)
        if k == len(old):
            made = res + fn(items[k:]) if len(items) > k else res[:]
        elif k:
            # the last kept item rewritten: its output is the end of what was made
            made = res[:len(res) - len(fn(old[-1:]))] + fn(items[k:])
    if made is None:
        made = fn(items)
    if e is None:
        # a conversation this site does not hold: those the history memo let go leave first
        for dead in [k for k, v in entries.items() if not _alive(v[3])]:
            del entries[dead]
        if len(entries) >= SITE_ENTRIES:
            del entries[next(iter(entries))]
    entries[key] = (items, made, gen, root)
    if type(made) is list and made:
        if len(_MADE) >= MADE_KEEP:
            del _MADE[next(iter(_MADE))]
        _MADE[id(made)] = (made, root)
    return made


def clear() -> None:
    _SITES.clear()
    _MADE.clear()
