"""Incremental Server-Sent Events codec.

Every upstream stream goes through :class:`SSEDecoder`, so the decoder is
written for the common case: chunks made of whole events
(``event: x\\ndata: {...}\\n\\n``) with ``\\n`` line ends.  Work is done with
C-level ``bytes``/``str`` operations (``find``, ``split``, ``decode``), one
UTF-8 decode per :meth:`SSEDecoder.feed` call, and never a per-character
Python loop.

Framing rules follow the WHATWG "event stream interpretation" algorithm:

* lines end with ``\\r\\n``, ``\\n`` or ``\\r`` (a ``\\r`` at the end of one
  chunk followed by ``\\n`` at the start of the next is a single line end);
* a line starting with ``:`` is a comment (keep-alive) and is ignored;
* ``field: value`` -- one optional space after the colon is removed; a line
  without a colon is a field with an empty value;
* ``data`` lines of one event are joined with ``\\n``;
* a blank line dispatches the event; an event without any ``data`` line is not
  dispatched (as in browsers); an event without an ``event`` line (or with an
  empty one) has the name ``None``;
* ``id`` and ``retry`` are remembered on the decoder (``last_event_id``,
  ``retry``) but not returned;
* a UTF-8 BOM at the very start of the stream is dropped; invalid UTF-8 is
  replaced with U+FFFD.

Unlike a browser, :meth:`SSEDecoder.flush` delivers a trailing event that was
not followed by a blank line (upstreams sometimes close right after the last
``data:`` line).

Why not a library: measured on the recorded streams of tests/fixtures (740 events,
one core, best of 9 runs, µs per event; this decoder / httpx-sse 0.4.3, its
SSELineDecoder and SSEDecoder behind an incremental UTF-8 decoder / sseclient-py
1.9.0): one event per read 0.77 / 2.08 / 2.75; the whole stream in one read
0.60 / 1.49 / 2.67; 4 KB reads 0.58 / 1.43 / 2.71.  A stream spec's whole work
is 3-5 µs an event (``engine bench``'s micro-benchmark): httpx-sse would add a
fifth to nearly a half to it, sseclient-py two fifths to three quarters.  Neither bounds the bytes buffered for one event;
httpx-sse drops a last event that no blank line follows, and sseclient-py reads
from a blocking iterator, not from chunks as they arrive.
"""

from __future__ import annotations

import re

__all__ = ["SSEDecoder", "SSEDecodeError", "encode", "COMMENT_KEEPALIVE"]

COMMENT_KEEPALIVE: bytes = b": keep-alive\n\n"

_BOM = b"\xef\xbb\xbf"
_NAMED = re.compile(r"event: ([^\n]*)\ndata: ([^\n]*)\n\n")
_DATA = re.compile(r"data: ([^\n]*)\n\n")
_DEFAULT_MAX_EVENT_BYTES = 64 * 1024 * 1024


class SSEDecodeError(ValueError):
    """Raised when a single pending event grows beyond ``max_event_bytes``."""


