"""What a compiled spec is and the values its actions produce: the program the compiler
(engine/compiler.py) builds and the stream runtime (engine/stream.py) and the server run. Nothing
here imports the compiler."""
from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from . import codegen
from .jsontext import dumpb, dumps, encode


def truthy(v) -> bool:
    # JMESPath truthiness: null, false, '' [] {} are false; 0 is true.
    return not (v is None or v is False or v == "" or v == [] or v == {})


class Raw(str):
    """An emitted stream item written as-is after `data: ` (e.g. [DONE])."""


END = object()  # an action ended the stream (stream runtime: nothing after it)


@dataclass
class CompiledSpec:
    name: str
    version: str
    kind: str
    file: str
    status: str = "stable"
    changes: list = field(default_factory=list)
    source: str | None = None
    target: str | None = None
    vars: tuple = ()
    checks: tuple = ()
    drops: tuple = ()  # (condition, param, reason): fields deliberately not sent upstream
    template: object = None
    usage: tuple | None = None  # (input fn, output fn): the tokens the spec reports (`usage:`)
    # stream specs
    state: dict = field(default_factory=dict)
    init: object = None
    discriminator: object = None
    handlers: dict = field(default_factory=dict)
    text_handlers: dict = field(default_factory=dict)  # the same, for the byte path (generated)
    text_init: object = None
    text_eof: object = None
    text_error: object = None
    eof: object = None
    error: object = None
    event_field: str | None = None
    sequence_field: str | None = None
    disc_key: str | None = None  # the discriminator is `event.<disc_key>`
    generated: list = field(default_factory=list)  # [(file name, Python source)]: engine/codegen.py
    item_memos: dict = field(default_factory=dict)  # spec path of an `each` -> its nodes.ItemMemo
    # the members of `req` the spec reads (compiler: names.members_read); None: it may read any
    req_members: frozenset | None = None
    # request specs: var -> (members of `src`, its value while `src` holds none of them)
    # (compiler._absent_vars)
    absent_vars: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def warm(self) -> None:
        """Makes the code objects of what every request or stream through the spec calls
        (codegen.lazy), so its first one does not pay for them. A gateway does this before it
        serves (and before its workers fork, which then share them)."""
        fns = [self.scope, self.check, self.dropped, self.template, self.initial_state, self.init,
               self.text_init, self.text_eof, self.text_error, self.eof, self.error,
               *self.handlers.values(), *self.text_handlers.values(), *(self.usage or ())]
        for fn in fns:
            codegen.warm(fn)
            codegen.warm(getattr(fn, "json", None))

    def scope(self, **values) -> dict:
        scope = dict(values)
        if self.vars:
            v = {}
            scope["vars"] = v
            for k, f in self.vars:
                v[k] = f(scope)
        return scope

    def check(self, scope):
        """First failing `checks` rule as (param, message, status, code), else None."""
        for cond, param, message, status, code in self.checks:
            if truthy(cond(scope)):
                return param, message, status, code
        return None

    def dropped(self, scope) -> list:
        """[(param, reason)] of every `drops` rule that holds, in order."""
        return [(param, reason) for cond, param, reason in self.drops if truthy(cond(scope))]

    def apply(self, **values):
        return self.template(self.scope(**values))

    def tokens(self, scope: dict) -> tuple:
        """(input, output) tokens the spec's `usage:` reports over `scope` (response specs: their
        own scope; stream specs: {state: the final state}); None where it reports no count."""
        if self.usage is None:
            return None, None
        out = []
        for fn in self.usage:
            try:
                v = fn(scope)
            except Exception:  # noqa: BLE001 - an upstream that reports no usage: nothing is counted
                v = None
            out.append(v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None)
        return tuple(out)

    def initial_state(self) -> dict:
        # scalars are shared; each container is copied (copy.deepcopy's memo bookkeeping took
        # 9.8 µs of every Responses stream, this 1.7: a JSON tree needs none)
        state = dict(self.state)
        for k, v in state.items():
            if type(v) is dict or type(v) is list:
                state[k] = json_copy(v)
        return state


def json_copy(v):
    """A JSON value with each container copied; scalars are shared."""
    if type(v) is dict:
        return {k: json_copy(x) for k, x in v.items()}
    if type(v) is list:
        return [json_copy(x) for x in v]
    return v


