"""A conversation's earlier turns decoded and checked once.

Clients send the whole conversation again with every request: Codex its Responses `input`, chat
clients and Claude Code their `messages`. Turn N+1's list begins with turn N's items, byte for
byte, except what a client rewrites (Claude Code moves its cache breakpoint to the new last
message). In a long session that history is most of the body, and most of what decoding it and
the schema and nesting checks cost: 145 µs of the 165 KB Codex request 60 turns in, where
comparing its bytes with kept ones costs 3.

The memo keeps, per recent conversation, the JSON text of each item of the list and the value
decoded from it. A body whose list begins with kept items (compared as bytes: a whole list sent
again, then one whose last item was rewritten, then item by item; the most recently used
conversations first, among those whose first item begins alike) is decoded with a marker in
their place, so only
its new items and its other members are decoded; the kept values are put back (the same
objects), and the schema and nesting checks skip them when they passed them as part of an
earlier body: the nesting check always (an item's depth does not depend on its neighbours), the
schema check where the schema judges each item of the list alone (schemas.items_alone: the same
item schema at every index, nothing counting or placing items but a `minItems` of one, which a
shorter list meets with its last kept item left in). A body found with errors is checked again whole, so the 400 names the
field at its real index. A body whose list begins with nothing kept is decoded as usual, and its
items' texts are kept (one more scan of it) when it holds a conversation, not a one-off prompt:
three items or more, in LEARN_BYTES or more of the body besides its known tools.

The kept items are shared items (program.SHARED_ITEMS) while an entry holds them, as a client's
tools are: what a spec's `each` makes of each of them is kept too (nodes.ItemMemo), so the
earlier turns are not translated again either.

Nothing in the gateway changes a client body's objects in place; the one kind of rule that
could (a stream `put`/`append` on a state value that may alias them) bumps program.MUTATIONS,
and the memo then starts over. Bounded in conversations and in bytes of text, least recently
used first out.

A full memo learns a conversation it does not hold only as admission.py says: at once when its
least recently used one has not been used for minutes (a session that ended), otherwise one in
many, so that with more sessions than it holds, in turn, it keeps most of what it holds until
it comes back.
"""
from __future__ import annotations

import secrets
from collections import OrderedDict

import msgspec

from ..program import MUTATIONS, share_item, unshare_item
from .admission import Admission

MEMBERS = ((b'"input"', "input"), (b'"messages"', "messages"))
FRONT = 2048          # clients write their conversation first: its key is looked for here
MIN_BODY = 2048       # a shorter body decodes faster than it is looked up
MIN_ITEMS = 3         # a list kept from a body that had none known: a conversation
MIN_MATCH = 1024      # bytes of kept items worth the splice
LEARN_BYTES = 4096    # a body's bytes, besides its kept tools, worth keeping its items
HEAD = 48             # bytes of an item's text its conversation is looked up by
TAIL = 64             # bytes at the end of a kept list compared before the whole of it
# where HEAD more bytes of a kept list are looked up besides its first ones: sessions of one
# client begin alike for KBs (its instructions, the environment), and differ past that
DEPTHS = (65536, 16384, 4096, 0)
MAX_ENTRIES = 64
MAX_BYTES = 8 << 20   # of item text kept (its values: as much again for prose, more for small objects)
_SPACE = b" \t\n\r"
_SPACE_CODES = frozenset(_SPACE)

_split = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_items = msgspec.json.Decoder(list[msgspec.Raw]).decode
# stands in for the kept items while the rest is decoded: no client can send it
MARK = "\u0000history-" + secrets.token_hex(16)
_MARK_TEXT = msgspec.json.encode(MARK)


