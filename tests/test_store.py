"""Response store (engine/store): both backends through the same tests, the
SQLite specifics (WAL, purge, several threads/processes on one file) and the
Redis ones (key layout, errors, reconnects, unix sockets, Sentinel and Cluster settings).

Redis tests use the server on 127.0.0.1:6379, database 15, with a unique key
prefix per test, and delete their keys afterwards.  When Redis is not
reachable they FAIL -- CI is expected to start it.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import sqlite3
import ssl
import subprocess
import threading
import uuid

import pytest

from engine.store import ResponseStore, StoreError
from engine.store.factory import open_store
from engine.store.redis import KEY_PREFIX, RedisStore
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from engine.store.sqlite import FILENAME, SQLiteStore

REDIS_URL = "redis://127.0.0.1:6379/15"


# ------------------------------------------------------------------ fixtures


async def _require_redis() -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2.0, socket_timeout=5.0)
    try:
        await client.ping()
    except RedisError as e:
        pytest.fail(f"Redis is required for these tests (CI starts it on 127.0.0.1:6379): {e}")
    finally:
        await client.aclose()


async def _delete_keys(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = await client.keys(prefix + "*")
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix():
    """A unique key prefix in db 15; every key under it is deleted afterwards."""
    await _require_redis()
    prefix = f"engine:test:{uuid.uuid4().hex}:"
    yield prefix
    await _delete_keys(prefix)


@pytest.fixture
async def admin():
    """A plain client on db 15 for looking behind a store's back."""
    await _require_redis()
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request, tmp_path):
    """Factory ``make(ttl_seconds=60) -> ResponseStore``; every store made shares
    one backend (same data_dir / same Redis key prefix) and is closed at teardown."""
    stores: list[ResponseStore] = []
    if request.param == "sqlite":
        data_dir = str(tmp_path / "data")

        def make(ttl_seconds: int = 60) -> ResponseStore:
            store = open_store("sqlite", data_dir, ttl_seconds)
            stores.append(store)
            return store

    else:
        await _require_redis()
        prefix = f"engine:test:{uuid.uuid4().hex}:"

        def make(ttl_seconds: int = 60) -> ResponseStore:
            store = RedisStore(REDIS_URL, ttl_seconds, key_prefix=prefix)
            stores.append(store)
            return store

    make.kind = request.param
    yield make
    for store in stores:
        await store.close()
    if request.param == "redis":
        await _delete_keys(prefix)


def new_id() -> str:
    return "resp_" + uuid.uuid4().hex


def sample_record(response_id: str, text: str = "Hello!") -> dict:
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1_700_000_000,
        "model": "claude-sonnet-4",
        "status": "completed",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        "temperature": 0.7,
        "metadata": {},
        "previous_response_id": None,
        "flags": [True, False, None, 1.5e-9, -3],
    }


# ------------------------------------------------------------------ both backends


async def test_round_trip(make_store):
    store = make_store()
    rid = new_id()
    record = sample_record(rid)
    await store.put(rid, record)
    got = await store.get(rid)
    assert got == record
    assert got is not record


async def test_unknown_id_is_none(make_store):
    store = make_store()
    assert await store.get(new_id()) is None


async def test_delete(make_store):
    store = make_store()
    rid, other = new_id(), new_id()
    await store.put(rid, sample_record(rid))
    await store.put(other, sample_record(other))
    assert await store.delete(rid) is True
    assert await store.get(rid) is None
    assert await store.delete(rid) is False
    assert await store.delete(new_id()) is False
    assert await store.get(other) == sample_record(other)


async def test_put_replaces(make_store):
    store = make_store()
    rid = new_id()
    await store.put(rid, sample_record(rid, "first"))
    await store.put(rid, sample_record(rid, "second"))
    assert (await store.get(rid))["output"][0]["content"][0]["text"] == "second"


async def test_ttl_expiry(make_store):
    store = make_store(ttl_seconds=1)
    rid = new_id()
    await store.put(rid, sample_record(rid))
    assert await store.get(rid) is not None
    await asyncio.sleep(1.2)
    assert await store.get(rid) is None
    assert await store.delete(rid) is False


