"""One pooled upstream HTTP client per provider, opened at start, closed at shutdown."""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import aiohttp

from .httpclient import HttpClient


class Upstream:
    def __init__(self, name: str, base_url: str, headers: dict, connect_timeout: float = 10.0,
                 read_timeout: float | None = None):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.connect_timeout = connect_timeout
        self.idle_timeout = read_timeout
        self.policy = RetryPolicy()
        self.http: HttpClient | None = None

    async def open(self):
        # no total timeout (it would cut healthy long streams); the first-byte and idle timeouts
        # are enforced per request by open_with_retries and the stream watchdog
        self.http = HttpClient(self.base_url, connect_timeout=self.connect_timeout)

    async def close(self):
        if self.http is not None:
            await self.http.close()
            self.http = None

    @property
    def connections_in_use(self) -> int:
        return self.http.in_use if self.http is not None else 0

    def post(self, path: str, data: bytes, headers: dict | None = None):
        h = self.headers
        if headers:
            h = dict(h)
            h.update(headers)
        return self.http.post(path, data, h)

    def request(self, method: str, path: str, data: bytes, headers, decompress: bool = True):
        """`path` relative to the base URL, query string included as written."""
        return self.http.request(method, path, data, headers, decompress)


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
    """Calls `send()` (returning an HttpClient request) until the upstream answers
    with a status worth keeping. Retries 429/529/5xx and connection errors; nothing has reached
    the client yet, so a retry is invisible to it. Returns (ctx, response); the caller exits ctx."""
    attempt = 0
    while True:
        ctx = send()
        try:
            resp = await ctx.open(policy.first_byte_timeout)
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
