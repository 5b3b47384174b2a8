"""engine/logs.py: the access-log handler writes lines together, never loses or reorders one,
and the cached timestamp reads exactly as logging's own."""
from __future__ import annotations

import asyncio
import io
import logging

from engine.logs import AccessLog, JsonFormatter, StdoutHandler, TextFormatter

FMT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _record(msg: str, level=logging.INFO, created: float | None = None) -> logging.LogRecord:
    r = logging.LogRecord("engine.access", level, __file__, 1, msg, (), None)
    if created is not None:
        r.created = created
        r.msecs = (created - int(created)) * 1000
    return r


def test_cached_timestamp_matches_logging_formatter():
    ours, theirs = TextFormatter(FMT), logging.Formatter(FMT)
    for created in (1700000000.001, 1700000000.999, 1700000001.5, 1700000001.25, 1700003600.0, 1699999999.75):
        r = _record("line", created=created)
        assert ours.format(r) == theirs.format(r)


class _Counting(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, s):
        self.writes += 1
        return super().write(s)


def _handler(delay=0.05):
    stream = _Counting()
    h = StdoutHandler(stream, delay=delay)
    h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return h, stream


def test_lines_on_the_loop_are_written_together_in_order():
    h, stream = _handler()

    async def main():
        for i in range(50):
            h.handle(_record(f"line {i}"))
        assert stream.getvalue() == ""  # not yet: waiting for the others of this window
        await asyncio.sleep(0.12)

    asyncio.run(main())
    assert stream.getvalue().splitlines() == [f"INFO line {i}" for i in range(50)]
    assert stream.writes == 1


def test_a_warning_is_written_at_once_after_what_came_before():
    h, stream = _handler(delay=10)

    async def main():
        h.handle(_record("first"))
        h.handle(_record("trouble", logging.WARNING))
        assert stream.getvalue().splitlines() == ["INFO first", "WARNING trouble"]
        h.handle(_record("after"))
        h.flush()  # shutdown flushes what is pending
        assert stream.getvalue().splitlines()[-1] == "INFO after"

    asyncio.run(main())


def test_off_the_loop_every_line_is_written_at_once():
    h, stream = _handler(delay=10)
    h.handle(_record("no loop here"))
    assert stream.getvalue() == "INFO no loop here\n"


def _root_with(handler):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return root, saved


FIELDS = {"method": "POST", "path": "/v1/chat/completions", "status": 200, "latency_ms": 1.5,
          "model": "claude-é", "tokens_in": None}


def test_access_line_is_what_logging_writes(monkeypatch):
    """Written straight to the handler, the line is byte for byte the record logging would format,
    in the text format and in the JSON one."""
    for fmt in (TextFormatter(), JsonFormatter()):
        direct, stream_a = _handler()
        direct.setFormatter(fmt)
        root, saved = _root_with(direct)
        try:
            monkeypatch.setattr("time.time", lambda: 1700000000.123)
            access = AccessLog("engine.access")
            assert access._handlers() == (direct,)  # the direct path, not logging's
            access("method=POST status=200", FIELDS)
            direct.flush()
            via_logging, stream_b = _handler()
            via_logging.setFormatter(fmt)
            record = logging.LogRecord("engine.access", logging.INFO, __file__, 1, "method=POST status=200", (), None)
            record.fields = FIELDS
            via_logging.handle(record)
            via_logging.flush()
        finally:
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
        assert stream_a.getvalue() == stream_b.getvalue() != ""


def test_access_line_goes_through_logging_for_any_other_handler(caplog):
    with caplog.at_level(logging.INFO, logger="engine.access"):
        AccessLog("engine.access")("method=GET status=404", {"status": 404})
    assert [r.getMessage() for r in caplog.records] == ["method=GET status=404"]
    assert caplog.records[0].fields == {"status": 404}


def test_access_line_respects_the_level():
    direct, stream = _handler()
    root, saved = _root_with(direct)
    try:
        root.setLevel(logging.WARNING)
        AccessLog("engine.access")("quiet", {})
        direct.flush()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert stream.getvalue() == ""