async def test_put_again_restarts_ttl(make_store):
    store = make_store(ttl_seconds=2)
    rid = new_id()
    await store.put(rid, sample_record(rid))
    await asyncio.sleep(1.2)
    await store.put(rid, sample_record(rid))
    await asyncio.sleep(1.2)  # 2.4 s after the first put, 1.2 s after the second
    assert await store.get(rid) is not None


async def test_survives_reopening(make_store):
    first = make_store()
    rid = new_id()
    await first.put(rid, sample_record(rid))
    await first.close()
    second = make_store()
    assert await second.get(rid) == sample_record(rid)
    assert await second.delete(rid) is True


async def test_large_record(make_store):
    store = make_store()
    rid = new_id()
    chunk = "0123456789abcdef" * 64  # 1 KiB
    record = sample_record(rid, "big:" + chunk * 1024)  # > 1 MiB of text
    record["output"] += [{"type": "reasoning", "summary": [{"text": "é" * 200_000}]}]
    assert len(json.dumps(record)) > 1_000_000
    await store.put(rid, record)
    assert await store.get(rid) == record


async def test_unicode(make_store):
    store = make_store()
    text = "héllo — 你好，世界 — こんにちは — مرحبا — 🦜🏳️‍🌈👩🏽‍💻 — e\u0301 — \u200b\u2028\u2029 — \x00\x1f\x7f"
    rid = "resp_ünïcødé_日本_🦜_" + uuid.uuid4().hex
    record = sample_record(rid, text)
    record["键"] = {"🔑": ["值", "\ud83e"]}  # a lone surrogate (json.loads accepts "\ud83e")
    await store.put(rid, record)
    assert await store.get(rid) == record
    assert await store.delete(rid) is True


async def test_many_concurrent_operations(make_store):
    store = make_store()
    ids = [new_id() for _ in range(60)]
    await asyncio.gather(*(store.put(rid, sample_record(rid, rid)) for rid in ids))
    got = await asyncio.gather(*(store.get(rid) for rid in ids))
    assert got == [sample_record(rid, rid) for rid in ids]
    deleted = await asyncio.gather(*(store.delete(rid) for rid in ids[::2]))
    assert deleted == [True] * 30
    got = await asyncio.gather(*(store.get(rid) for rid in ids))
    assert [g is None for g in got] == [i % 2 == 0 for i in range(60)]


async def test_bad_arguments(make_store):
    store = make_store()
    with pytest.raises(ValueError):
        await store.put("", {"a": 1})
    with pytest.raises(TypeError):
        await store.put(new_id(), ["not", "a", "dict"])
    with pytest.raises(TypeError):
        await store.put(new_id(), {"not json": object()})


async def test_closed_store_raises(make_store):
    store = make_store()
    await store.ping()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get(new_id())


# ------------------------------------------------------------------ open_store


def test_open_store_kinds(tmp_path):
    s = open_store(" SQLite ", str(tmp_path / "d"), 60)
    assert isinstance(s, SQLiteStore)
    assert s.path == str(tmp_path / "d" / FILENAME)
    assert not (tmp_path / "d").exists()  # nothing happens before first use

    r = open_store("redis://127.0.0.1:6379/15", str(tmp_path), 60)
    assert isinstance(r, RedisStore)
    assert r.key_prefix == KEY_PREFIX == "engine:resp:"
    assert r.client.connection_pool.connection_kwargs["db"] == 15

    t = open_store("rediss://:pw@cache.example.com:6380/2", str(tmp_path), 60)
    kw = t.client.connection_pool.connection_kwargs
    assert t.client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert (kw["host"], kw["port"], kw["db"], kw["password"]) == ("cache.example.com", 6380, 2, "pw")
    assert "pw" not in repr(t)

    u = open_store("unix:///run/redis/redis.sock?db=3", str(tmp_path), 60)
    assert u.client.connection_pool.connection_class.__name__ == "UnixDomainSocketConnection"
    assert u.client.connection_pool.connection_kwargs["path"] == "/run/redis/redis.sock"

    with pytest.raises(ValueError, match="unknown response store"):
        open_store("memcached://x", str(tmp_path), 60)
    with pytest.raises(ValueError, match="ttl_seconds"):
        open_store("sqlite", str(tmp_path), 0)
    for bad in ("redis://:hunter2@localhost/abc", "redis://:hunter2@localhost:99999", "redis://:hunter2@h/?db=x"):
        with pytest.raises(ValueError, match="invalid Redis URL") as info:
            open_store(bad, str(tmp_path), 60)
        assert "hunter2" not in str(info.value)


