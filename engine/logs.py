"""Logging to stdout and, with log_file_daemon, to a file per day, NAME-YYYY-MM-DD.EXT.

With `log_max_bytes`, a day's file that reaches the size continues in NAME-YYYY-MM-DD.1.EXT,
.2, and so on; `log_max_files` keeps only the newest that many files (0: all); `reopen_logs()`
(SIGHUP) closes the file and opens it again by name, after logrotate moved it away.

The standard library's RotatingFileHandler and TimedRotatingFileHandler rotate by renaming the
live file, which is unsafe with `--workers N`: each worker process rotates the same file, and a
second rename removes the file the first one made (doRollover deletes an existing destination).
Here no file is ever renamed: every process appends to the file named for the day and part, so
workers share one file safely, and a file is only deleted once it is past the retention.

concurrent-log-handler, the library made for several processes writing one rotating log, renames
too, under a lock file taken around every record, and names its files NAME.log.1 or
NAME.log.YYYY-MM-DD, not the Go gateway's NAME-YYYY-MM-DD.log. Measured on one core (20,000
access-sized lines through `logging`, best of 5, µs a line): this handler 5.7,
concurrent-log-handler 0.9.31's ConcurrentRotatingFileHandler 22.8 and its
ConcurrentTimedRotatingFileHandler 27.9, the standard RotatingFileHandler 15.7. Each of those
writes and flushes every record; this one writes the lines of 50 ms in one write, about 17 µs
less per request than the library, where a small request costs the gateway about 200."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR}


class Coalescing(logging.Handler):
    """Lines written together: on the event loop, a record is formatted at once but written with
    the others of the next `delay` seconds in one write, instead of a write and a flush (two
    syscalls) per access-log line. WARNING and above are written at once, after everything
    before them; off the loop (other threads, startup, shutdown) every record is."""

    def __init__(self, delay: float = 0.05):
        super().__init__()
        self.delay = delay
        self.pending: list[str] = []
        self.timer: asyncio.TimerHandle | None = None

    def write(self, text: str):
        raise NotImplementedError

    def emit(self, record):
        try:
            self.pending.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self._flush_pending()
            return
        self._schedule()

    def write_line(self, line: str):
        """An INFO line already formatted (AccessLog), queued like emit() queues a record."""
        self.acquire()
        try:
            self.pending.append(line)
            self._schedule()
        finally:
            self.release()

    def _schedule(self):
        if self.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._flush_pending()
                return
            self.timer = loop.call_later(self.delay, self.flush)

    def flush(self):
        self.acquire()
        try:
            self._flush_pending()
        finally:
            self.release()

    def _flush_pending(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pending:
            text = "\n".join(self.pending) + "\n"
            self.pending.clear()
            try:
                self.write(text)
            except Exception as e:  # a full disk must not take the gateway down
                sys.stderr.write(f"engine: could not write {len(text)} characters of log: {e}\n")


class StdoutHandler(Coalescing):
    def __init__(self, stream=None, delay: float = 0.05):
        super().__init__(delay)
        self.stream = stream or sys.stdout

    def write(self, text: str):
        self.stream.write(text)
        self.stream.flush()


class DailyFileHandler(Coalescing):
    """Writes to BASE-YYYY-MM-DD[.N].EXT: a new file when the local date changes, a new part when
    the file reaches `max_bytes` (0: no cap); keeps the newest `max_files` files (0: all)."""

    def __init__(self, path: str, delay: float = 0.05, max_bytes: int = 0, max_files: int = 0):
        super().__init__(delay)
        root, ext = os.path.splitext(path)
        self.root, self.ext = root, ext or ".log"
        self.max_bytes, self.max_files = max_bytes, max_files
        self.day = None
        self.part = 0
        self.stream = None
        self.pattern = re.compile(re.escape(os.path.basename(self.root)) + r"-(\d{4}-\d{2}-\d{2})(?:\.(\d+))?"
                                  + re.escape(self.ext) + "$")
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)

    def current_path(self) -> str:
        return self._path(self.day or time.strftime("%Y-%m-%d"), self.part)

    def _path(self, day: str, part: int) -> str:
        return f"{self.root}-{day}{f'.{part}' if part else ''}{self.ext}"

    def _files(self) -> list[tuple[str, int, str]]:
        """(day, part, path) of every log file of this name, oldest first."""
        folder = os.path.dirname(self.root) or "."
        out = []
        try:
            names = os.listdir(folder)
        except OSError:
            return out
        for name in names:
            m = self.pattern.match(name)
            if m:
                out.append((m.group(1), int(m.group(2) or 0), os.path.join(folder, name)))
        return sorted(out)

    def _open(self, day: str):
        if self.stream:
            self.stream.close()
        # another worker, or this process before a restart, may have gone on to later parts
        self.part = max([p for d, p, _ in self._files() if d == day], default=0) if self.max_bytes else 0
        self.stream = open(self._path(day, self.part), "a", encoding="utf-8")
        if self.max_bytes and self.stream.tell() >= self.max_bytes:
            self.stream.close()
            self.part += 1
            self.stream = open(self._path(day, self.part), "a", encoding="utf-8")
        self.day = day
        self._prune()

    def _prune(self):
        if self.max_files <= 0:
            return
        files = self._files()
        for _day, _part, path in files[:max(0, len(files) - self.max_files)]:
            try:
                os.remove(path)
            except OSError:  # another worker removed it first, or it is not ours to remove
                pass

    def write(self, text: str):
        day = time.strftime("%Y-%m-%d")
        if day != self.day or self.stream is None:
            self._open(day)
        self.stream.write(text)
        self.stream.flush()
        if self.max_bytes and self.stream.tell() >= self.max_bytes:
            self.stream.close()
            self.stream = None
            self.part += 1
            self.stream = open(self._path(day, self.part), "a", encoding="utf-8")
            self._prune()

    def reopen(self):
        """Close the file; the next line opens it again by name (after logrotate moved it)."""
        self.acquire()
        try:
            self._flush_pending()
            if self.stream:
                self.stream.close()
            self.stream = None
        finally:
            self.release()

    def close(self):
        self.flush()
        if self.stream:
            self.stream.close()
            self.stream = None
        super().close()


def reopen_logs():
    """Reopen every log file (SIGHUP)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, DailyFileHandler):
            h.reopen()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def field(value: str) -> str:
    """A value for a `key=value` log field: as it is when it is plain printable text without
    spaces or quotes, else as a JSON string (ASCII, every control character escaped), so that
    nothing a client sends can end a line, start a forged one or forge a field."""
    if value.isprintable() and " " not in value and '"' not in value:
        return value
    return json.dumps(value)


