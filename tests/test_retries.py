"""Retries before the first byte: 429 with retry-after, 529, 5xx, connection errors."""
from __future__ import annotations

import time

import pytest

from engine.server.upstream import RetryPolicy, UpstreamUnreachable, retry_delay
from support.retrying import post_with_retries
from support.fake_upstream import FakeUpstream, error_reply, json_reply, stall_reply


def test_retry_delay_honours_retry_after_and_caps_it():
    p = RetryPolicy(base_delay=0.5, max_delay=10)
    assert retry_delay(0, p, "3") == 3.0
    assert retry_delay(0, p, "3600") == 10
    for attempt in range(5):
        assert 0 <= retry_delay(attempt, p, None) <= min(10, 0.5 * 2 ** attempt)
    assert 0 <= retry_delay(1, p, "soon") <= 1.0  # unreadable header: backoff


async def test_429_with_retry_after_then_success():
    with FakeUpstream("anthropic") as up:
        up.enqueue(error_reply(429, headers={"retry-after": "0.2"}), json_reply({"ok": 1}))
        retries = []
        t = time.monotonic()
        status, _ = await post_with_retries(up.url, RetryPolicy(max_retries=2), retries)
        assert status == 200 and retries == [1] and time.monotonic() - t >= 0.19
        assert len(up.requests) == 2


@pytest.mark.parametrize("status", [529, 500, 503])
async def test_retryable_statuses_are_retried_up_to_the_maximum(status):
    with FakeUpstream("anthropic") as up:
        up.set_default(error_reply(status))
        retries = []
        got, body = await post_with_retries(up.url, RetryPolicy(max_retries=2, base_delay=0.01), retries)
        assert got == status and retries == [1, 2] and len(up.requests) == 3


async def test_400_is_not_retried():
    with FakeUpstream("anthropic") as up:
        up.set_default(error_reply(400))
        retries = []
        got, _ = await post_with_retries(up.url, RetryPolicy(max_retries=3, base_delay=0.01), retries)
        assert got == 400 and retries == [] and len(up.requests) == 1


async def test_connection_refused_raises_after_retries():
    retries = []
    with pytest.raises(UpstreamUnreachable, match="Connect"):
        await post_with_retries("http://127.0.0.1:9", RetryPolicy(max_retries=2, base_delay=0.01), retries)
    assert retries == [1, 2]


async def test_first_byte_timeout():
    with FakeUpstream("anthropic") as up:
        up.set_default(stall_reply(2, before_headers=True))
        with pytest.raises(UpstreamUnreachable, match="first byte"):
            await post_with_retries(up.url, RetryPolicy(max_retries=0, first_byte_timeout=0.3), [])
