"""Response store (engine/store): both backends through the same tests, the
SQLite specifics (WAL, purge, several threads/processes on one file) and the
RESP2 client (wire format, errors, reconnects, AUTH/SELECT, TLS).

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
from engine.store.resp import (
    RedisClient,
    RedisConnectionError,
    RedisError,
    RedisProtocolError,
    RedisReplyError,
    RedisTimeoutError,
    encode_command,
    parse_url,
    read_reply,
)
from engine.store.sqlite import FILENAME, SQLiteStore

REDIS_URL = "redis://127.0.0.1:6379/15"


# ------------------------------------------------------------------ fixtures


async def _require_redis() -> None:
    client = RedisClient(REDIS_URL, connect_timeout=2.0, command_timeout=5.0)
    try:
        await client.ping()
    except RedisError as e:
        pytest.fail(f"Redis is required for these tests (CI starts it on 127.0.0.1:6379): {e}")
    finally:
        await client.close()


async def _delete_keys(prefix: str) -> None:
    client = RedisClient(REDIS_URL)
    try:
        keys = await client.execute("KEYS", prefix + "*")
        if keys:
            await client.delete(*keys)
    finally:
        await client.close()


@pytest.fixture
async def redis_prefix():
    """A unique key prefix in db 15; every key under it is deleted afterwards."""
    await _require_redis()
    prefix = f"engine:test:{uuid.uuid4().hex}:"
    yield prefix
    await _delete_keys(prefix)


@pytest.fixture
async def admin():
    """A raw RESP client on db 15 for looking behind a store's back."""
    await _require_redis()
    client = RedisClient(REDIS_URL)
    yield client
    await client.close()


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
    assert r.client.params.db == 15

    t = open_store("rediss://:pw@cache.example.com:6380/2", str(tmp_path), 60)
    assert t.client.params.tls and t.client.params.password == "pw"

    with pytest.raises(ValueError, match="unknown response store"):
        open_store("memcached://x", str(tmp_path), 60)
    with pytest.raises(ValueError, match="ttl_seconds"):
        open_store("sqlite", str(tmp_path), 0)
    with pytest.raises(ValueError, match="database must be a number"):
        open_store("redis://localhost/abc", str(tmp_path), 60)


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
        ttl = await admin.execute("TTL", KEY_PREFIX + rid)
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
    store = open_store("redis://:s3cr3t-pw@127.0.0.1:6379/15", str(tmp_path), 60)
    with pytest.raises(StoreError, match="refused AUTH") as info:
        await store.ping()
    assert "s3cr3t-pw" not in str(info.value)
    await store.close()


# ------------------------------------------------------------------ RESP: wire format


def test_encode_command():
    assert encode_command("SET", "k", b"v\r\n", "EX", 60) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\nEX\r\n$2\r\n60\r\n"
    )
    assert encode_command("GET", "ключ") == b"*2\r\n$3\r\nGET\r\n$8\r\n\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87\r\n"
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)
    with pytest.raises(ValueError):
        encode_command()


