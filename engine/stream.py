"""One upstream stream through a StreamMapping: bytes in, client bytes out.

Per event: SSE decode, JSON decode, a dict lookup on the discriminator, the compiled rules,
which on the byte path (start_bytes/feed/finish/fail_bytes, the server's) write finished SSE
frames as text; the event path (start/event/eof/fail, for replay tools and tests) gives the
dicts, which encode() frames the same way. Nothing is validated here (the tests validate every
fixture's output instead); nothing awaits."""
from __future__ import annotations

import json

from .program import END, CompiledSpec, Echo, Raw, TextOut
from .sse import SSEDecoder

from .jsontext import decode as _decode, loads as _loads
from .jsontext import dumps as _dumps


class MalformedEvent(ValueError):
    """An upstream event whose shape its schema does not allow (wrong types)."""

    def __init__(self, event: dict):
        super().__init__(f"the upstream sent a malformed {str(event.get('type') or 'stream')[:60]!r} event")


class StreamTranslator:
    __slots__ = ("spec", "scope", "state", "decoder", "ended", "seq", "handlers", "disc", "event_field",
                 "seq_field", "events_in", "guard", "echo")

    def __init__(self, spec: CompiledSpec, req=None, cfg=None, **extra):
        self.spec = spec
        self.state = spec.initial_state()
        self.scope = {"state": self.state, "req": req, "cfg": cfg, "event": None, **extra}
        self.decoder = SSEDecoder()
        self.ended = False
        self.seq = 0
        self.handlers = spec.handlers
        self.disc = spec.discriminator
        self.event_field = spec.event_field
        self.seq_field = spec.sequence_field
        self.events_in = 0
        # event -> bool: False for an upstream event of the wrong shape (engine/server/shapes.py)
        self.guard = None
        self.echo = Echo(req)

    # -- event level (dicts in, emitted items out): used by replay tools and tests
    def start(self) -> list:
        out: list = []
        if self.spec.init is not None:
            self.spec.init(self.scope, out)
        return self._finish_out(out)

    def event(self, event) -> list:
        if self.ended:
            return []
        self.events_in += 1
        scope = self.scope
        scope["event"] = event
        key = self.disc(scope)
        try:
            handler = self.handlers.get(key)
        except TypeError:
            handler = None
        if handler is None:
            return []
        out: list = []
        handler(scope, out)
        return self._finish_out(out)

    def _run(self, actions, event) -> list:
        if self.ended or actions is None:
            return []
        self.scope["event"] = event
        out: list = []
        actions(self.scope, out)
        return self._finish_out(out)

    def _finish_out(self, out: list) -> list:
        if out and out[-1] is END:
            self.ended = True
            out.pop()
        elif END in out:
            self.ended = True
            out = out[:out.index(END)]
        if self.seq_field and out:
            f = self.seq_field
            stamped = []
            for ev in out:
                if type(ev) is dict:
                    ev = {"type": ev.get("type"), f: self.seq, **ev}
                    self.seq += 1
                stamped.append(ev)
            out = stamped
        return out

    def eof(self) -> list:
        """The upstream closed; runs the spec's `eof` rules unless the stream already ended."""
        return self._run(self.spec.eof, {"type": "eof"})

    def fail(self, message: str, kind: str = "api_error") -> list:
        """A transport failure (dropped connection, timeout): runs the spec's `error` rules."""
        return self._run(self.spec.error, {"type": "error", "error": {"type": kind, "message": message}})

    # -- byte level: the server's hot path
    def encode(self, items: list) -> bytes:
        if not items:
            return b""
        parts = []
        ef = self.event_field
        for ev in items:
            if type(ev) is dict:
                data = _dumps(ev)
                if ef:
                    parts.append(f"event: {ev.get(ef)}\ndata: {data}\n\n")
                else:
                    parts.append(f"data: {data}\n\n")
            elif isinstance(ev, Raw):
                parts.append(f"data: {ev}\n\n")
        return "".join(parts).encode()

    # -- byte level: the server's hot path. The rules write finished SSE frames (TextOut): no
    # dict per event is built and encoded. The same bytes as the event level + encode()
    # (tests/test_fastpaths.py).
    def start_bytes(self) -> bytes:
        return self._text(self.spec.text_init)

    def feed(self, chunk: bytes) -> bytes:
        out = TextOut(self.seq, self.event_field, self.seq_field, self.echo)
        self._dispatch(self.decoder.feed(chunk), out)
        return self._close(out)

    def finish(self) -> bytes:
        """The upstream closed: a trailing event without its blank line, then the `eof` rules."""
        out = TextOut(self.seq, self.event_field, self.seq_field, self.echo)
        self._dispatch([(n, d) for n, d in self.decoder.flush() if _is_object(d)], out)
        head = self._close(out)
        return head + self._text(self.spec.text_eof, {"type": "eof"})

    def fail_bytes(self, message: str, kind: str = "api_error") -> bytes:
        return self._text(self.spec.text_error, {"type": "error", "error": {"type": kind, "message": message}})

    def _text(self, actions, event=None) -> bytes:
        if self.ended or actions is None:
            return b""
        out = TextOut(self.seq, self.event_field, self.seq_field, self.echo)
        if event is not None:
            self.scope["event"] = event  # a fresh TextOut: nothing remembered yet
        actions(self.scope, out)
        return self._close(out)

    def _close(self, out: TextOut) -> bytes:
        if out.ended:
            del out[out.index(END):]
            self.ended = True
        self.seq = out.seq
        return "".join(out).encode() if out else b""

    def _dispatch(self, events, out: TextOut):
        if self.ended:
            return
        scope = self.scope
        handlers = self.spec.text_handlers
        key = self.spec.disc_key
        disc = self.disc
        guard = self.guard
        n = 0
        try:
            for _name, data in events:
                if out.ended:
                    break
                # _loads, inline: a call per event saved
                try:
                    event = _decode(data)
                except ValueError:  # what msgspec refuses, the json module may still read
                    try:
                        event = json.loads(data)
                    except ValueError:
                        event = None
                except RecursionError:
                    event = None
                out.memo = None  # a new event in scope
                if type(event) is dict:
                    if guard is not None and not guard(event):
                        raise MalformedEvent(event)
                    n += 1
                    scope["event"] = event
                    try:
                        # `discriminator: event.type` is a plain lookup on the event
                        handler = handlers.get(event.get(key) if key is not None else disc(scope))
                    except TypeError:
                        handler = None
                else:
                    # non-JSON data such as [DONE]: dispatch on the text itself
                    handler = handlers.get(data.strip())
                    scope["event"] = {"data": data}
                if handler is not None:
                    handler(scope, out)
        finally:
            self.events_in += n


def _is_object(data: str) -> bool:
    """A trailing event at close counts only when it is a JSON object (no [DONE] dispatch)."""
    try:
        return type(_loads(data)) is dict
    except ValueError:
        return False