# ------------------------------------------------------------------ SQLite specifics


async def test_sqlite_creates_folder_and_uses_wal(tmp_path):
    data_dir = tmp_path / "a" / "b"
    store = open_store("sqlite", str(data_dir), 60)
    try:
        rid = new_id()
        await store.put(rid, {"x": 1})
        assert (data_dir / FILENAME).is_file()
        con = sqlite3.connect(data_dir / FILENAME)
        try:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            cols = [(r[1], r[2]) for r in con.execute("PRAGMA table_info(responses)")]
            assert cols == [("id", "TEXT"), ("expires_at", "REAL"), ("body", "TEXT")]
            (body,) = con.execute("SELECT body FROM responses WHERE id = ?", (rid,)).fetchone()
            assert json.loads(body) == {"x": 1}
        finally:
            con.close()
    finally:
        await store.close()


async def test_sqlite_injected_clock_and_purge(tmp_path):
    now = [1_000_000.0]
    store = SQLiteStore(str(tmp_path), 100, clock=lambda: now[0])

    def raw_ids() -> set[str]:
        con = sqlite3.connect(tmp_path / FILENAME)
        try:
            return {r[0] for r in con.execute("SELECT id FROM responses")}
        finally:
            con.close()

    try:
        await store.put("old", {"n": 1})  # first put purges (nothing yet), next purge at +60
        now[0] += 99.9
        assert await store.get("old") == {"n": 1}
        now[0] += 0.1  # exactly expires_at: gone
        assert await store.get("old") is None
        assert await store.delete("old") is False
        assert raw_ids() == {"old"}  # invisible, not yet purged

        await store.put("new", {"n": 2})  # 100 s after the last purge: purges now
        assert raw_ids() == {"new"}

        now[0] += 150  # "new" expired; but the last purge was just now...
        await store.put("newer", {"n": 3})  # ...150 s ago, so this put purges again
        assert raw_ids() == {"newer"}

        now[0] += 101  # "newer" expired
        await store.put("a", {})  # purges: last purge 101 s ago
        now[0] += 30
        await store.put("b", {})  # within a minute of the last purge: no purge
        now[0] += 80  # "a" expired (110 s old)
        await store.put("c", {})  # 110 s after the last purge: purges "a"
        assert raw_ids() == {"b", "c"}
        assert await store.purge() == 0
        now[0] += 1000
        assert await store.purge() == 2
        assert raw_ids() == set()
    finally:
        await store.close()


async def test_sqlite_unusable_data_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = open_store("sqlite", str(blocker / "sub"), 60)
    with pytest.raises(StoreError, match="cannot create data_dir"):
        await store.put(new_id(), {})
    await store.close()


def _sqlite_worker(data_dir: str, name: str, count: int, barrier) -> None:
    """Run in a thread or a process: its own store on the shared file, writing hard."""

    async def main() -> None:
        store = SQLiteStore(data_dir, 60, purge_interval=0.0)  # purge on every put: more writes
        try:
            barrier.wait()
            for i in range(count):
                rid = f"{name}-{i}"
                await store.put(rid, {"by": name, "i": i, "pad": "x" * 2000})
                assert await store.get(rid) == {"by": name, "i": i, "pad": "x" * 2000}
                if i % 5 == 0:
                    assert await store.delete(rid) is True
        finally:
            await store.close()

    asyncio.run(main())


def _expected_ids(names, count) -> set[str]:
    return {f"{n}-{i}" for n in names for i in range(count) if i % 5}


