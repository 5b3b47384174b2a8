"""Redis response store: key ``engine:resp:<id>``, value the record as JSON,
written with ``SET key value EX ttl`` (Redis does the expiring).

Uses the small RESP2 client in :mod:`engine.store.resp` (not the ``redis``
package).  Nothing is sent until the first operation (or :meth:`ping`).
"""
from __future__ import annotations

from . import ResponseStore, StoreError, check_id, dump_record, load_record
from .resp import RedisClient, RedisError, RedisReplyError

__all__ = ["RedisStore", "KEY_PREFIX"]

KEY_PREFIX = "engine:resp:"


class RedisStore(ResponseStore):
    def __init__(
        self,
        url: str,
        ttl_seconds: int,
        *,
        key_prefix: str = KEY_PREFIX,
        max_connections: int = 16,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
    ):
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be a positive whole number, got {ttl_seconds!r}")
        self.client = RedisClient(
            url,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )
        self.ttl_seconds = ttl_seconds
        self.key_prefix = key_prefix

    def key(self, response_id: str) -> str:
        return self.key_prefix + response_id

    async def put(self, response_id: str, record: dict) -> None:
        check_id(response_id)
        body = dump_record(record).encode("utf-8")
        await self._call(self.client.set(self.key(response_id), body, ex=self.ttl_seconds))

    async def get(self, response_id: str) -> dict | None:
        check_id(response_id)
        body = await self._call(self.client.get(self.key(response_id)))
        return None if body is None else load_record(body, response_id)

    async def delete(self, response_id: str) -> bool:
        check_id(response_id)
        return await self._call(self.client.delete(self.key(response_id))) > 0

    async def ping(self) -> None:
        await self._call(self.client.ping())

    async def close(self) -> None:
        await self.client.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.client.params.address}/{self.client.params.db}, ttl_seconds={self.ttl_seconds})"

    async def _call(self, coro):
        try:
            return await coro
        except RedisReplyError as e:
            hint = ""
            if e.code == "NOAUTH":
                hint = " (give the password in the URL: redis://:password@host:port/db)"
            raise StoreError(f"redis response store: {e}{hint}") from e
        except RedisError as e:
            raise StoreError(f"redis response store: {e}") from e