class Entry:
    """One conversation: the text of its list's items (`span`: from the first item's first byte
    to the last item's last, as the client wrote it), where each item starts and ends in it, the
    values decoded from them, and what is known of them. It is looked up by its first HEAD bytes
    and HEAD more at the deepest of DEPTHS its list holds but for its last item (`probe`: a
    rewritten last item does not hide it). Among those found, a body is told from it by its last
    TAIL bytes (`tail`) and by those before its last item (`cut_tail`) before the whole is
    compared (`view`: prefixes of the span compared in place, not copied)."""
    __slots__ = ("member", "span", "view", "tail", "cut", "cut_tail", "probe", "starts", "ends", "values",
                 "valid", "depth_ok", "used")

    def __init__(self, member: str, span: bytes, starts: list, ends: list, values: list):
        self.member = member
        self.span = span
        self.view = memoryview(span)
        self.tail = span[-TAIL:]
        # where the list without its last item ends, when that is worth a splice (0: not)
        self.cut = cut = ends[-2] if len(ends) > 1 and ends[-2] >= MIN_MATCH else 0
        self.cut_tail = span[max(0, cut - TAIL):cut]
        fixed = cut or len(span)
        depth = next(d for d in DEPTHS if d + HEAD <= fixed or not d)
        self.probe = (member, depth, span[:HEAD], span[depth:depth + HEAD])
        self.starts = starts
        self.ends = ends
        self.values = values
        self.valid: set = set()      # schema ids of which every item was part of a valid body
        self.depth_ok: set = set()   # nesting limits a body holding them passed

    @property
    def size(self) -> int:
        return len(self.span)

    def head(self) -> bytes:
        return self.span[:HEAD]

    def prefix(self, count: int) -> tuple:
        """The span, starts and ends of the first `count` items."""
        return self.span[:self.ends[count - 1]], self.starts[:count], self.ends[:count]


class Found:
    """What the memo made of one body: the entry whose first `count` items it began with (None:
    none), and the entry kept for the body's whole list (None: not kept); one of them is there."""
    __slots__ = ("entry", "count", "new")

    def __init__(self, entry: Entry | None, count: int, new: Entry | None):
        self.entry, self.count, self.new = entry, count, new

    @property
    def member(self) -> str:
        return (self.entry or self.new).member

    def reduced(self, body: dict) -> dict:
        """`body` with its list holding only what the kept items did not cover (and the last kept
        item when that leaves nothing, for a schema's minItems)."""
        items = body[self.member]
        rest = items[self.count:] or items[self.count - 1:self.count]
        return {**body, self.member: rest}