def _stored_ids(data_dir) -> set[str]:
    con = sqlite3.connect(os.path.join(data_dir, FILENAME))
    try:
        return {r[0] for r in con.execute("SELECT id FROM responses")}
    finally:
        con.close()


def test_sqlite_two_threads_share_the_file(tmp_path):
    data_dir = str(tmp_path / "shared")  # does not exist yet: both race to create it
    names, count = ["t1", "t2", "t3"], 150
    barrier = threading.Barrier(len(names))
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            _sqlite_worker(data_dir, name, count, barrier)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert _stored_ids(data_dir) == _expected_ids(names, count)


def test_sqlite_two_processes_share_the_file(tmp_path):
    data_dir = str(tmp_path / "shared")
    names, count = ["p1", "p2"], 150
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(names))
    procs = [ctx.Process(target=_sqlite_worker, args=(data_dir, n, count, barrier)) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert _stored_ids(data_dir) == _expected_ids(names, count)


# ------------------------------------------------------------------ Redis specifics


async def test_redis_key_layout_and_ttl(admin, tmp_path):
    store = open_store(REDIS_URL, str(tmp_path), 3600)
    rid = new_id()
    try:
        await store.put(rid, {"text": "héllo"})
        raw = await admin.get(KEY_PREFIX + rid)
        assert json.loads(raw.decode("utf-8")) == {"text": "héllo"}
        ttl = await admin.ttl(KEY_PREFIX + rid)
        assert 3590 <= ttl <= 3600
        assert not (tmp_path / FILENAME).exists()
    finally:
        await admin.delete(KEY_PREFIX + rid)
        await store.close()


async def test_redis_unreachable_is_a_clear_error(tmp_path):
    port = _free_port()
    store = open_store(f"redis://127.0.0.1:{port}/0", str(tmp_path), 60)
    with pytest.raises(StoreError, match=rf"cannot connect to Redis at 127\.0\.0\.1:{port}"):
        await store.get(new_id())
    await store.close()


async def test_redis_auth_failure_is_a_clear_error(admin, tmp_path):
    store = open_store("redis://nobody:s3cr3t-pw@127.0.0.1:6379/15", str(tmp_path), 60)
    with pytest.raises(StoreError, match="refused AUTH") as info:
        await store.ping()
    assert "s3cr3t-pw" not in str(info.value)
    await store.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_redis_store_reconnects_after_its_connection_is_killed(admin, tmp_path):
    store = open_store(REDIS_URL, str(tmp_path), 60)
    rid = new_id()
    try:
        await store.put(rid, {"n": 1})
        first = await store.client.client_id()  # the pool's one connection
        assert await admin.execute_command("CLIENT", "KILL", "ID", first) == 1
        await asyncio.sleep(0.05)
        assert await store.get(rid) == {"n": 1}  # a fresh connection, db 15 selected again
        assert await store.client.client_id() != first
    finally:
        await admin.delete(KEY_PREFIX + rid)
        await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get(rid)


# ------------------------------------------------------------------ Redis over a unix socket


@pytest.fixture
def unix_redis(tmp_path):
    """A redis-server of this test's own, listening on a unix socket only, in a temp folder."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket
    import time

    for _ in range(500):
        try:
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(1)
                c.connect(str(sock))
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("redis-server did not open its unix socket")
    yield str(sock)
    proc.terminate()
    proc.wait(10)


async def test_redis_store_over_a_unix_socket(unix_redis, tmp_path):
    store = open_store(f"unix://{unix_redis}?db=2", str(tmp_path), 60, timeout=2)
    rid = new_id()
    try:
        await store.ping()
        await store.put(rid, sample_record(rid))
        assert await store.get(rid) == sample_record(rid)
        raw = aioredis.Redis.from_url(f"unix://{unix_redis}?db=2")
        try:
            assert 50 <= await raw.ttl(KEY_PREFIX + rid) <= 60  # db 2 of that server, SET ... EX
        finally:
            await raw.aclose()
        assert await store.delete(rid) is True
        assert await store.get(rid) is None
    finally:
        await store.close()


async def test_redis_unix_socket_missing_is_a_clear_error(tmp_path):
    path = tmp_path / "absent.sock"
    store = open_store(f"unix://{path}", str(tmp_path), 60, timeout=1)
    with pytest.raises(StoreError, match=f"cannot connect to Redis at {path}"):
        await store.ping()
    await store.close()


def test_config_takes_a_unix_socket_url():
    from engine import config

    cfg = config.load({}, env={"TOKLIGENCE_SESSION_STORE": "unix:///run/redis.sock?db=1"})
    assert cfg.session_store == "unix:///run/redis.sock?db=1"
    with pytest.raises(config.ConfigError, match="session_store"):
        config.load({}, env={"TOKLIGENCE_SESSION_STORE": "unix://"})


# ------------------------------------------------------------------ Sentinel and Cluster settings


def test_sentinel_settings_build_a_sentinel_client(tmp_path):
    from redis.asyncio.sentinel import SentinelConnectionPool

    from engine import config

    cfg = config.load({}, env={
        "TOKLIGENCE_SESSION_STORE": "rediss://app:s3cret@ignored:1/4?ssl_ca_certs=/etc/ca.pem",
        "TOKLIGENCE_REDIS_SENTINELS": "10.0.0.1:26379, [fd00::2]:26380",
        "TOKLIGENCE_REDIS_SENTINEL_MASTER": "gateway",
        "TOKLIGENCE_REDIS_SENTINEL_PASSWORD": "sentinel-pw",
    })
    assert cfg.redis_sentinels == (("10.0.0.1", 26379), ("fd00::2", 26380))
    assert "sentinel-pw" not in repr(cfg)
    store = open_store(cfg.session_store, str(tmp_path), 60, timeout=2, settings=cfg)
    pool = store.client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "gateway"
    kw = pool.connection_kwargs
    assert (kw["db"], kw["username"], kw["password"], kw["ssl_ca_certs"]) == (4, "app", "s3cret", "/etc/ca.pem")
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"  # rediss://: TLS to the master
    assert "host" not in kw  # the master's address comes from Sentinel
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["host"] for s in sentinels] == ["10.0.0.1", "fd00::2"]
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380]
    assert all(s.connection_pool.connection_kwargs["password"] == "sentinel-pw" for s in sentinels)
    assert "gateway" in repr(store) and "10.0.0.1:26379" in repr(store)


def test_cluster_setting_builds_a_cluster_client(tmp_path):
    from redis.asyncio.cluster import RedisCluster

    from engine import config

    cfg = config.load({}, env={"TOKLIGENCE_SESSION_STORE": "redis://:pw@node1.internal:7000/0",
                               "TOKLIGENCE_REDIS_CLUSTER": "true"})
    assert cfg.redis_cluster is True
    store = open_store(cfg.session_store, str(tmp_path), 60, timeout=2, settings=cfg)
    assert isinstance(store.client, RedisCluster)
    assert [(n.host, n.port) for n in store.client.nodes_manager.startup_nodes.values()] == [("node1.internal", 7000)]
    assert store.client.nodes_manager.connection_kwargs["password"] == "pw"

    both = config.load({}, env={"TOKLIGENCE_SESSION_STORE": "redis://n:7000", "TOKLIGENCE_REDIS_CLUSTER": "1",
                                "TOKLIGENCE_REDIS_SENTINELS": "s:26379"})
    with pytest.raises(ValueError, match="exclude each other"):
        open_store(both.session_store, str(tmp_path), 60, settings=both)
    db3 = config.load({}, env={"TOKLIGENCE_SESSION_STORE": "redis://n:7000/3", "TOKLIGENCE_REDIS_CLUSTER": "1"})
    with pytest.raises(ValueError, match="database 0 only"):
        open_store(db3.session_store, str(tmp_path), 60, settings=db3)


def test_bad_sentinel_addresses_are_a_config_error():
    from engine import config

    with pytest.raises(config.ConfigError, match="redis_sentinels"):
        config.load({}, env={"TOKLIGENCE_REDIS_SENTINELS": "10.0.0.1"})