def one_line(text: str) -> str:
    """`text` with its line breaks escaped (a message that holds client data)."""
    if "\n" in text or "\r" in text or "\u2028" in text or "\u2029" in text or "\x85" in text:
        return text.replace("\r", "\\r").replace("\n", "\\n").replace("\u2028", "\\u2028") \
            .replace("\u2029", "\\u2029").replace("\x85", "\\x85")
    return text


# default_msec_format's tail ("%s,%03d" % (stamp, n)) for every n: a concatenation, not a format
_MSECS = tuple(logging.Formatter.default_msec_format % ("", n) for n in range(1001))


class TextFormatter(logging.Formatter):
    """logging's default asctime (`2026-11-26 10:06:09,123`), its strftime done once a second
    rather than once a line."""

    def __init__(self, fmt: str | None = TEXT_FORMAT):
        super().__init__(fmt)
        self._second = None
        self._stamp = ""

    def formatTime(self, record, datefmt=None):
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._asctime(record.created)

    def _asctime(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        # the millisecond part as LogRecord computes it (0 to 999; 1000 would read ",1000")
        return self._stamp + _MSECS[int((created - second) * 1000)]

    def format(self, record) -> str:
        """logging's format with the message kept on one line; a traceback's lines follow
        indented by a tab, so no line of it reads as a log line of its own."""
        record.message = one_line(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        s = self.formatMessage(record)
        extra = ""
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            extra = record.exc_text
        if record.stack_info:
            extra = (extra + "\n" if extra else "") + self.formatStack(record.stack_info)
        if extra:
            s += "\n" + "\n".join("\t" + line for line in extra.splitlines())
        return s

    reads_fields = False  # access() writes the message alone

    def can_write_access(self) -> bool:
        return type(self) is TextFormatter and self._fmt == TEXT_FORMAT

    def access(self, created: float, name: str, message: str, fields: dict) -> str:
        """The INFO line format() gives for a record of `message` (see can_write_access)."""
        return f"{self._asctime(created)} INFO {name} {message}"


# json.dumps(x, ensure_ascii=False), without the encoder it builds on every call for a non-default argument
_dumps_line = json.JSONEncoder(ensure_ascii=False).encode


class JsonFormatter(TextFormatter):
    def format(self, record):
        out = {"time": self.formatTime(record), "level": record.levelname.lower(), "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}) or {})
        return _dumps_line(out)

    reads_fields = True

    def can_write_access(self) -> bool:
        return type(self) is JsonFormatter

    def access(self, created: float, name: str, message: str, fields: dict) -> str:
        return _dumps_line({"time": self._asctime(created), "level": "info", "msg": message, **fields})


class AccessLog:
    """The one INFO line per request. With the handlers setup_logging installs, it is written
    straight to them, the same text logging would write, without a LogRecord, a format pass or
    the logger's lock; that cost ~15% of the requests/s of a plain forwarding route under load.
    Any other setup (a handler or filter added by an embedding program, pytest's caplog) gets
    the line through logging as usual."""

    def __init__(self, name: str):
        self.name = name
        self.logger = logging.getLogger(name)
        self._seen: tuple | None = None
        self._direct: tuple | None = None
        self._reads = True

    def __call__(self, message: str, fields: dict):
        if self.wanted() is not None:
            self.write(message, fields)

    def wanted(self) -> bool | None:
        """None when the line is not logged (the level), else whether its fields are read: by the
        JSON format or through logging; the text format's line is the message alone, so a caller
        need not build them. write() follows, with the handlers this call found."""
        if not self.logger.isEnabledFor(logging.INFO):
            return None
        return self._handlers() is None or self._reads

    def write(self, message: str, fields: dict | None):
        """The line, once wanted() said it is logged; `fields` may be None when it said they
        are not read."""
        direct = self._direct
        if direct is None:
            self.logger.info(message, extra={"fields": fields})
            return
        now = time.time()
        fmt = line = None
        for h in direct:
            if h.formatter is not fmt:  # stdout and the log file share one formatter: format once
                fmt = h.formatter
                line = fmt.access(now, self.name, message, fields)
            h.write_line(line)

    def _handlers(self) -> tuple | None:
        root = logging.getLogger()
        seen = tuple(root.handlers)
        if seen != self._seen:
            self._seen, self._direct = seen, self._direct_handlers(root)
            self._reads = self._direct is None or any(h.formatter.reads_fields for h in self._direct)
        return self._direct

    def _direct_handlers(self, root) -> tuple | None:
        logger = self.logger
        while logger is not root:
            if logger.handlers or logger.filters or not logger.propagate:
                return None
            logger = logger.parent
        if root.filters or not root.handlers:
            return None
        for h in root.handlers:
            if not isinstance(h, Coalescing) or h.filters or h.level > logging.INFO \
                    or not isinstance(h.formatter, TextFormatter) or not h.formatter.can_write_access():
                return None
        return tuple(root.handlers)


def setup_logging(cfg):
    level = _LEVELS.get(str(getattr(cfg, "log_level", "info")).lower(), logging.INFO)
    fmt = JsonFormatter() if getattr(cfg, "log_format", "text") == "json" else \
        TextFormatter(TEXT_FORMAT)
    root = logging.getLogger()
    root.handlers.clear()
    # the Logging HOWTO's "Optimization": the access line needs no caller, thread or process
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    out = StdoutHandler()
    out.setFormatter(fmt)
    root.addHandler(out)
    path = getattr(cfg, "log_file_daemon", "")
    if path and path != "-":
        fh = DailyFileHandler(path, max_bytes=getattr(cfg, "log_max_bytes", 0) or 0,
                              max_files=getattr(cfg, "log_max_files", 0) or 0)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
