"""Which newcomer a full memo of client bodies takes in: the history memo's conversations
(history.py) and the tools memo's texts (members.py).

Both memos are least recently used first out, and learning a newcomer costs more than reading it
plainly: the extra scan of the body, then what the item, filter and list-operation memos keep of
each item it shares. With more sessions (or clients with tools of their own) than a memo holds,
each coming back after the others, a memo that learned every newcomer let each go before it came
back: every request paid for learning and none was reused. Measured through `engine serve`, CPU
per request against the same gateway with the memo turned off: 256 Codex sessions 60 turns in,
in turn, about 2 times; 256 clients with tools of their own, in turn, 1.6 (Codex Responses) to
1.9 (Claude Code) times.

So a full memo takes a newcomer in at once only when its least recently used entry has not been
used for `stale_after` seconds (a session that ended, a client gone); otherwise one newcomer in
`every`. Those it takes in survive about capacity x `every` newcomers, so with up to that many
sessions in turn they are there when they come back, and reused; the others are read plainly, as
with no memo.
"""
from __future__ import annotations

import time
from collections import OrderedDict

EVERY = 64          # when full: one newcomer in this many is learned...
STALE_AFTER = 300.0  # ...unless the least recently used entry has not been used for this long


class Admission:
    __slots__ = ("every", "stale_after", "clock", "full_misses", "refused")

    def __init__(self, every: int = EVERY, stale_after: float = STALE_AFTER, clock=time.monotonic):
        self.every, self.stale_after, self.clock = every, stale_after, clock
        self.full_misses = 0  # newcomers met while the memo was full of recent entries
        self.refused = 0  # newcomers not learned (engine_memo_refused_total)

    def admit(self, order: OrderedDict, max_entries: int, held: int, size: int, max_bytes: int) -> bool:
        """Whether a memo whose entries are `order` (least recently used first, each stamped by
        stamp()), holding `held` bytes of at most `max_bytes`, learns a newcomer of `size` bytes.
        Never one over the byte bound: it would only push every other entry out, then itself.
        (A memo turned off, of no entries, reads no body for it and asks nothing here.)"""
        if size > max_bytes:
            self.refused += 1
            return False
        full = len(order) >= max_entries or held + size > max_bytes
        if not full or not order or self.clock() - next(iter(order)).used >= self.stale_after:
            return True
        self.full_misses += 1
        if self.full_misses % self.every == 0:
            return True
        self.refused += 1
        return False

    def stamp(self, entry) -> None:
        """Marks `entry` used now (learned, or reused)."""
        entry.used = self.clock()
