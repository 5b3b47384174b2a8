"""The configured response store (session_store): the one module that knows both backends, so the
package's shared base (engine/store/__init__.py) imports neither of the backends that import it."""
from __future__ import annotations

from . import ResponseStore


def open_store(url_or_kind: str, data_dir: str, ttl_seconds: int, timeout: float | None = None,
               settings=None) -> ResponseStore:
    """``"sqlite"`` -> SQLite file in ``data_dir``; ``redis://`` / ``rediss://`` / ``unix://`` URL
    -> Redis, with the Sentinel or Cluster keys of ``settings`` (the Config) when given.

    Raises ``ValueError`` for an unknown kind, a malformed URL or a bad TTL.
    ``timeout`` bounds Redis's connects and round trips (the server bounds every operation
    with store_timeout besides). No I/O happens here.
    """
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1:
        raise ValueError(f"ttl_seconds must be a positive whole number, got {ttl_seconds!r}")
    kind = url_or_kind.strip()
    if kind.lower() == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(data_dir, ttl_seconds)
    if kind.lower().startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisSettings, RedisStore

        rs = RedisSettings.from_config(settings) if settings is not None else None
        if timeout:
            return RedisStore(kind, ttl_seconds, connect_timeout=min(5.0, timeout), command_timeout=timeout,
                              settings=rs)
        return RedisStore(kind, ttl_seconds, settings=rs)
    raise ValueError(f'unknown response store {url_or_kind!r}: expected "sqlite" or a redis:// URL')
