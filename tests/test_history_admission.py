"""Which conversations the history memo learns when it is full, and how it finds one among many
that begin alike (engine/server/history.py). Every body still reads as the whole decode reads
it; what changes is which of them are kept and reused."""
from __future__ import annotations

import json
import random
from pathlib import Path

import msgspec
import pytest

from engine import program
from engine.server import history as history_mod
from engine.server import translate
from engine.server.admission import Admission
from engine.server.history import History

CAPTURE = Path(__file__).parent / "fixtures" / "clients" / "codex-0.94-chat-req1.json"
SCHEMA = "openai/chat.request"
WORDS = [f"w{i}" for i in range(200)] + "the of and to in is that for it as was with".split()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _text(session: int, turn: int, words: int = 120) -> str:
    """Prose of its own for each turn of each session, as real conversations have throughout."""
    r = random.Random(session * 10_007 + turn)
    return " ".join(r.choice(WORDS) for _ in range(words))


def _session(s: int, turns: int, prefix: str = "", words: int = 120) -> dict:
    """Codex 0.94's chat request, `turns` turns into session `s`; `prefix` begins its first
    message (sessions of one client begin alike: its instructions, the environment)."""
    body = json.loads(CAPTURE.read_text())["body"]
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": _text(s, i, words)} for i in range(turns)]
    msgs[0]["content"] = prefix + msgs[0]["content"]
    body["messages"] = body["messages"][:1] + msgs
    return body


def _raw(body: dict) -> bytes:
    return json.dumps(body).encode()


@pytest.fixture
def use(monkeypatch):
    """Installs a History as the gateway's and returns it; its items are unshared afterwards."""
    made = []

    def install(h: History) -> History:
        monkeypatch.setattr(translate, "HISTORY", h)
        made.append(h)
        return h
    yield install
    for h in made:
        h.clear()


def _parse(raw: bytes) -> dict:
    body = translate.parse_body(raw, SCHEMA)
    assert body == msgspec.json.decode(raw)
    return body


def _kept(body: dict) -> bool:
    return all(id(m) in program.SHARED_ITEMS for m in body["messages"])


def test_a_full_memo_learns_one_conversation_in_every(use):
    clock = Clock()
    h = use(History(max_entries=4, admission=Admission(4, clock=clock)))
    first = [_parse(_raw(_session(s, 10))) for s in range(4)]
    assert len(h.order) == 4 and all(_kept(b) for b in first)
    later = [_parse(_raw(_session(s, 10))) for s in range(4, 12)]
    # the 4th and the 8th conversation met while full were learned; the others read plainly
    assert [_kept(b) for b in later] == [False, False, False, True, False, False, False, True]
    assert h.admission.full_misses == 8 and len(h.order) == 4
    # each learned one went in for the least recently used: sessions 0 and 1
    assert not _kept(first[0]) and not _kept(first[1]) and _kept(first[2]) and _kept(first[3])


def test_sessions_in_turn_beyond_the_memo_are_reused_in_part(use):
    """More sessions than the memo holds, each coming back after all the others: learning every
    one, the memo let each go before it came back and reused none; learning few, it keeps most
    of what it holds until it comes back."""
    bodies = [_raw(_session(s, 10)) for s in range(12)]
    counts = {}
    for every in (1, 8):
        h = use(History(max_entries=4, admission=Admission(every, clock=Clock())))
        learned = []
        add = h._add
        h._add = lambda e, add=add: learned.append(e) or add(e)
        for _ in range(12):
            for raw in bodies:
                _parse(raw)
        counts[every] = (h.hits, len(learned))
        h.clear()
    assert counts[1] == (0, 144)  # every request learned, none reused
    hits, learned = counts[8]
    assert hits > learned and learned <= 4 + 144 // 8  # each one learned was reused, on average


def test_a_stale_conversation_makes_room_at_once(use):
    clock = Clock()
    h = use(History(max_entries=2, admission=Admission(100, stale_after=60.0, clock=clock)))
    a, b = (_parse(_raw(_session(s, 10))) for s in (0, 1))
    clock.now += 50
    for s in (0, 1):  # both used again: 0 is the least recently used, used 50 s after it was learned
        _parse(_raw(_session(s, 10)))
    clock.now += 20
    c = _parse(_raw(_session(2, 10)))
    assert not _kept(c) and h.admission.full_misses == 1  # 0 was used 20 s ago: not stale
    clock.now += 41
    d = _parse(_raw(_session(3, 10)))  # 0 unused for 61 s: it goes, 3 comes in
    assert _kept(d) and not _kept(a) and _kept(b) and h.admission.full_misses == 1


