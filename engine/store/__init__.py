"""Response store for the OpenAI Responses API (``previous_response_id``,
``GET``/``DELETE /v1/responses/{id}``).

A store maps a response id to a JSON-serialisable ``dict`` that expires
``ttl_seconds`` after it was (last) put.  Two backends:

* ``"sqlite"`` -- :class:`engine.store.sqlite.SQLiteStore`, a WAL-mode file
  ``<data_dir>/responses.sqlite3`` that several gateway processes can share;
* ``"redis://host:port/db"`` / ``"rediss://..."`` / ``"unix:///path.sock"`` --
  :class:`engine.store.redis.RedisStore` (keys ``engine:resp:<id>``), through
  redis-py's asyncio client; Sentinel and Cluster by :class:`engine.store.redis.RedisSettings`.

Backends do no I/O in their constructors; the first operation (or
:meth:`ResponseStore.ping`) opens the file / connects.  Backend failures are
raised as :class:`StoreError`.
"""
from __future__ import annotations

import json
from .. import jsontext

__all__ = ["ResponseStore", "StoreError"]


class StoreError(Exception):
    """The store backend failed (file unusable, Redis unreachable, corrupt record, ...)."""


class ResponseStore:
    """Abstract response store; all methods are coroutines."""

    ttl_seconds: int

    async def put(self, response_id: str, record: dict) -> None:
        """Store ``record`` (JSON-serialisable) under ``response_id``, replacing any
        previous record; it expires ``ttl_seconds`` from now."""
        raise NotImplementedError

    async def get(self, response_id: str) -> dict | None:
        """The record, or None when unknown or expired."""
        raise NotImplementedError

    async def delete(self, response_id: str) -> bool:
        """Remove the record; True if a live (unexpired) record was deleted."""
        raise NotImplementedError

    async def ping(self) -> None:
        """Check the backend is usable (opens the file / connects); raise StoreError if not."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


# ------------------------------------------------------------------ helpers shared by backends


def check_id(response_id: str) -> None:
    if not isinstance(response_id, str) or not response_id:
        raise ValueError(f"response id must be a non-empty string, got {response_id!r}")


def dump_record(record: dict) -> str:
    """Compact JSON text that is guaranteed to encode as UTF-8.

    Non-ASCII text is kept as is (smaller), except when the record holds lone
    surrogates (``json.loads`` accepts ``"\\ud800"``), which UTF-8 cannot carry:
    then the record is written with ``\\u`` escapes instead.
    """
    if not isinstance(record, dict):
        raise TypeError(f"record must be a dict, got {type(record).__name__}")
    try:
        return jsontext.encode(record).decode()  # msgspec refuses a lone surrogate
    except (TypeError, UnicodeEncodeError, ValueError):
        return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def load_record(text: str | bytes, response_id: str) -> dict:
    try:
        record = jsontext.loads(text)
    except ValueError as e:
        raise StoreError(f"stored response {response_id!r} is not valid JSON: {e}") from None
    if not isinstance(record, dict):
        raise StoreError(f"stored response {response_id!r} is not a JSON object")
    return record
