"""One upstream POST through the gateway's HTTP client and retry policy, as the server makes it:
the retry tests drive `open_with_retries` directly against a scripted upstream."""
from __future__ import annotations

from engine.server.httpclient import HttpClient
from engine.server.upstream import open_with_retries


async def post_with_retries(url, policy, retries: list):
    """(status, body text) of POST /v1/messages; each retry's attempt number appended to `retries`."""
    client = HttpClient(url)
    try:
        ctx, resp = await open_with_retries(lambda: client.post("/v1/messages", b"{}"), policy,
                                            on_retry=retries.append)
        try:
            return resp.status, await resp.text()
        finally:
            await ctx.__aexit__(None, None, None)
    finally:
        await client.close()