class History:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES, admission: Admission | None = None):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.admission = admission or Admission()
        self.by_head: dict[tuple, list[Entry]] = {}  # (member, first HEAD bytes of its first item)
        self.by_probe: dict[tuple, list[Entry]] = {}  # Entry.probe
        self.order: OrderedDict[Entry, None] = OrderedDict()  # least recently used first
        self.size = 0
        self.gen = MUTATIONS[0]
        self.hits = self.misses = 0
        # the last lists handed out, for validate() to read what is known of them: id -> (list, Found)
        self.found: dict[int, tuple[list, Found]] = {}
        # id -> [item, entries holding it]: each kept item is in program.SHARED_ITEMS while one does
        self.held: dict[int, list] = {}

    def clear(self):
        for x, _ in self.held.values():
            unshare_item(x)
        self.held.clear()
        self.by_head.clear()
        self.by_probe.clear()
        self.order.clear()
        self.found.clear()
        self.size = 0
        self.gen = MUTATIONS[0]

    # -- reading a body
    def splice(self, raw: bytes):
        """(the body's text with its kept items replaced by MARK, member, entry, count), or None
        when its list begins with nothing kept."""
        if len(raw) < MIN_BODY or not self.order:
            return None
        if self.gen != MUTATIONS[0]:
            self.clear()
            return None
        for key, member in MEMBERS:
            at = raw.find(key, 0, FRONT)
            while at >= 0:
                v = _list_start(raw, at + len(key))
                if v >= 0:
                    head = raw[v:v + HEAD]
                    cands = self.by_head.get((member, head))
                    if cands:
                        near = []
                        for d in DEPTHS:
                            if v + d + HEAD <= len(raw) or not d:
                                found = self.by_probe.get((member, d, head, raw[v + d:v + d + HEAD]))
                                if found:
                                    near += reversed(found)  # the most recently kept first
                        entry, count = _longest(raw, v, near, cands)
                        if entry is not None:
                            end = v + entry.ends[count - 1]
                            view = memoryview(raw)
                            return b"".join((view[:v], _MARK_TEXT, view[end:])), member, entry, count
                at = raw.find(key, at + 1, FRONT)
        return None

    def restore(self, body, member: str, entry: Entry, count: int, spliced: bytes) -> Found | None:
        """Puts the kept values back where the marker is; None when the marker is not the first
        item of the body's own list (the key stood in a string, or deeper)."""
        if type(body) is not dict:
            return None
        items = body.get(member)
        if type(items) is not list or not items or items[0] != MARK:
            return None
        values = entry.values[:count]
        new = items[1:]
        body[member] = values + new
        self.hits += 1
        self.order.move_to_end(entry)
        self.admission.stamp(entry)
        kept = None
        if not new:
            if count == len(entry.ends):
                kept = entry
        elif len(values) + len(new) >= MIN_ITEMS:
            kept = self._extend(entry, count, spliced, new)
        return self._hand_out(body[member], Found(entry, count, kept))

    def learn(self, body, raw: bytes, skip: int = 0) -> Found | None:
        """Keeps the items of a body whose list began with nothing kept (one more scan of it),
        when the body holds a conversation: three items or more, in LEARN_BYTES or more of the
        body besides `skip` bytes of kept tools, and the memo admits it (admission.py)."""
        if len(raw) - skip < LEARN_BYTES or type(body) is not dict or not self.max_entries:
            return None
        if self.gen != MUTATIONS[0]:
            self.clear()
        for _, member in MEMBERS:
            items = body.get(member)
            if type(items) is list:
                break
        else:
            return None
        if len(items) < MIN_ITEMS:
            return None
        self.misses += 1
        if not self.admission.admit(self.order, self.max_entries, self.size, len(raw) - skip, self.max_bytes):
            return None
        try:
            listed = _split(raw)[member]
            texts = _items(listed)
        except (msgspec.DecodeError, KeyError):
            return None
        span = bytes(listed)[1:-1].strip(_SPACE)
        bounds = _bounds(span, texts, 0)
        if bounds is None or len(span) < MIN_MATCH or len(texts) != len(items):
            return None
        entry = self._add(Entry(member, span, *bounds, list(items)))
        return self._hand_out(items, Found(None, 0, entry))

    def _extend(self, old: Entry, count: int, spliced: bytes, new: list) -> Entry | None:
        """The entry of the body's whole list: `old`'s first `count` items, then the new ones."""
        member = old.member
        try:
            listed = _split(spliced)[member]
            texts = _items(listed)[1:]
        except (msgspec.DecodeError, KeyError):
            return None
        tail = bytes(listed)[1:-1].strip(_SPACE)[len(_MARK_TEXT):]
        prefix, starts, ends = old.prefix(count)
        bounds = _bounds(tail, texts, len(prefix))
        if bounds is None or len(texts) != len(new):
            return None
        entry = Entry(member, prefix + tail, starts + bounds[0], ends + bounds[1], old.values[:count] + new)
        if count >= len(old.ends) - 1:
            # the same conversation a turn later (its last item perhaps rewritten): the old list
            # will not be sent again
            self._remove(old)
        return self._add(entry)

    # -- what validate() learns
    def _hand_out(self, items: list, found: Found) -> Found:
        if len(self.found) >= 64:
            self.found.clear()  # lists read by a path that never validated them
        self.found[id(items)] = (items, found)
        return found

    def take(self, body: dict) -> Found | None:
        """What is known of the list of `body`, as load_json handed it out; once."""
        if not self.found:
            return None
        for _, member in MEMBERS:
            items = body.get(member)
            if type(items) is list:
                hit = self.found.pop(id(items), None)
                if hit is not None and hit[0] is items:
                    return hit[1]
        return None

    # -- the memo
    def _add(self, entry: Entry) -> Entry:
        self.admission.stamp(entry)
        self.by_head.setdefault((entry.member, entry.head()), []).append(entry)
        self.by_probe.setdefault(entry.probe, []).append(entry)
        self.order[entry] = None
        self.size += entry.size
        gen, held = MUTATIONS[0], self.held
        for x in entry.values:
            if type(x) is dict:
                h = held.get(id(x))
                if h is None:
                    held[id(x)] = [x, 1]
                    share_item(x, gen)
                else:
                    h[1] += 1
        while len(self.order) > self.max_entries or self.size > self.max_bytes:
            self._remove(next(iter(self.order)))
        return entry

    def _remove(self, entry: Entry):
        if self.order.pop(entry, False) is False:
            return
        for index, key in ((self.by_head, (entry.member, entry.head())), (self.by_probe, entry.probe)):
            same = index[key]
            same.remove(entry)
            if not same:
                del index[key]
        self.size -= entry.size
        held = self.held
        for x in entry.values:
            h = held.get(id(x))
            if h is not None:
                h[1] -= 1
                if h[1] == 0:
                    del held[id(x)]
                    unshare_item(x)


