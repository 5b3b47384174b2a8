"""engine/logs.py: the access-log handler writes lines together, never loses or reorders one,
and the cached timestamp reads exactly as logging's own."""
from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import time
import urllib.error
import urllib.request

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


def _file_handler(tmp_path, **kw):
    from engine.logs import DailyFileHandler
    h = DailyFileHandler(str(tmp_path / "gw.log"), **kw)
    h.setFormatter(logging.Formatter("%(message)s"))
    return h


def test_log_files_past_the_retention_are_removed(tmp_path):
    for day in ("2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"):
        (tmp_path / f"gw-{day}.log").write_text("old\n")
    (tmp_path / "gw-2026-01-02.1.log").write_text("old part\n")
    (tmp_path / "other-2026-01-01.log").write_text("not ours\n")
    h = _file_handler(tmp_path, max_files=3)
    h.handle(_record("today"))
    h.close()
    left = sorted(p.name for p in tmp_path.iterdir())
    today = h.current_path().rsplit("/", 1)[1]
    assert left == sorted(["gw-2026-01-03.log", "gw-2026-01-04.log", today, "other-2026-01-01.log"])
    assert (tmp_path / today).read_text() == "today\n"


def test_no_retention_keeps_every_file(tmp_path):
    (tmp_path / "gw-2020-01-01.log").write_text("old\n")
    h = _file_handler(tmp_path, max_files=0)
    h.handle(_record("x"))
    h.close()
    assert (tmp_path / "gw-2020-01-01.log").exists()


def test_a_full_file_continues_in_the_next_part(tmp_path):
    h = _file_handler(tmp_path, max_bytes=100, max_files=3)
    for i in range(30):
        h.handle(_record(f"line {i:02d} " + "x" * 20))  # 29 bytes a line: four to a file
    h.close()
    day = time.strftime("%Y-%m-%d")
    parts = sorted(tmp_path.iterdir(), key=lambda p: int(p.name.split(".")[1]) if p.name.count(".") == 2 else 0)
    assert [p.name for p in parts] == [f"gw-{day}.{n}.log" for n in (5, 6, 7)]  # the newest three
    assert all(p.stat().st_size <= 100 + 29 for p in parts)
    lines = [ln for p in parts for ln in p.read_text().splitlines()]
    assert lines[-1].startswith("line 29") and lines == sorted(lines)
    # a restart goes on in the last part, not the first
    h2 = _file_handler(tmp_path, max_bytes=100)
    h2.handle(_record("after restart"))
    h2.close()
    assert parts[-1].read_text().endswith("after restart\n")


def test_reopen_writes_to_a_new_file_after_the_old_one_was_moved(tmp_path):
    h = _file_handler(tmp_path)
    h.handle(_record("before"))
    path = h.current_path()
    os.rename(path, path + ".rotated")
    h.handle(_record("still the moved file"))  # the open file follows the move, as logrotate expects
    h.reopen()
    h.handle(_record("after"))
    h.close()
    assert open(path + ".rotated").read() == "before\nstill the moved file\n"
    assert open(path).read() == "after\n"


def test_sighup_reopens_the_log_file_of_engine_serve(tmp_path):
    from tests.support.gateway import GatewayProcess
    log = tmp_path / "logs" / "engine.log"
    gw = GatewayProcess(env_overrides={"TOKLIGENCE_LOG_FILE": str(log), "TOKLIGENCE_LOG_MAX_FILES": "2"})
    gw.start()
    try:
        day = time.strftime("%Y-%m-%d")
        live = tmp_path / "logs" / f"engine-{day}.log"
        _wait(lambda: live.exists() and "listening" in live.read_text())
        os.rename(live, str(live) + ".1")
        os.kill(gw.pid, signal.SIGHUP)
        for _ in range(2):
            try:
                urllib.request.urlopen(gw.url + "/after-hup", timeout=10).read()
            except urllib.error.HTTPError:
                pass
        _wait(lambda: live.exists() and "/after-hup" in live.read_text())
        assert gw.is_running()
        assert "/after-hup" not in open(str(live) + ".1").read()
    finally:
        gw.stop()


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