class SSEDecoder:
    """Bytes in, complete events out.

    Tolerates any framing: ``\\n``, ``\\r\\n`` or ``\\r`` line ends, events split
    across :meth:`feed` calls anywhere (mid-line, mid-UTF-8 sequence, between
    ``\\r`` and ``\\n``), comment lines (``:`` keep-alives) skipped, multiple
    ``data:`` lines joined with ``\\n``, ``data:`` with or without one space
    after the colon, an event with no ``event:`` line, and a trailing event
    without a blank line delivered by :meth:`flush`.

    ``max_event_bytes`` bounds the bytes buffered for one incomplete event (a
    misbehaving upstream cannot make the gateway buffer without limit);
    exceeding it raises :class:`SSEDecodeError`.  ``0`` or ``None`` disables
    the limit.
    """

    __slots__ = ("_buf", "_pre", "_skip_lf", "_bom_done", "_max", "last_event_id", "retry")

    def __init__(self, max_event_bytes: int | None = _DEFAULT_MAX_EVENT_BYTES) -> None:
        # Bytes of the incomplete trailing event, line ends already normalised
        # to b"\n".  Always starts at a line start, never holds a complete event.
        self._buf = bytearray()
        # The previous chunk ended with b"\r": drop one b"\n" opening the next.
        self._skip_lf = False
        # The stream start has not been checked for a UTF-8 BOM yet.
        self._bom_done = False
        # _skip_lf or not _bom_done: one test on the hot path.
        self._pre = True
        self._max = max_event_bytes or 0
        self.last_event_id: str = ""
        self.retry: int | None = None

    # ------------------------------------------------------------------ feed
    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        """Add ``chunk``; return the events it completed, in order."""
        if not chunk:
            return []
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        if self._pre:
            chunk = self._prelude(chunk)
            if not chunk:
                return []
        if 13 in chunk:  # b"\r" (int membership is a plain memchr)
            # A trailing b"\r" may be the first half of b"\r\n": end the line
            # now and swallow a b"\n" that opens the next chunk.
            if chunk[-1] == 13:
                self._skip_lf = self._pre = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

        # Decode everything up to and including the last blank line; keep the
        # rest (an incomplete event) as bytes.  ``text`` ends with "\n\n".
        buf = self._buf
        if buf:
            # Only the new bytes (plus the last old byte) can hold a new
            # boundary: avoids rescanning a large pending event.
            start = len(buf) - 1
            if self._max and len(buf) + len(chunk) > self._max and b"\n\n" not in chunk \
                    and not (buf[-1] == 10 and chunk[:1] == b"\n"):
                self._overflow()  # refused before the bytes are buffered
            buf += chunk
            end = buf.rfind(b"\n\n", start)
            if end < 0:
                if self._max and len(buf) > self._max:
                    self._overflow()
                return []
            end += 2
            if end == len(buf):
                text = buf.decode("utf-8", "replace")
                buf.clear()
            else:
                text = buf[:end].decode("utf-8", "replace")
                del buf[:end]
        elif chunk.endswith(b"\n\n"):  # the common case: whole events only
            text = chunk.decode("utf-8", "replace")
        else:
            end = chunk.rfind(b"\n\n")
            if end < 0:
                if self._max and len(chunk) > self._max:
                    self._overflow()  # refused before the bytes are buffered
                buf += chunk
                if self._max and len(buf) > self._max:
                    self._overflow()
                return []
            end += 2
            text = chunk[:end].decode("utf-8", "replace")
            buf += chunk[end:]

        # Fastest path: the whole text is "event: X\ndata: Y\n\n" blocks (Anthropic) or
        # "data: Y\n\n" blocks (OpenAI). One C-level findall; the matches tile the text exactly
        # when their lengths add up to it (they cannot overlap), so nothing else is in it. A read
        # of one such block, as an upstream writing events apart sends them, is cut by hand.
        if text.startswith("event: "):
            nl = text.find("\n", 7)
            if text.startswith("data: ", nl + 1) and text.find("\n", nl + 7) == len(text) - 2:
                return [(text[7:nl] or None, text[nl + 7:-2])]
            found = _NAMED.findall(text)
            if len(text) == 16 * len(found) + sum([len(e) + len(d) for e, d in found]) \
                    and "event: \n" not in text:
                return found
        elif text.startswith("data: "):
            if text.find("\n", 6) == len(text) - 2:
                return [(None, text[6:-2])]
            data = _DATA.findall(text)
            if len(text) == 8 * len(data) + sum(map(len, data)):
                return [(None, d) for d in data]

        out: list[tuple[str | None, str]] = []
        append = out.append
        startswith = text.startswith
        find = text.find
        pos = 0
        size = len(text)
        while pos < size:
            # Fast path 1: "event: X\ndata: Y\n\n" (Anthropic style).
            if startswith("event: ", pos):
                nl = find("\n", pos)
                if startswith("data: ", nl + 1):
                    nl2 = find("\n", nl + 1)
                    # text ends with "\n\n", so nl2 + 1 < size here.
                    if text[nl2 + 1] == "\n":
                        append((text[pos + 7 : nl] or None, text[nl + 7 : nl2]))
                        pos = nl2 + 2
                        continue
            # Fast path 2: "data: Y\n\n" (OpenAI style).
            elif startswith("data: ", pos):
                nl = find("\n", pos)
                if text[nl + 1] == "\n":
                    append((None, text[pos + 6 : nl]))
                    pos = nl + 2
                    continue
            elif text[pos] == "\n":  # extra blank line: nothing to dispatch
                pos += 1
                continue
            # General path: one block of lines up to the next blank line
            # (always found: text[pos] is not "\n" and text ends with "\n\n").
            end = find("\n\n", pos)
            ev = self._parse_block(text[pos:end])
            if ev is not None:
                append(ev)
            pos = end + 2
        return out

    # ----------------------------------------------------------------- flush
    def flush(self) -> list[tuple[str | None, str]]:
        """End of stream: deliver a trailing event not followed by a blank line.

        Also resets the framing state, so the decoder can be reused.
        """
        buf = self._buf
        self._skip_lf = False
        self._bom_done = False
        self._pre = True
        if not buf:
            return []
        text = buf.decode("utf-8", "replace")
        buf.clear()
        out: list[tuple[str | None, str]] = []
        for block in text.split("\n\n"):
            if block:
                ev = self._parse_block(block)
                if ev is not None:
                    out.append(ev)
        return out

    # --------------------------------------------------------------- helpers
    def _parse_block(self, block: str) -> tuple[str | None, str] | None:
        """General path: one event's lines (no blank line inside)."""
        event: str | None = None
        data: list[str] | None = None
        for line in block.split("\n"):
            if not line:
                continue
            colon = line.find(":")
            if colon == 0:
                continue  # comment / keep-alive
            if colon < 0:
                field, value = line, ""
            else:
                field = line[:colon]
                value = line[colon + 1 :]
                if value[:1] == " ":
                    value = value[1:]
            if field == "data":
                if data is None:
                    data = [value]
                else:
                    data.append(value)
            elif field == "event":
                event = value or None
            elif field == "id":
                if "\0" not in value:
                    self.last_event_id = value
            elif field == "retry":
                if value.isascii() and value.isdigit():
                    self.retry = int(value)
            # any other field is ignored, as the spec says
        if data is None:
            return None
        return (event, data[0] if len(data) == 1 else "\n".join(data))

    def _prelude(self, chunk: bytes) -> bytes:
        """Rare cases at a chunk start: the b"\n" of a split b"\r\n", a BOM."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 10:  # completes a b"\r\n" split across chunks
                chunk = chunk[1:]
        if chunk and not self._bom_done:
            chunk = self._strip_bom(chunk)
        self._pre = not self._bom_done
        return chunk

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Drop a UTF-8 BOM at the very start of the stream (maybe split)."""
        buf = self._buf
        head = bytes(buf) + chunk if buf else chunk
        if len(head) < 3 and _BOM.startswith(head):
            # Could still become a BOM: keep it pending, undecided.
            buf[:] = head
            return b""
        self._bom_done = True
        if buf:
            buf.clear()
        if head.startswith(_BOM):
            return head[3:]
        return head

    def _overflow(self) -> None:
        size = len(self._buf)
        self._buf.clear()
        raise SSEDecodeError(
            f"SSE event exceeds {self._max} bytes without a blank line ({size} bytes buffered)"
        )


def encode(data: str, event: str | None = None) -> bytes:
    """Encode one event: ``event: X\\ndata: ...\\n\\n``.

    Multi-line ``data`` (``\\n``, ``\\r\\n`` or ``\\r``) becomes several
    ``data:`` lines, so :class:`SSEDecoder` gives back exactly ``data``.
    ``event`` (if not ``None`` or empty) must not contain a line break.
    """
    if "\n" in data or "\r" in data:
        if "\r" in data:
            data = data.replace("\r\n", "\n").replace("\r", "\n")
        data = data.replace("\n", "\ndata: ")
    if event:
        if "\n" in event or "\r" in event:
            raise ValueError(f"SSE event name must not contain a line break: {event!r}")
        return f"event: {event}\ndata: {data}\n\n".encode()
    return f"data: {data}\n\n".encode()
