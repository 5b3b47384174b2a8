"""Logging to stdout and, with log_file_daemon, to a file rotated daily as NAME-YYYY-MM-DD.log."""
from __future__ import annotations

import json
import logging
import os
import sys
import time

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR}


class DailyFileHandler(logging.Handler):
    """Writes to BASE-YYYY-MM-DD.EXT, switching files when the local date changes."""

    def __init__(self, path: str):
        super().__init__()
        root, ext = os.path.splitext(path)
        self.root, self.ext = root, ext or ".log"
        self.day = None
        self.stream = None
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)

    def current_path(self) -> str:
        return f"{self.root}-{time.strftime('%Y-%m-%d')}{self.ext}"

    def emit(self, record):
        try:
            day = time.strftime("%Y-%m-%d")
            if day != self.day:
                if self.stream:
                    self.stream.close()
                self.stream = open(self.current_path(), "a", encoding="utf-8")
                self.day = day
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except Exception:
            self.handleError(record)

    def close(self):
        if self.stream:
            self.stream.close()
        super().close()


class JsonFormatter(logging.Formatter):
    def format(self, record):
        out = {"time": self.formatTime(record), "level": record.levelname.lower(), "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}) or {})
        return json.dumps(out, ensure_ascii=False)


def setup_logging(cfg):
    level = _LEVELS.get(str(getattr(cfg, "log_level", "info")).lower(), logging.INFO)
    fmt = JsonFormatter() if getattr(cfg, "log_format", "text") == "json" else \
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    root = logging.getLogger()
    root.handlers.clear()
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(fmt)
    root.addHandler(out)
    path = getattr(cfg, "log_file_daemon", "")
    if path and path != "-":
        fh = DailyFileHandler(path)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
