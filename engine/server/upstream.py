"""One pooled aiohttp ClientSession per upstream provider, opened at start, closed at shutdown."""
from __future__ import annotations

import aiohttp


class Upstream:
    def __init__(self, name: str, base_url: str, headers: dict, connect_timeout: float = 10.0,
                 read_timeout: float | None = None):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.session: aiohttp.ClientSession | None = None

    async def open(self):
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_read=self.read_timeout)
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
