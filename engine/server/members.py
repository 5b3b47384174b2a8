"""A request's `tools` decoded and checked once per distinct text.

Codex and Claude Code send the same `tools` array with every request of a session: 5-17 KB, about
85% of what msgspec spends decoding their bodies, and most of what the schema and nesting checks
walk. Where the body's `tools` text is one seen before (looked up by its first bytes, then
compared whole), the rest of the body is decoded around it and `tools` is the value
decoded then. Any other body that holds `"tools"` is split into its top-level members as raw
text (msgspec.Raw: scanned, not built), so that its `tools` text can be kept. The checks a kept
value passed (the client schema, the nesting limit) are not run on it again: the rest of the
body is checked on its own. Each top-level member is independent in the client
schemas (no rule at the top ties one member to another), so the body is valid exactly when the
rest is and the tools were.

The value is shared by the requests that sent the same text. Nothing in the gateway changes a
client body in place (specs build new values); the one kind of rule that can write into a
request's objects, a stream `put`/`append` on a value a `set` may have aliased, bumps
program.MUTATIONS, and the memo then starts over rather than hand out a value that may have
changed. The kept value's JSON text is written once too, where an answer echoes it (the
Responses API's `tools`, program.SHARED). Bounded in entries and in bytes of text, least
recently used first out; a full memo learns a new text only as admission.py says (with more
clients than it holds in turn, it keeps most of those it holds until they come back)."""
from __future__ import annotations

import secrets
from collections import OrderedDict

import msgspec

from .. import jsontext
from ..program import KEPT_TEXTS, MUTATIONS, SHARED, share, shared_list_raw, shared_raw, unshare
from .admission import Admission

MEMBER = "tools"
MEMBER_KEY = b'"tools"'
MIN_BODY = 2048      # below this the whole body decodes faster than it splits
MIN_MEMBER = 1024    # a shorter member decodes faster than it is looked up
MAX_ENTRIES = KEPT_TEXTS
MAX_BYTES = 4 << 20  # of member text kept: 128 texts of 32 KB

HEAD = 48            # bytes of a kept text it is looked up by
_JSON_SPACE = (b" ", b"\t", b"\n", b"\r")

_split = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
# what stands in for a kept text while the rest of a body is decoded: no client can send it
_MARK = "\u0000members-" + secrets.token_hex(16)
_MARK_TEXT = msgspec.json.encode(_MARK)
_decode = jsontext.decode


class Entry:
    """One member text and what is known of it."""
    __slots__ = ("text", "value", "valid", "depth_ok", "used")

    def __init__(self, text: bytes, value):
        self.text = text
        self.value = value
        self.valid: set = set()      # schema ids the member passed (as part of a valid body)
        self.depth_ok: set = set()   # nesting limits a body holding it passed