# Bumped by every in-place change (put, append to a list) of a state value some `set` may have
# made an alias of the request's objects: an Echo made before it no longer trusts its texts.
MUTATIONS = [0]


def mutated():
    MUTATIONS[0] += 1


# Client tools texts kept at once (engine/server/members.py), and so the lists an `each` keeps of
# them (nodes.ItemMemo): a gateway with more clients of distinct tools in turn finds none kept.
# About 60 KB each for the recorded Codex and Claude Code requests, all that is made of them included.
KEPT_TEXTS = 128

# Values requests share and nothing changes (engine/server/members.py keeps a client's `tools`;
# nodes.ItemMemo and filters what a spec made of them): id -> [the value, its JSON text (None until
# first written), MUTATIONS when it was kept, the text as UTF-8 (None until first asked)]. The
# Responses API echoes the request's tools in its answer: 10 KB written once, not per answer; a
# translated request carries the translated tools, written once too (shared_list_raw).
SHARED: dict[int, list] = {}
# The objects in a shared list (a client's tools, one by one): id -> (the item, MUTATIONS when
# kept). What an `each` makes of such an item may be kept for the next request (nodes.ItemMemo).
SHARED_ITEMS: dict[int, tuple] = {}


def share(value) -> None:
    """Marks `value` (and each object in it, when it is a list) as shared: nothing changes it
    while MUTATIONS stays where it is now."""
    gen = MUTATIONS[0]
    SHARED[id(value)] = [value, None, gen, None]
    if type(value) is list:
        for x in value:
            if type(x) is dict:
                share_item(x, gen)


def unshare(value) -> None:
    s = SHARED.get(id(value))
    if s is not None and s[0] is value:
        del SHARED[id(value)]
        _forget_filtered(value)
    if type(value) is list:
        for x in value:
            unshare_item(x)


def share_item(x: dict, gen: int) -> None:
    """Marks one object as a shared item (a client's tool, a kept turn of a conversation)."""
    SHARED_ITEMS[id(x)] = (x, gen)


def unshare_item(x) -> None:
    s = SHARED_ITEMS.get(id(x))
    if s is not None and s[0] is x:
        del SHARED_ITEMS[id(x)]


def keep(value) -> None:
    """Marks a value nothing will change (what an `each` made of a shared item, nodes.ItemMemo;
    what a filter made of a shared list, filtered_keep) as shared: its JSON text is written once
    (shared_text)."""
    SHARED[id(value)] = [value, None, MUTATIONS[0], None]


def release(value) -> None:
    s = SHARED.get(id(value))
    if s is not None and s[0] is value:
        del SHARED[id(value)]
        _forget_filtered(value)


# What each filter (`xs[?...]`, engine/expr.py) made of a shared list: id(list) -> {filter site:
# (the list, MUTATIONS, the result)}. The result is kept too (program.keep), so a filter or an
# `each` over it finds it kept in turn. Entries go with their list (unshare, release).
FILTERED: dict[int, dict] = {}


def filtered(base: list, site: int):
    """What filter `site` made of the shared list `base`, while both are kept; else None."""
    hit = FILTERED.get(id(base))
    if hit is None:
        return None
    hit = hit.get(site)
    if hit is None or hit[0] is not base or hit[1] != MUTATIONS[0]:
        return None
    return hit[2]


def filtered_keep(base: list, site: int, value: list) -> list:
    """`value`, what filter `site` made of `base`, kept when `base` is a shared list. The entry
    holds `base`, so its id names no other list until _forget_filtered drops it."""
    if not is_kept(base):
        return value
    sites = FILTERED.setdefault(id(base), {})
    old = sites.get(site)
    sites[site] = (base, MUTATIONS[0], value)
    if old is not None:
        release(old[2])
    keep(value)
    return value


def _forget_filtered(base) -> None:
    sites = FILTERED.pop(id(base), None)
    if sites is not None:
        for _, _, value in sites.values():
            release(value)


def is_kept(v) -> bool:
    """Whether `v` is a shared value nothing has changed since it was kept."""
    s = SHARED.get(id(v))
    return s is not None and s[0] is v and s[2] == MUTATIONS[0]