@pytest.mark.parametrize("turns", [30, 80])
def test_sessions_that_begin_alike_for_kbs_are_told_apart_by_their_probe(use, monkeypatch, turns):
    """Twenty sessions whose first 10 KB are the same: a later turn of one compares its list with
    its own kept list only, not with the nineteen others."""
    h = use(History(admission=Admission(clock=Clock())))
    prefix = "Environment and instructions the client sends first. " * 190  # 10 KB
    firsts = [_parse(_raw(_session(s, turns, prefix))) for s in range(20)]
    assert len(h.order) == 20 and len({e.probe for e in h.order}) == 20
    compared = []
    longest = history_mod._longest
    monkeypatch.setattr(history_mod, "_longest",
                        lambda raw, v, near, cands: compared.append((len(near), len(cands))) or longest(raw, v, near, cands))
    for s in (7, 0, 19):
        later = _session(s, turns, prefix)
        later["messages"].append({"role": "user", "content": "and now?"})
        body = _parse(_raw(later))
        assert all(x is y for x, y in zip(firsts[s]["messages"], body["messages"]))
    assert compared == [(1, 20)] * 3 and h.hits == 3


@pytest.mark.parametrize("last_words", [80, 8000])
def test_a_long_conversation_with_its_last_item_rewritten_is_found(use, monkeypatch, last_words):
    """A client that rewrites its last message (Claude Code moving its cache breakpoint): the
    probe is taken before the last item, so the kept list is found by it past 64 KB, also where
    the last item is large enough to hold the depth a whole list's probe would take."""
    h = use(History(admission=Admission(clock=Clock())))
    before = _session(1, 100 if last_words > 80 else 240, words=80)
    before["messages"][-1]["content"] = _text(1, 999, last_words)
    first = _parse(_raw(before))
    entry = next(iter(h.order))
    assert len(entry.span) > 65536 + 48 and entry.probe[1] + 48 <= entry.cut
    assert entry.probe[1] == (65536 if last_words == 80 else 16384)
    found = []
    longest = history_mod._longest
    monkeypatch.setattr(history_mod, "_longest", lambda raw, v, near, cands: found.append(near) or longest(raw, v, near, cands))
    after = json.loads(_raw(before))
    after["messages"][-1]["content"] = "(edited) " + after["messages"][-1]["content"]
    after["messages"].append({"role": "assistant", "content": "ok"})
    second = _parse(_raw(after))
    n = len(first["messages"]) - 1
    assert found == [[entry]] and h.hits == 1
    assert all(x is y for x, y in zip(first["messages"][:n], second["messages"][:n]))
    assert second["messages"][n] is not first["messages"][n]


@pytest.mark.parametrize("edited", [3, 25, 47])
def test_an_edited_item_reuses_the_items_before_it(use, edited):
    """A client that rewrites an item in the middle (a compaction, an edited message): the items
    before it are reused, found by halves, and the rest read anew."""
    h = use(History(admission=Admission(clock=Clock())))
    before = _session(2, 50)
    first = _parse(_raw(before))
    after = json.loads(_raw(before))
    at = edited + 1  # the system message comes first
    after["messages"][at]["content"] = "rewritten: " + after["messages"][at]["content"]
    second = _parse(_raw(after))
    assert h.hits == 1
    assert all(x is y for x, y in zip(first["messages"][:at], second["messages"][:at]))
    assert not any(x is y for x, y in zip(first["messages"][at:], second["messages"][at:]))


def test_a_conversation_over_the_byte_bound_does_not_push_the_others_out(use):
    h = use(History(max_bytes=60_000, admission=Admission(every=1, clock=Clock())))
    a, b = (_parse(_raw(_session(s, 10))) for s in (0, 1))
    big = _parse(_raw(_session(2, 200)))
    assert len(_raw(_session(2, 200))) > 100_000
    assert _kept(a) and _kept(b) and not _kept(big) and len(h.order) == 2
