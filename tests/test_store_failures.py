"""The response store under attack and failure, through `engine serve`: each gateway key sees only
the responses it created; a store that cannot be used at start stops the gateway with a clear
line; a hung or stopped Redis costs a request at most store_timeout and is an error, never a 200
with an id that 404s; /health says when the store is down.

Redis here is a redis-server this module starts on a spare port (never the shared one on 6379),
so it can be paused (SIGSTOP) and stopped."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time

import pytest

from support.fake_upstream import anthropic_message, json_reply
from support.gateway import GatewayStartError, free_port

KEY_A, KEY_B = "gw-key-alpha-000000001", "gw-key-bravo-000000002"


def req(gw, method: str, path: str, body: dict | None = None, key: str | None = None, timeout: float = 10.0):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    t = time.monotonic()
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None), time.monotonic() - t
    finally:
        conn.close()


def create(gw, fake, key=None, **extra):
    fake.enqueue(json_reply(anthropic_message("stored text of " + (key or "anon"))))
    return req(gw, "POST", "/v1/responses", {"model": "claude-sonnet-4-5", "input": "hi", **extra}, key)


# ------------------------------------------------------------------ tenants


def test_a_key_sees_only_the_responses_it_created(make_gateway, fake_anthropic):
    gw = make_gateway({"TOKLIGENCE_AUTH_DISABLED": "false", "TOKLIGENCE_API_KEYS": f"{KEY_A},{KEY_B}"})
    status, body, _ = create(gw, fake_anthropic, KEY_A)
    assert status == 200
    rid = body["id"]
    # another key: read, continue and delete all answer 404, as for an unknown id
    status, err, _ = req(gw, "GET", f"/v1/responses/{rid}", key=KEY_B)
    assert status == 404 and err["error"]["code"] == "not_found"
    n = len(fake_anthropic.requests)
    status, err, _ = req(gw, "POST", "/v1/responses",
                         {"model": "claude-sonnet-4-5", "input": "more", "previous_response_id": rid}, KEY_B)
    assert status == 404 and err["error"]["code"] == "previous_response_not_found"
    assert len(fake_anthropic.requests) == n  # nothing of A's conversation went upstream
    status, _, _ = req(gw, "DELETE", f"/v1/responses/{rid}", key=KEY_B)
    assert status == 404
    # the owner still has it, can continue it and delete it
    status, got, _ = req(gw, "GET", f"/v1/responses/{rid}", key=KEY_A)
    assert status == 200 and got["id"] == rid
    status, _, _ = create(gw, fake_anthropic, KEY_A, previous_response_id=rid)
    assert status == 200
    assert "stored text of gw-key-alpha" in json.dumps(fake_anthropic.requests[-1].json)
    status, got, _ = req(gw, "DELETE", f"/v1/responses/{rid}", key=KEY_A)
    assert status == 200 and got["deleted"] is True


def test_records_stored_without_an_owner_keep_working(make_gateway, fake_anthropic):
    gw = make_gateway({"TOKLIGENCE_AUTH_DISABLED": "false", "TOKLIGENCE_API_KEYS": KEY_A})
    status, body, _ = create(gw, fake_anthropic, KEY_A)
    rid = body["id"]
    # the record as a store written before owners were kept holds it
    path = os.path.join(gw.data_dir, "responses.sqlite3")
    with sqlite3.connect(path) as db:
        (text,) = db.execute("SELECT body FROM responses WHERE id = ?", (rid,)).fetchone()
        record = json.loads(text)
        del record["owner"]
        db.execute("UPDATE responses SET body = ? WHERE id = ?", (json.dumps(record), rid))
    status, got, _ = req(gw, "GET", f"/v1/responses/{rid}", key=KEY_A)
    assert status == 200 and got["id"] == rid


# ------------------------------------------------------------------ store down at start


def test_an_unwritable_data_dir_stops_the_gateway_at_start(make_gateway, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    gw = make_gateway({"TOKLIGENCE_DATA_DIR": str(blocker / "data")}, start=False)
    with pytest.raises(GatewayStartError):
        gw.start()
    gw.proc.wait(10)
    assert gw.proc.returncode == 1
    assert "the response store is unusable, so the gateway does not start" in gw.output()


def test_redis_down_at_start_stops_the_gateway(make_gateway):
    gw = make_gateway({"TOKLIGENCE_SESSION_STORE": f"redis://127.0.0.1:{free_port()}/0"}, start=False)
    with pytest.raises(GatewayStartError):
        gw.start()
    gw.proc.wait(10)
    assert gw.proc.returncode == 1 and "cannot connect to Redis" in gw.output()


# ------------------------------------------------------------------ Redis paused, then stopped


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield proc, port
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def test_a_paused_then_stopped_redis(make_gateway, fake_anthropic, own_redis):
    proc, port = own_redis
    gw = make_gateway({"TOKLIGENCE_SESSION_STORE": f"redis://127.0.0.1:{port}/0", "TOKLIGENCE_STORE_TIMEOUT": "1"})
    status, body, _ = create(gw, fake_anthropic)
    assert status == 200
    rid = body["id"]
    assert req(gw, "GET", "/health")[0] == 200

    os.kill(proc.pid, signal.SIGSTOP)
    try:
        # a store:true create cannot be stored: an error within about store_timeout, not a 200
        status, err, took = create(gw, fake_anthropic)
        assert status == 503 and err["error"]["code"] == "store_unavailable" and took < 4, (status, took)
        # reading and continuing fail as fast, in the same shape
        status, err, took = req(gw, "GET", f"/v1/responses/{rid}")
        assert status == 503 and took < 4
        # what needs no store is unaffected
        status, _, took = create(gw, fake_anthropic, store=False)
        assert status == 200 and took < 1
        status, health, took = req(gw, "GET", "/health")
        assert status == 503 and health["status"] == "degraded" and "store" in health and took < 4
    finally:
        os.kill(proc.pid, signal.SIGCONT)

    assert req(gw, "GET", "/health")[0] == 200
    assert req(gw, "GET", f"/v1/responses/{rid}")[0] == 200

    proc.terminate()
    proc.wait(10)
    status, err, took = create(gw, fake_anthropic)
    assert status == 503 and err["error"]["code"] == "store_unavailable" and took < 4
    status, health, _ = req(gw, "GET", "/health")
    assert status == 503 and health["status"] == "degraded"


def test_a_stream_that_cannot_be_stored_ends_with_an_error_not_completed(make_gateway, fake_anthropic, own_redis):
    from support.fake_upstream import anthropic_text_stream, sse_reply
    proc, port = own_redis
    gw = make_gateway({"TOKLIGENCE_SESSION_STORE": f"redis://127.0.0.1:{port}/0", "TOKLIGENCE_STORE_TIMEOUT": "1"})
    proc.terminate()
    proc.wait(10)
    fake_anthropic.enqueue(sse_reply(anthropic_text_stream()))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("POST", "/v1/responses", json.dumps({"model": "claude-sonnet-4-5", "input": "hi", "stream": True}),
                 {"content-type": "application/json"})
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    assert r.status == 200
    assert "response.completed" not in text
    assert "could not be stored" in text
