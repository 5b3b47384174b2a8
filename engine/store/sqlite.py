"""SQLite response store: ``<data_dir>/responses.sqlite3``.

* One table ``responses(id TEXT PRIMARY KEY, expires_at REAL, body TEXT)``
  (plus an index on ``expires_at`` for purging); ``expires_at`` is a Unix
  time, so it means the same thing to every process and after a restart.
* WAL mode, ``synchronous=NORMAL`` and a busy timeout, so several gateway
  processes can share the file: readers never block, writers wait for each
  other instead of failing with "database is locked".  Every statement runs
  in autocommit mode (no multi-statement transactions), so a writer never has
  to upgrade a read lock -- the case in which SQLite gives up without waiting.
* All work runs on one dedicated worker thread that owns the connection
  (sqlite3 connections belong to the thread that made them); the event loop
  only awaits futures.  The folder, file and schema are created on first use.
* Expired rows are invisible to :meth:`get` / :meth:`delete` and are purged
  by :meth:`put`, at most once per ``purge_interval`` (60 s) per store.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from . import ResponseStore, StoreError, check_id, dump_record, load_record

__all__ = ["SQLiteStore", "FILENAME"]

log = logging.getLogger("engine.store")

FILENAME = "responses.sqlite3"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses ("
    " id TEXT PRIMARY KEY,"
    " expires_at REAL NOT NULL,"
    " body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS responses_expires_at ON responses (expires_at)",
)


class SQLiteStore(ResponseStore):
    def __init__(
        self,
        data_dir: str,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 15.0,
        purge_interval: float = 60.0,
    ):
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, (int, float)) or ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        self.data_dir = os.path.expanduser(data_dir or ".")
        self.path = os.path.join(self.data_dir, FILENAME)
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.busy_timeout = busy_timeout
        self.purge_interval = purge_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-sqlite-store")
        self._closed = False
        # Touched only on the worker thread:
        self._conn: sqlite3.Connection | None = None
        self._next_purge = float("-inf")

    # ------------------------------------------------------------- public API

    async def put(self, response_id: str, record: dict) -> None:
        check_id(response_id)
        body = dump_record(record)  # on the loop: serialisation errors are the caller's
        await self._run(self._put, response_id, body)

    async def get(self, response_id: str) -> dict | None:
        check_id(response_id)
        body = await self._run(self._get, response_id)
        return None if body is None else load_record(body, response_id)

    async def delete(self, response_id: str) -> bool:
        check_id(response_id)
        return await self._run(self._delete, response_id)

    async def ping(self) -> None:
        """Checks the file can be written, not just read: a write lock taken and given back."""
        await self._run(self._ping)

    @staticmethod
    def _ping(conn) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")

    async def purge(self) -> int:
        """Delete expired rows now; the number removed."""
        return await self._run(self._purge)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_conn)
        finally:
            self._executor.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, ttl_seconds={self.ttl_seconds})"

    # ------------------------------------------------------------- worker side

    async def _run(self, fn, *args):
        if self._closed:
            raise StoreError("response store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    def _call(self, fn, args):
        try:
            conn = self._conn if self._conn is not None else self._open()
            return fn(conn, *args)
        except sqlite3.Error as e:
            raise StoreError(f"sqlite response store {self.path}: {e}") from e

    def _open(self) -> sqlite3.Connection:
        try:
            os.makedirs(self.data_dir, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create data_dir {self.data_dir!r} for the response store: {e}") from e
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,  # sets SQLite's busy timeout
            isolation_level=None,  # autocommit: each statement is its own transaction
        )
        try:
            self._retry_busy(lambda: self._init_schema(conn))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        # WAL is a property of the file: set it once, and don't take the
        # exclusive lock changing it needs when another process already did.
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning(
                    "response store %s: SQLite refused WAL mode (journal_mode=%s); "
                    "concurrent gateway processes may block each other",
                    self.path,
                    mode,
                )
        conn.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA:
            conn.execute(statement)

    def _retry_busy(self, fn):
        """Run ``fn``, retrying while SQLite reports the file busy/locked (up to busy_timeout).

        The busy handler covers ordinary statements; this also covers the few
        cases where SQLite does not call it (e.g. two processes switching a new
        file to WAL at the same moment).
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                text = str(e).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _put(self, conn: sqlite3.Connection, response_id: str, body: str) -> None:
        now = self.clock()
        self._retry_busy(
            lambda: conn.execute(
                "INSERT OR REPLACE INTO responses (id, expires_at, body) VALUES (?, ?, ?)",
                (response_id, now + self.ttl_seconds, body),
            )
        )
        if now >= self._next_purge:
            self._next_purge = now + self.purge_interval
            try:
                self._purge(conn, now)
            except sqlite3.Error as e:  # purging is opportunistic: never fail the put for it
                log.warning("response store %s: purging expired rows failed: %s", self.path, e)

    def _get(self, conn: sqlite3.Connection, response_id: str) -> str | None:
        row = conn.execute(
            "SELECT body FROM responses WHERE id = ? AND expires_at > ?",
            (response_id, self.clock()),
        ).fetchone()
        return None if row is None else row[0]

    def _delete(self, conn: sqlite3.Connection, response_id: str) -> bool:
        cur = self._retry_busy(
            lambda: conn.execute(
                "DELETE FROM responses WHERE id = ? AND expires_at > ?",
                (response_id, self.clock()),
            )
        )
        # An expired row with this id (if any) is left for the purge.
        return cur.rowcount > 0

    def _purge(self, conn: sqlite3.Connection, now: float | None = None) -> int:
        cur = conn.execute(
            "DELETE FROM responses WHERE expires_at <= ?",
            (self.clock() if now is None else now,),
        )
        return cur.rowcount

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
