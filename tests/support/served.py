"""What a request through the running app sent upstream."""
from __future__ import annotations


async def sent_upstream(session, url, raw: bytes, upstream) -> dict:
    """POSTs `raw` (a JSON body) to `url`, asserts a 200 and reads the answer whole; returns the
    body `upstream` (a fake upstream) last received, without its `metadata` (ids of the call)."""
    async with session.post(url, data=raw, headers={"content-type": "application/json"}) as r:
        assert r.status == 200, await r.text()
        await r.read()
    body = upstream.last.json
    body.pop("metadata", None)
    return body