async def _parse(data: bytes, *, chunks: int = 1):
    reader = asyncio.StreamReader()
    step = max(1, -(-len(data) // chunks))

    async def feed() -> None:
        for i in range(0, len(data), step):
            reader.feed_data(data[i : i + step])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    try:
        return await read_reply(reader)
    finally:
        await feeder


async def test_parse_bulk_strings():
    assert await _parse(b"$5\r\nhello\r\n") == b"hello"
    assert await _parse(b"$0\r\n\r\n") == b""
    assert await _parse(b"$-1\r\n") is None
    assert await _parse(b"$6\r\na\r\nb\x00c\r\n") == b"a\r\nb\x00c"  # binary-safe
    big = os.urandom(300_000)
    assert await _parse(b"$%d\r\n%s\r\n" % (len(big), big), chunks=37) == big
    with pytest.raises(RedisProtocolError):
        await _parse(b"$3\r\nabcde\r\n")  # length mismatch
    with pytest.raises(asyncio.IncompleteReadError):
        await _parse(b"$10\r\nabc")  # connection closed mid-reply


async def test_parse_other_types():
    assert await _parse(b"+OK\r\n") == "OK"
    assert await _parse(b":42\r\n") == 42
    assert await _parse(b":-7\r\n") == -7
    assert await _parse(b"*-1\r\n") is None
    assert await _parse(b"*0\r\n") == []
    nested = await _parse(b"*4\r\n$3\r\nfoo\r\n:1\r\n*2\r\n+a\r\n$-1\r\n-ERR inside\r\n", chunks=9)
    assert nested[:3] == [b"foo", 1, ["a", None]]
    assert isinstance(nested[3], RedisReplyError) and nested[3].message == "ERR inside"
    err = await _parse(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    assert isinstance(err, RedisReplyError) and err.code == "WRONGTYPE"
    with pytest.raises(RedisProtocolError, match="unexpected reply type"):
        await _parse(b"!oops\r\n")
    with pytest.raises(RedisProtocolError, match="invalid integer"):
        await _parse(b":x\r\n")


def test_parse_url():
    p = parse_url("redis://localhost")
    assert (p.host, p.port, p.db, p.username, p.password, p.tls) == ("localhost", 6379, 0, None, None, False)
    p = parse_url("redis://:p%40ss%3Aword@10.0.0.5:6380/3")
    assert (p.host, p.port, p.db, p.username, p.password) == ("10.0.0.5", 6380, 3, None, "p@ss:word")
    p = parse_url("redis://alice:pw@[::1]:7000?db=4")
    assert (p.host, p.port, p.db, p.username, p.password, p.address) == ("::1", 7000, 4, "alice", "pw", "[::1]:7000")
    p = parse_url("REDISS://cache.example.com/1?ssl_cert_reqs=none")
    assert p.tls and not p.tls_verify and p.db == 1
    for bad, message in [
        ("http://localhost", "scheme"),
        ("redis://localhost/x", "database must be a number"),
        ("redis://localhost:99999", "invalid Redis URL"),
        ("redis://localhost/1?db=2", "database given twice"),
        ("redis://localhost/?socket_timeout=3", "unsupported query parameter"),
        ("redis://localhost/?ssl_cert_reqs=none", "need a rediss://"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_url(bad)
    with pytest.raises(ValueError) as info:
        parse_url("redis://u:hunter2@h/?bogus=1")
    assert "hunter2" not in str(info.value)


# ------------------------------------------------------------------ RESP: real server


async def test_error_replies_are_raised_and_connection_survives(admin, redis_prefix):
    client = RedisClient(REDIS_URL, max_connections=1)
    try:
        with pytest.raises(RedisReplyError, match="wrong number of arguments") as info:
            await client.execute("GET")
        assert info.value.code == "ERR"
        key = redis_prefix + "list"
        await client.execute("RPUSH", key, "x")
        with pytest.raises(RedisReplyError) as info:
            await client.get(key)
        assert info.value.code == "WRONGTYPE"
        await client.ping()  # same (only) connection, still in sync
        assert await client.set(redis_prefix + "k", "v", ex=10) is True
        assert await client.get(redis_prefix + "k") == b"v"
        assert await client.delete(redis_prefix + "k", redis_prefix + "nope") == 1
        assert await client.get(redis_prefix + "k") is None
    finally:
        await client.close()


async def test_reconnects_after_client_kill(admin):
    client = RedisClient(REDIS_URL, max_connections=1)
    try:
        first = await client.execute("CLIENT", "ID")
        assert b"db=15" in await client.execute("CLIENT", "INFO")
        assert await admin.execute("CLIENT", "KILL", "ID", first) == 1
        await asyncio.sleep(0.05)
        await client.ping()
        second = await client.execute("CLIENT", "ID")
        assert second != first
        # the new connection SELECTed db 15 again
        assert b"db=15" in await client.execute("CLIENT", "INFO")
    finally:
        await client.close()


async def test_reconnects_when_kill_is_not_yet_noticed(admin):
    """The kill races the next command: the write succeeds, the read sees EOF."""
    client = RedisClient(REDIS_URL, max_connections=1)
    try:
        first = await client.execute("CLIENT", "ID")
        await admin.execute("CLIENT", "KILL", "ID", first)
        assert await client.execute("CLIENT", "ID") != first
    finally:
        await client.close()


# ------------------------------------------------------------------ RESP: fake server

CLOSE = object()  # close the connection without replying
HANG = object()  # never reply


class FakeRedis:
    """A tiny RESP server: ``handler(command: list[bytes], conn_no: int, cmd_no: int)``
    returns the raw reply bytes, CLOSE or HANG."""

    def __init__(self, handler, ssl_context: ssl.SSLContext | None = None):
        self.handler = handler
        self.ssl_context = ssl_context
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "FakeRedis":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for w in self._writers:
            w.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        conn_no = self.connections
        self._writers.append(writer)
        cmd_no = 0
        try:
            while True:
                try:
                    command = await read_reply(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                cmd_no += 1
                self.commands.append(command)
                reply = self.handler(command, conn_no, cmd_no)
                if reply is CLOSE:
                    return
                if reply is HANG:
                    await asyncio.sleep(3600)
                writer.write(reply)
                await writer.drain()
        finally:
            writer.close()


def pong(command, conn_no, cmd_no):
    if command[0].upper() == b"PING":
        return b"+PONG\r\n"
    if command[0].upper() in (b"AUTH", b"SELECT"):
        return b"+OK\r\n"
    return b"-ERR unknown command\r\n"


async def test_fake_server_closing_after_every_reply():
    def handler(command, conn_no, cmd_no):
        return pong(command, conn_no, cmd_no)

    class ClosingFake(FakeRedis):
        async def _serve(self, reader, writer):
            self.connections += 1
            command = await read_reply(reader)
            self.commands.append(command)
            writer.write(handler(command, self.connections, 1))
            await writer.drain()
            writer.close()

    async with ClosingFake(handler) as fake:
        client = RedisClient(f"redis://127.0.0.1:{fake.port}", max_connections=1)
        for _ in range(5):
            await client.ping()
            await asyncio.sleep(0.01)
        assert fake.connections == 5
        for _ in range(3):  # no pause: the EOF may not be noticed before reuse
            await client.ping()
        assert fake.connections == 8
        await client.close()


async def test_retry_once_when_pooled_connection_dies_mid_command():
    def handler(command, conn_no, cmd_no):
        if conn_no == 1 and cmd_no == 2:
            return CLOSE  # pooled connection: read the command, then drop it
        return pong(command, conn_no, cmd_no)

    async with FakeRedis(handler) as fake:
        client = RedisClient(f"redis://127.0.0.1:{fake.port}")
        await client.ping()
        await client.ping()  # retried transparently on connection 2
        assert fake.connections == 2
        assert len(fake.commands) == 3
        await client.close()


async def test_fresh_connection_failure_is_raised_not_retried_forever():
    async with FakeRedis(lambda *a: CLOSE) as fake:
        client = RedisClient(f"redis://127.0.0.1:{fake.port}")
        with pytest.raises(RedisConnectionError, match="lost the connection to Redis .* during PING"):
            await client.ping()
        assert fake.connections == 1
        await client.close()


async def test_partial_reply_then_close_is_an_error():
    def handler(command, conn_no, cmd_no):
        if cmd_no == 2:
            return b"$100\r\nonly-part"  # a reply starts, then the server hangs up
        return pong(command, conn_no, cmd_no)

    class Fake(FakeRedis):
        async def _serve(self, reader, writer):
            self.connections += 1
            n = 0
            while True:
                try:
                    command = await read_reply(reader)
                except asyncio.IncompleteReadError:
                    break
                n += 1
                writer.write(handler(command, self.connections, n))
                await writer.drain()
                if n == 2:
                    break
            writer.close()

    async with Fake(handler) as fake:
        client = RedisClient(f"redis://127.0.0.1:{fake.port}")
        await client.ping()
        with pytest.raises(RedisConnectionError, match="lost the connection"):
            await client.execute("GET", "k")
        assert fake.connections == 1  # a reply had started: not retried
        await client.ping()  # and the client recovers
        await client.close()


async def test_auth_and_select_from_url():
    async with FakeRedis(pong) as fake:
        client = RedisClient(f"redis://alice:p%40ss@127.0.0.1:{fake.port}/3")
        await client.ping()
        await client.ping()
        assert fake.commands == [[b"AUTH", b"alice", b"p@ss"], [b"SELECT", b"3"], [b"PING"], [b"PING"]]
        await client.close()

    async with FakeRedis(pong) as fake:
        client = RedisClient(f"redis://:only-pw@127.0.0.1:{fake.port}")
        await client.ping()
        assert fake.commands == [[b"AUTH", b"only-pw"], [b"PING"]]
        await client.close()


async def test_auth_refused():
    def handler(command, conn_no, cmd_no):
        if command[0] == b"AUTH":
            return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        return pong(command, conn_no, cmd_no)

    async with FakeRedis(handler) as fake:
        client = RedisClient(f"redis://:bad@127.0.0.1:{fake.port}")
        with pytest.raises(RedisReplyError, match="refused AUTH: WRONGPASS") as info:
            await client.ping()
        assert "bad" not in str(info.value).replace("WRONGPASS", "")
        await client.close()


async def test_command_timeout_discards_connection():
    def handler(command, conn_no, cmd_no):
        return HANG if conn_no == 1 else pong(command, conn_no, cmd_no)

    async with FakeRedis(handler) as fake:
        client = RedisClient(f"redis://127.0.0.1:{fake.port}", command_timeout=0.2)
        with pytest.raises(RedisTimeoutError, match="did not answer PING within 0.2s"):
            await client.ping()
        await client.ping()  # a new connection; the hung one is gone
        assert fake.connections == 2
        await client.close()


async def test_cancelled_command_discards_connection():
    def handler(command, conn_no, cmd_no):
        return HANG if conn_no == 1 else pong(command, conn_no, cmd_no)

    async with FakeRedis(handler) as fake:
        client = RedisClient(f"redis://127.0.0.1:{fake.port}")
        task = asyncio.create_task(client.ping())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.ping()
        assert fake.connections == 2
        await client.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connection_refused():
    port = _free_port()
    client = RedisClient(f"redis://127.0.0.1:{port}")
    with pytest.raises(RedisConnectionError, match=rf"cannot connect to Redis at 127\.0\.0\.1:{port}"):
        await client.ping()
    await client.close()
    with pytest.raises(RedisError, match="closed"):
        await client.ping()


async def test_pool_limits_connections():
    async with FakeRedis(pong) as fake:
        client = RedisClient(f"redis://127.0.0.1:{fake.port}", max_connections=3)
        await asyncio.gather(*(client.ping() for _ in range(40)))
        assert 1 <= fake.connections <= 3
        await client.close()


# ------------------------------------------------------------------ RESP: TLS (rediss://)


@pytest.fixture(scope="module")
def self_signed_cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def test_rediss_tls(self_signed_cert):
    cert, key = self_signed_cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async with FakeRedis(pong, ssl_context=server_ctx) as fake:
        client = RedisClient(f"rediss://localhost:{fake.port}/2?ssl_ca_certs={cert}")
        await client.ping()
        assert fake.commands == [[b"SELECT", b"2"], [b"PING"]]
        await client.close()

        client = RedisClient(f"rediss://127.0.0.1:{fake.port}/?ssl_cert_reqs=none")
        await client.ping()
        await client.close()

        client = RedisClient(f"rediss://localhost:{fake.port}")  # system CAs: not trusted
        with pytest.raises(RedisConnectionError, match="TLS handshake with Redis at localhost:.* failed"):
            await client.ping()
        await client.close()
