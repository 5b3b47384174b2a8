"""`engine serve --workers 2`: two processes on one port (SO_REUSEPORT), both answering; SIGTERM
to the parent stops every worker."""
from __future__ import annotations

import os
import signal
import time
import urllib.request

import pytest

from support.listen import connects

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(os, "sched_getaffinity"),
                                reason="workers need fork and SO_REUSEPORT (Linux)")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_workers_share_the_port_and_stop_on_sigterm(make_gateway):
    gw = make_gateway(args=["--workers", "2"])
    pids = set()
    deadline = time.monotonic() + 20
    # every urlopen is a new connection: the kernel spreads them over the two listening sockets
    while len(pids) < 2 and time.monotonic() < deadline:
        for _ in range(20):
            with urllib.request.urlopen(gw.url + "/health", timeout=5) as r:
                assert r.status == 200
                pids.add(int(r.headers["x-engine-worker"]))
    assert len(pids) == 2, f"only worker(s) {pids} answered"
    assert gw.pid not in pids  # the parent only supervises
    gw.wait_for_output(r"2 workers on port \d+", timeout=5)
    assert all(_alive(p) for p in pids)

    gw.send_signal(signal.SIGTERM)  # the parent only, not the process group
    gw.proc.wait(15)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "a worker outlived the parent's SIGTERM"
    assert gw.proc.returncode == 0


def test_one_worker_is_one_process(make_gateway):
    gw = make_gateway(args=["--workers", "1"])
    with urllib.request.urlopen(gw.url + "/health", timeout=5) as r:
        assert r.status == 200
        assert "x-engine-worker" not in r.headers


def test_workers_answer_translated_requests(make_gateway, fake_anthropic):
    import json

    gw = make_gateway(args=["--workers", "2"])
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    seen = set()
    for _ in range(30):
        req = urllib.request.Request(gw.url + "/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
            assert json.loads(r.read())["object"] == "chat.completion"
            seen.add(r.headers["x-engine-worker"])
    assert len(fake_anthropic.requests) == 30
    assert len(seen) >= 1


def test_each_worker_listens_with_the_configured_backlog(make_gateway):
    """Each worker's own socket queues `listen_backlog` connections (hardening test of one
    process: test_a_burst_of_connections_waits_in_the_listen_backlog)."""
    gw = make_gateway({"TOKLIGENCE_LISTEN_BACKLOG": "4"}, args=["--workers", "2"])
    gw.wait_for_output(r"2 workers on port \d+", timeout=20)
    with open(f"/proc/{gw.pid}/task/{gw.pid}/children") as f:
        workers = [int(p) for p in f.read().split()]
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        # up to backlog + 1 per worker socket, however the kernel spreads the connections
        assert 1 <= connects(gw.port, 16) <= 10
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