def _skip(raw: bytes, i: int) -> int:
    n = len(raw)
    while i < n and raw[i] in _SPACE_CODES:
        i += 1
    return i


def _list_start(raw: bytes, i: int) -> int:
    """Where the first item of the array after a key (ending at i) starts, or -1."""
    i = _skip(raw, i)
    if raw[i:i + 1] != b":":
        return -1
    i = _skip(raw, i + 1)
    if raw[i:i + 1] != b"[":
        return -1
    return _skip(raw, i + 1)


def _bounds(text: bytes, items: list, offset: int):
    """(starts, ends) of `items` (their texts, in order, between separators) in `text`, shifted
    by `offset`; None when they are not laid out so."""
    starts, ends = [], []
    pos = 0
    for i, item in enumerate(items):
        pos = _skip(text, pos)
        if i or offset:
            if text[pos:pos + 1] != b",":
                return None
            pos = _skip(text, pos + 1)
        if not text.startswith(item, pos):
            return None
        starts.append(offset + pos)
        pos += len(item)
        ends.append(offset + pos)
    return starts, ends


def _longest(raw: bytes, v: int, near: list, cands: list) -> tuple:
    """(entry, items matched) of the kept list that begins the list at `v` the furthest: among
    `near` (those found by their probe, in order), a whole list sent again, then one whose last
    item was rewritten (a moved cache breakpoint); else item by item among the four most recently
    kept of `cands` (those that begin alike); (None, 0) when none covers MIN_MATCH bytes."""
    room = len(raw) - v
    rewritten = None
    for entry in near:
        span = entry.span
        if raw.startswith(entry.tail, v + len(span) - len(entry.tail)) and raw.startswith(span, v):
            return entry, len(entry.ends)
        cut = entry.cut
        if rewritten is None and cut and cut <= room and raw.startswith(entry.cut_tail, v + cut - len(entry.cut_tail)) \
                and raw.startswith(entry.view[:cut], v):
            rewritten = entry
    if rewritten is not None:
        return rewritten, len(rewritten.ends) - 1
    best, best_n = None, 0
    for entry in cands[:-5:-1]:
        # the most items whose text begins the list: a prefix of items matches whenever a
        # longer one does, so the count is searched by halves
        view, ends = entry.view, entry.ends
        lo, hi = 0, len(ends)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if raw.startswith(view[:ends[mid - 1]], v):
                lo = mid
            else:
                hi = mid - 1
        if lo > best_n and ends[lo - 1] >= MIN_MATCH:
            best, best_n = entry, lo
    return best, best_n


HISTORY = History()
