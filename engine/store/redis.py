"""Redis response store: key ``engine:resp:<id>``, value the record as JSON,
written with ``SET key value EX ttl`` (Redis does the expiring).

Spoken to through redis-py's asyncio client (the optional ``redis`` extra:
``pip install 'engine[redis]'``). The URL is redis-py's: ``redis://``,
``rediss://`` (TLS; ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs`` as query parameters) or ``unix:///path/redis.sock?db=N``.
Two deployments besides a single server (:class:`RedisSettings`):

* Sentinel: ``redis_sentinels`` (``host:port`` list) and ``redis_sentinel_master``;
  the URL then gives the database, the credentials and TLS of the master;
* Cluster: ``redis_cluster=true``; the URL names one node to discover the rest from.

Nothing is sent until the first operation (or :meth:`ping`).
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from . import ResponseStore, StoreError, check_id, dump_record, load_record

__all__ = ["RedisStore", "RedisSettings", "KEY_PREFIX", "make_client"]

KEY_PREFIX = "engine:resp:"
SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class RedisSettings:
    """How to reach Redis beyond the URL (config keys of the same names)."""
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_password: str = ""
    cluster: bool = False

    @classmethod
    def from_config(cls, cfg) -> "RedisSettings":
        return cls(
            sentinels=tuple(getattr(cfg, "redis_sentinels", ()) or ()),
            sentinel_master=getattr(cfg, "redis_sentinel_master", "") or "mymaster",
            sentinel_password=getattr(cfg, "redis_sentinel_password", "") or "",
            cluster=bool(getattr(cfg, "redis_cluster", False)),
        )


def _redis():
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ValueError("a Redis response store needs redis-py: pip install 'engine[redis]'") from None
    return aioredis


def make_client(url: str, settings: RedisSettings | None = None, *, max_connections: int = 16,
                connect_timeout: float = 5.0, command_timeout: float = 30.0):
    """The redis-py asyncio client for `url` and `settings`; no I/O. ValueError for a URL
    redis-py cannot use or settings that contradict each other."""
    aioredis = _redis()
    from redis.asyncio.connection import parse_url
    from redis.backoff import NoBackoff
    from redis.asyncio.retry import Retry

    settings = settings or RedisSettings()
    if not url.lower().startswith(SCHEMES):
        raise ValueError(f"a Redis URL must start with redis://, rediss:// or unix://, got {_redact(url)!r}")
    u = urlsplit(url)
    if u.scheme.lower() != "unix" and u.path.strip("/") and not u.path.strip("/").isdigit():
        # redis-py would silently use database 0
        raise ValueError(f"invalid Redis URL {_redact(url)!r}: the database must be a number")
    try:
        kwargs = parse_url(url)
    except ValueError as e:
        raise ValueError(f"invalid Redis URL {_redact(url)!r}: {e}") from None
    common = dict(socket_connect_timeout=connect_timeout, socket_timeout=command_timeout,
                  # a pooled connection the server closed is replaced once; no backoff sleeps
                  # (the gateway bounds each operation by store_timeout besides)
                  retry=Retry(NoBackoff(), 1))
    if settings.cluster and settings.sentinels:
        raise ValueError("redis_cluster and redis_sentinels exclude each other")
    if settings.cluster:
        if "path" in kwargs:
            raise ValueError("a Redis Cluster is reached over TCP: give a redis:// or rediss:// node URL")
        if kwargs.get("db"):
            raise ValueError("a Redis Cluster has database 0 only")
        from redis.asyncio.cluster import RedisCluster
        return RedisCluster.from_url(url, **common)
    if settings.sentinels:
        if "path" in kwargs:
            raise ValueError("with redis_sentinels the URL must be redis:// or rediss:// (the master is "
                             "found through Sentinel)")
        from redis.asyncio.sentinel import Sentinel
        conn = {k: v for k, v in kwargs.items() if k not in ("host", "port", "connection_class")}
        if kwargs.get("connection_class") is not None and kwargs["connection_class"].__name__ == "SSLConnection":
            conn["ssl"] = True
        sentinel_kwargs = dict(socket_connect_timeout=connect_timeout, socket_timeout=command_timeout)
        if settings.sentinel_password:
            sentinel_kwargs["password"] = settings.sentinel_password
        sentinel = Sentinel(list(settings.sentinels), sentinel_kwargs=sentinel_kwargs, **common, **conn)
        return sentinel.master_for(settings.sentinel_master)
    # a burst beyond max_connections waits for a free connection (command_timeout at most)
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections,
                                                    timeout=command_timeout, **common)
    return aioredis.Redis(connection_pool=pool)


def _redact(url: str) -> str:
    u = urlsplit(url)
    if u.password:
        return url.replace(":" + u.password + "@", ":***@", 1)
    return url


def _where(url: str, settings: RedisSettings) -> str:
    if settings.sentinels:
        return f"master {settings.sentinel_master!r} of Sentinel " + ",".join(f"{h}:{p}" for h, p in settings.sentinels)
    u = urlsplit(url)
    if u.scheme == "unix":
        return u.path
    host = f"[{u.hostname}]" if u.hostname and ":" in u.hostname else u.hostname
    return f"{host}:{u.port or 6379}"


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
        settings: RedisSettings | None = None,
    ):
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be a positive whole number, got {ttl_seconds!r}")
        self.settings = settings or RedisSettings()
        self.client = make_client(url, self.settings, max_connections=max_connections,
                                  connect_timeout=connect_timeout, command_timeout=command_timeout)
        self.where = _where(url, self.settings)
        self.ttl_seconds = ttl_seconds
        self.key_prefix = key_prefix
        self.closed = False

    def key(self, response_id: str) -> str:
        return self.key_prefix + response_id

    async def put(self, response_id: str, record: dict) -> None:
        check_id(response_id)
        body = dump_record(record).encode("utf-8")
        await self._call(self.client.set, self.key(response_id), body, ex=self.ttl_seconds)

    async def get(self, response_id: str) -> dict | None:
        check_id(response_id)
        body = await self._call(self.client.get, self.key(response_id))
        return None if body is None else load_record(body, response_id)

    async def delete(self, response_id: str) -> bool:
        check_id(response_id)
        return await self._call(self.client.delete, self.key(response_id)) > 0

    async def ping(self) -> None:
        await self._call(self.client.ping)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.client.aclose()

    def __repr__(self) -> str:
        return f"RedisStore({self.where}, ttl_seconds={self.ttl_seconds})"

    async def _call(self, method, *args, **kwargs):
        if self.closed:
            raise StoreError("redis response store: the store is closed")
        from redis import exceptions as rx
        try:
            return await method(*args, **kwargs)
        except rx.AuthenticationError as e:
            raise StoreError(f"redis response store: Redis at {self.where} refused AUTH: {e} "
                             "(give the password in the URL: redis://:password@host:port/db)") from e
        except rx.ResponseError as e:
            hint = ""
            if str(e).startswith("NOAUTH"):
                hint = " (give the password in the URL: redis://:password@host:port/db)"
            raise StoreError(f"redis response store: {e}{hint}") from e
        except rx.TimeoutError as e:
            raise StoreError(f"redis response store: Redis at {self.where} did not answer in time: {e}") from e
        except rx.ConnectionError as e:
            raise StoreError(f"redis response store: cannot connect to Redis at {self.where}: {e}") from e
        except rx.RedisError as e:
            raise StoreError(f"redis response store: {type(e).__name__}: {e}") from e
