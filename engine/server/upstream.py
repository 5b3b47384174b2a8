"""One pooled aiohttp ClientSession per upstream provider, opened at start, closed at shutdown."""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import aiohttp


class Upstream:
    def __init__(self, name: str, base_url: str, headers: dict, connect_timeout: float = 10.0,
                 read_timeout: float | None = None):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.connect_timeout = connect_timeout
        self.idle_timeout = read_timeout
        self.policy = RetryPolicy()
        self.session: aiohttp.ClientSession | None = None

    async def open(self):
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        # no total timeout (it would cut healthy long streams); the first-byte and idle timeouts
        # are enforced per request by open_with_retries and the stream watchdog
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                             auto_decompress=True, skip_auto_headers=("User-Agent",))

    async def close(self):
        if self.session is not None:
            await self.session.close()
            self.session = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def post(self, path: str, data: bytes, headers: dict | None = None, params=None):
        h = dict(self.headers)
        if headers:
            h.update(headers)
        return self.session.post(self.url(path), data=data, headers=h, params=params)


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


@dataclass
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 20.0
    first_byte_timeout: float = 120.0


class UpstreamUnreachable(Exception):
    """No answer from the upstream after every try (connection refused, reset, timed out)."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


def retry_delay(attempt: int, policy: RetryPolicy, retry_after: str | None) -> float:
    """retry-after when the upstream gives one (seconds), else exponential backoff with full jitter."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), policy.max_delay)
        except ValueError:
            pass
    return random.uniform(0, min(policy.max_delay, policy.base_delay * (2 ** attempt)))


async def open_with_retries(send, policy: RetryPolicy, on_retry=None):
    """Calls `send()` (returning an aiohttp request context manager) until the upstream answers
    with a status worth keeping. Retries 429/529/5xx and connection errors; nothing has reached
    the client yet, so a retry is invisible to it. Returns (ctx, response); the caller exits ctx."""
    attempt = 0
    while True:
        ctx = send()
        try:
            async with asyncio.timeout(policy.first_byte_timeout):  # no task per request, unlike wait_for
                resp = await ctx.__aenter__()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            if attempt >= policy.max_retries:
                kind = "timed out waiting for the first byte" if isinstance(e, asyncio.TimeoutError) \
                    else f"{type(e).__name__}: {e}"
                raise UpstreamUnreachable(kind, isinstance(e, asyncio.TimeoutError)) from None
            delay = retry_delay(attempt, policy, None)
        else:
            if resp.status not in RETRY_STATUSES or attempt >= policy.max_retries:
                return ctx, resp
            delay = retry_delay(attempt, policy, resp.headers.get("retry-after"))
            await ctx.__aexit__(None, None, None)
        attempt += 1
        if on_retry is not None:
            on_retry(attempt)
        await asyncio.sleep(delay)