class Memo:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES, admission: Admission | None = None):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.admission = admission or Admission()
        # looked up by length, then compared: hashing 17 KB of text would cost five times the
        # comparison of texts of equal length
        self.by_len: dict[int, list[Entry]] = {}
        self.by_head: dict[bytes, list[Entry]] = {}  # where a body's `tools` text starts
        self.order: OrderedDict[Entry, None] = OrderedDict()  # least recently used first
        self.by_id: dict[int, Entry] = {}
        self.size = 0
        self.gen = MUTATIONS[0]
        self.hits = self.misses = 0

    @property
    def entries(self) -> dict[bytes, Entry]:
        return {e.text: e for e in self.order}

    def clear(self):
        for entry in self.order:
            unshare(entry.value)
        self.by_len.clear()
        self.by_head.clear()
        self.order.clear()
        self.by_id.clear()
        self.size = 0
        self.gen = MUTATIONS[0]

    def load(self, raw: bytes):
        """(body, entry of its tools; None: a new text the memo did not admit), or None when this
        body is not read here: no tools, a short body, or text msgspec refuses (the caller's
        whole-body path words it). With no entries allowed (turned off), no body is."""
        if len(raw) < MIN_BODY or not self.max_entries:
            return None
        if self.gen != MUTATIONS[0]:
            self.clear()
        keys = _key_positions(raw)
        at = next(keys, -1)
        if at < 0:
            return None
        if self.order:
            found = self._known(raw, at, keys)
            if found is not None:
                return found
        try:
            parts = _split(raw)
        except msgspec.DecodeError:  # not an object, not UTF-8, not JSON: the caller's path
            return None
        member = parts.get(MEMBER)
        if member is None or len(member) < MIN_MEMBER:
            return None
        text = bytes(member)
        entry = None
        for known in self.by_len.get(len(text), ()):
            if known.text == text:
                entry = known
                break
        body = {}
        try:
            for k, v in parts.items():
                body[k] = entry.value if k == MEMBER and entry is not None else _decode(v)
        except msgspec.DecodeError:
            return None
        if entry is None:
            self.misses += 1
            if self.admission.admit(self.order, self.max_entries, self.size, len(text), self.max_bytes):
                entry = self._add(text, body[MEMBER])
        else:
            self.hits += 1
            self._used(entry)
        return body, entry

    def _known(self, raw: bytes, at: int, keys):
        """The body read around a kept text that is its `tools`. After each `"tools":` in the
        body (at `at`, then each of `keys`), the text is looked up by its first HEAD bytes and
        compared whole; the rest is then decoded with a marker in the text's place, which must
        come out as `tools` (the key may also sit inside a string, or deeper). A dict lookup per
        key found, then the texts that begin alike, the most recently used first: 1-2 µs where
        splitting the body costs 8-26. The text around the marker is joined from views of the
        body: slices of a 150 KB body would cost 25 times the one copy."""
        by_head = self.by_head
        while at >= 0:
            v = at + len(MEMBER_KEY)
            while raw[v:v + 1] in _JSON_SPACE:
                v += 1
            if raw[v:v + 1] == b":":
                v += 1
                while raw[v:v + 1] in _JSON_SPACE:
                    v += 1
                for entry in reversed(by_head.get(raw[v:v + HEAD], ())):  # the most recently used first
                    text = entry.text
                    if not raw.startswith(text, v):
                        continue
                    view = memoryview(raw)
                    try:
                        body = _decode(b"".join((view[:v], _MARK_TEXT, view[v + len(text):])))
                    except msgspec.DecodeError:
                        return None
                    if type(body) is dict and body.get(MEMBER) == _MARK:
                        body[MEMBER] = entry.value
                        self.hits += 1
                        self._used(entry)
                        return body, entry
                    break  # this `"tools"` was not the body's own: the next one may be
            at = next(keys, -1)
        return None

    def _used(self, entry: Entry):
        """Most recently used: last out of the memo, first looked at among the texts that begin
        alike (clients of one kind send tools that differ only past their first bytes)."""
        self.order.move_to_end(entry)
        self.admission.stamp(entry)
        alike = self.by_head[entry.text[:HEAD]]
        if alike[-1] is not entry:
            alike.remove(entry)
            alike.append(entry)

    def _add(self, text: bytes, value) -> Entry:
        entry = Entry(text, value)
        self.admission.stamp(entry)
        _index(self.by_len, len(text), entry)
        _index(self.by_head, text[:HEAD], entry)
        self.order[entry] = None
        self.by_id[id(value)] = entry
        share(value)
        self.size += len(text)
        while len(self.order) > self.max_entries or self.size > self.max_bytes:
            old, _ = self.order.popitem(last=False)
            _unindex(self.by_len, len(old.text), old)
            _unindex(self.by_head, old.text[:HEAD], old)
            self.size -= len(old.text)
            if self.by_id.get(id(old.value)) is old:
                del self.by_id[id(old.value)]
            unshare(old.value)
        return entry

    def entry_of(self, value) -> Entry | None:
        """The entry whose value `value` is (the very object), while it is kept."""
        entry = self.by_id.get(id(value))
        if entry is None or entry.value is not value or self.gen != MUTATIONS[0]:
            return None
        return entry


FRONT = 2048  # bytes at the start of a body searched first for its tools


def _key_positions(raw: bytes):
    """Where MEMBER_KEY starts in `raw`: those in its first FRONT bytes, then the others from
    the end. Clients send their tools near the start or after the conversation, which grows
    every turn: searched from the start, a 150 KB body's tools take 70 µs to find, from the end
    1 µs."""
    front = FRONT - len(MEMBER_KEY) + 1  # a key starting here or later ends past FRONT
    at = raw.find(MEMBER_KEY, 0, FRONT)
    while at >= 0:
        yield at
        at = raw.find(MEMBER_KEY, at + 1, FRONT)
    at = raw.rfind(MEMBER_KEY, front)
    while at >= 0:
        yield at
        at = raw.rfind(MEMBER_KEY, front, at)


def _index(index: dict, key, entry: Entry):
    index.setdefault(key, []).append(entry)


def _unindex(index: dict, key, entry: Entry):
    same = index[key]
    same.remove(entry)
    if not same:
        del index[key]


MEMO = Memo()


def shared_members(v: dict) -> dict:
    """`v`, or a copy whose shared members (program.SHARED) are their kept JSON text, for the
    encoder to copy rather than write again; a list member whose first or middle item is shared
    (the tools of a translated request, the earlier turns of its conversation) is written from
    its items' kept texts."""
    out = None
    for k, x in v.items():
        raw = None
        if id(x) in SHARED:
            kept = shared_raw(x)
            if kept is not None:
                raw = msgspec.Raw(kept)
        elif type(x) is list and x and (id(x[0]) in SHARED or id(x[len(x) // 2]) in SHARED):
            raw = shared_list_raw(x)
        if raw is not None:
            if out is None:
                out = dict(v)
            out[k] = raw
    return v if out is None else out


def without_member(body: dict) -> dict:
    # a copy in C, then one removal: a comprehension pays a test per member
    out = dict(body)
    out.pop(MEMBER, None)
    return out