def shared_text(v) -> str | None:
    """The JSON text of a shared value, encoded once; None for any other value."""
    s = SHARED.get(id(v))
    if s is None or s[0] is not v or s[2] != MUTATIONS[0]:
        return None
    if s[1] is None:
        s[1] = dumps(v)
    return s[1]


def shared_raw(v) -> bytes | None:
    """shared_text(v) as UTF-8, encoded once; None for any other value. A value only ever
    written as bytes (a kept turn of a conversation) keeps no text besides."""
    s = SHARED.get(id(v))
    if s is None or s[0] is not v or s[2] != MUTATIONS[0]:
        return None
    if s[3] is None:
        s[3] = dumpb(v) if s[1] is None else s[1].encode("utf-8", "surrogatepass")
    return s[3]


def shared_list_raw(items: list) -> msgspec.Raw | None:
    """The JSON text of a list whose first or middle item is shared, each shared item written
    from its kept text and the others encoded now (a translated request's tools: kept values,
    the last one new where a cache breakpoint was merged into it; its conversation: the earlier
    turns kept, the new ones not); None for any other list."""
    if not items or not (is_kept(items[0]) or is_kept(items[len(items) // 2])):
        return None
    parts = []
    for x in items:
        raw = shared_raw(x)
        parts += (b",", dumpb(x) if raw is None else raw)
    parts[0] = b"["
    parts.append(b"]")
    return msgspec.Raw(b"".join(parts))  # one copy of the texts: a conversation's are 100s of KB


class Echo:
    """The JSON text of the request's members (`req.tools`, `req.text`, ...) kept for one stream.
    A Responses stream echoes the request in response.created, response.in_progress and
    response.completed (its 10 KB of tools three times): an object or array the request holds
    at the top, found under the same name in a wide object written to the stream, is encoded
    once and spliced in after that (msgspec.Raw): the same bytes. Only a stream rule can
    change the request, by put/append on a state value that may alias it; those bump
    MUTATIONS, which retires the texts."""
    __slots__ = ("req", "texts", "gen")

    def __init__(self, req):
        self.req = req
        self.texts: dict = {}  # name -> (the member, its text)
        self.gen = MUTATIONS[0]

    def dumps(self, v: dict) -> str:
        """dumps(v), the request's members among v's written from their kept text."""
        req = self.req
        if self.gen != MUTATIONS[0] or type(req) is not dict:
            return dumps(v)
        spliced = None
        texts = self.texts
        for k, x in req.items():
            if v.get(k) is not x or not (type(x) is list or type(x) is dict):
                continue
            kept = texts.get(k)
            if kept is None or kept[0] is not x:
                try:
                    shared = shared_raw(x)  # a kept value's text is not copied into each stream
                    kept = texts[k] = (x, msgspec.Raw(encode(x) if shared is None else shared))
                except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
                    return dumps(v)  # what msgspec refuses: the json module writes all of v
            if spliced is None:
                spliced = dict(v)
            spliced[k] = kept[1]
        if spliced is None:
            return dumps(v)
        try:
            return encode(spliced).decode()
        except (TypeError, UnicodeEncodeError, msgspec.EncodeError):
            return dumps(v)


class TextOut(list):
    """What the actions of one upstream read emit on the byte path (StreamTranslator.feed):
    finished SSE frames, in order, sequence numbers stamped as they are written. The event path
    (StreamTranslator.event) collects dicts in a plain list instead."""
    __slots__ = ("seq", "ended", "event_field", "seq_field", "memo", "echo")

    def __init__(self, seq: int, event_field: str | None, seq_field: str | None, echo: Echo | None = None):
        super().__init__()
        self.seq = seq
        self.ended = False
        self.memo = None  # (object, its JSON text): serialize.enc_memo
        self.echo = echo  # the stream's Echo: serialize.enc_memo
        self.event_field = event_field
        self.seq_field = seq_field

    def frame(self, ev):
        """An emitted value no frame writer covers, framed as StreamTranslator.encode would."""
        if type(ev) is dict:
            if self.seq_field:
                ev = {"type": ev.get("type"), self.seq_field: self.seq, **ev}
                self.seq += 1
            data = dumps(ev)
            return f"event: {ev.get(self.event_field)}\ndata: {data}\n\n" if self.event_field \
                else f"data: {data}\n\n"
        if isinstance(ev, Raw):
            return f"data: {ev}\n\n"
        return None
