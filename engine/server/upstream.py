"""One pooled upstream HTTP client per provider, opened at start, closed at shutdown."""
from __future__ import annotations

import asyncio
import functools
import random
import re
import ssl
import time
import zlib
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

from .httpclient import ConnectFailed, ConnectTimeout, HttpClient, TooLarge, proxy_for


def tls_context(ca: str, cert: str, key: str) -> ssl.SSLContext:
    """A context trusting `ca` (else the system store) with the client certificate; ValueError
    naming the files when they cannot be used."""
    try:
        ctx = ssl.create_default_context(cafile=ca or None)
        if cert:
            ctx.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"upstream TLS files (upstream_ca_file={ca!r}, upstream_client_cert={cert!r}, "
                         f"upstream_client_key={key!r}) cannot be used: {e}") from None
    return ctx


class Upstream:
    def __init__(self, name: str, base_url: str, headers: dict, connect_timeout: float = 10.0,
                 read_timeout: float | None = None, max_inflated: int = 64 * 1024 * 1024):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.connect_timeout = connect_timeout
        self.idle_timeout = read_timeout
        self.max_inflated = max_inflated
        self.max_body = 32 * 1024 * 1024     # a non-stream answer (upstream_max_body_bytes)
        self.max_event = 8 * 1024 * 1024     # one SSE event (upstream_max_event_bytes)
        self.secrets: tuple = ()             # configured upstream keys, redacted from relayed bodies
        self.secret_keys: KeySet = KeySet(())  # the same as bytes
        self.policy = RetryPolicy()
        self.http: HttpClient | None = None
        self.proxy_setting = ""              # upstream_proxy: "" = the environment, "none", or a URL
        self.ssl_context: ssl.SSLContext | None = None
        self.extra_headers: tuple = ()       # (name, value) sent on every request to this provider

    def configure_egress(self, cfg, contexts: dict | None = None):
        """Proxy, TLS trust and client certificate, and extra headers from the configuration
        (upstream_proxy, upstream_ca_file, upstream_client_cert/key, <name>_extra_headers,
        openai_org/openai_project). Files are read now, so a bad one stops the start. `contexts`
        (TLS files -> context) shares one context, and the trust store it loads (~1 MB), between
        the https upstreams of one app; a plain http upstream loads none."""
        self.proxy_setting = getattr(cfg, "upstream_proxy", "") or ""
        ca, cert, key = (getattr(cfg, k, "") or "" for k in
                         ("upstream_ca_file", "upstream_client_cert", "upstream_client_key"))
        if ca or cert or self.base_url.lower().startswith("https:"):
            contexts = {} if contexts is None else contexts
            if (ca, cert, key) not in contexts:
                contexts[(ca, cert, key)] = tls_context(ca, cert, key)
            self.ssl_context = contexts[(ca, cert, key)]
        extra = []
        if self.name == "openai":
            if getattr(cfg, "openai_org", ""):
                extra.append(("OpenAI-Organization", cfg.openai_org))
            if getattr(cfg, "openai_project", ""):
                extra.append(("OpenAI-Project", cfg.openai_project))
        for k, v in getattr(cfg, f"{self.name}_extra_headers", ()) or ():
            extra = [(n, x) for n, x in extra if n.lower() != k.lower()]
            extra.append((k, v))
        self.extra_headers = tuple(extra)
        if extra:
            h = dict(self.headers)
            h.update(extra)
            self.headers = h  # translated requests: their own headers (auth, version) come after

    def proxy(self) -> str | None:
        return proxy_for(self.base_url, self.proxy_setting)

    async def open(self):
        # no total timeout (it would cut healthy long streams); the first-byte and idle timeouts
        # are enforced per request by open_with_retries and the stream watchdog
        self.http = HttpClient(self.base_url, connect_timeout=self.connect_timeout, max_inflated=self.max_inflated,
                               ssl_context=self.ssl_context, proxy=self.proxy())

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
        """`path` relative to the base URL, query string included as written. The extra headers
        are added where the caller's own headers do not hold the same name."""
        if self.extra_headers:
            have = {k.lower() for k in headers} if headers else set()
            add = [(k, v) for k, v in self.extra_headers if k.lower() not in have]
            if add:
                if hasattr(headers, "add"):  # a multidict: repeated headers stay repeated
                    headers = headers.copy()
                    for k, v in add:
                        headers.add(k, v)
                else:
                    headers = dict(headers or {})
                    headers.update(add)
        return self.http.request(method, path, data, headers, decompress)


# the upstream's own id of a request, as every answer that had an upstream gives it to the client
UPSTREAM_ID_HEADER = "x-upstream-request-id"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


@dataclass
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 20.0
    first_byte_timeout: float = 120.0
    read_timeout: float = 120.0         # per read of a body (upstream_idle_timeout)
    max_error_bytes: int = 1024 * 1024  # an error body read beyond this is cut (upstream_max_error_bytes)


class UpstreamUnreachable(Exception):
    """No answer from the upstream after every try (connection refused, reset, timed out)."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


class BadUpstreamStatus(Exception):
    """A status the gateway cannot relay: a redirect (3xx) or an interim/protocol switch (1xx)."""

    def __init__(self, status: int, location: str | None):
        where = f" to {location[:200]!r}" if location else ""
        super().__init__(f"the upstream answered {status}{where}; the gateway follows no redirects "
                         "(check the upstream base URL)")
        self.status = status


def retry_delay(attempt: int, policy: RetryPolicy, retry_after: str | None,
                retry_after_ms: str | None = None) -> float:
    """retry-after-ms or retry-after (seconds or an HTTP date) when the upstream gives one,
    capped at max_delay; else exponential backoff with full jitter."""
    if retry_after_ms:
        try:
            return min(max(float(retry_after_ms) / 1000.0, 0.0), policy.max_delay)
        except ValueError:
            pass
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), policy.max_delay)
        except ValueError:
            try:
                return min(max(parsedate_to_datetime(retry_after).timestamp() - time.time(), 0.0),
                           policy.max_delay)
            except (TypeError, ValueError, OverflowError):
                pass
    return random.uniform(0, min(policy.max_delay, policy.base_delay * (2 ** attempt)))


def _should_retry(resp) -> bool:
    """The upstream's own word first (`x-should-retry`, as the providers' SDKs read it), then
    the status."""
    said = (resp.headers.get("x-should-retry") or "").strip().lower()
    if said == "true":
        return True
    if said == "false":
        return False
    return resp.status in RETRY_STATUSES


_QUOTA_MARKS = (b"insufficient_quota", b"billing_hard_limit", b"quota exceeded", b"exceeded your current quota")


async def _is_quota_exhausted(resp, policy: RetryPolicy) -> bool:
    """A 429 that says the account's quota or credit is spent: retrying cannot help. The body is
    read (bounded in size and time) and put back for the caller."""
    try:
        async with asyncio.timeout(policy.read_timeout):
            data = await resp.content.read(policy.max_error_bytes)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False
    resp.content.unread(data)
    low = data.lower()
    return any(m in low for m in _QUOTA_MARKS)


async def open_with_retries(send, policy: RetryPolicy, on_retry=None):
    """Calls `send()` (returning an HttpClient request) until the upstream answers with a status
    worth keeping. Retried: a connection that could not be made, and a retryable status (429
    unless the quota is spent, 500, 502, 503, 504, 529, or whatever `x-should-retry` says),
    all before any byte reached the client. Never retried: a request that was delivered and
    then met silence (first-byte timeout) or a dropped connection, since the upstream may be
    generating already. Returns (ctx, response); the caller exits ctx. A 1xx or 3xx final
    status raises BadUpstreamStatus."""
    attempt = 0
    while True:
        ctx = send()
        try:
            resp = await ctx.open(policy.first_byte_timeout)
        except (ConnectFailed, ConnectTimeout) as e:
            if attempt >= policy.max_retries:
                raise UpstreamUnreachable(f"{type(e).__name__}: {e}") from None
            delay = retry_delay(attempt, policy, None)
        except asyncio.TimeoutError:
            raise UpstreamUnreachable("timed out waiting for the first byte (not retried: the request "
                                      "was delivered)", True) from None
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamUnreachable(f"{type(e).__name__}: {e}") from None
        else:
            status = resp.status
            if status < 200 or 300 <= status < 400:
                await ctx.__aexit__(None, None, None)
                raise BadUpstreamStatus(status, resp.headers.get("location"))
            if status < 400 or attempt >= policy.max_retries or not _should_retry(resp):
                return ctx, resp
            if status == 429 and await _is_quota_exhausted(resp, policy):
                return ctx, resp
            delay = retry_delay(attempt, policy, resp.headers.get("retry-after"),
                                resp.headers.get("retry-after-ms"))
            await ctx.__aexit__(None, None, None)
        attempt += 1
        if on_retry is not None:
            on_retry(attempt)
        await asyncio.sleep(delay)


async def read_error_body(resp, policy: RetryPolicy, decode: bool = False) -> tuple[bytes, str | None]:
    """An error answer's body within the error-size limit and the read timeout: (bytes, None),
    or (what arrived, why it stopped). With `decode`, a gzip/deflate body is inflated (bounded
    too), for a body the gateway relays after redacting it."""
    why = None
    try:
        async with asyncio.timeout(policy.read_timeout):
            data = await resp.content.read(policy.max_error_bytes)
    except TooLarge:
        data, why = b"", f"its error body is over {policy.max_error_bytes} bytes (upstream_max_error_bytes)"
    except asyncio.TimeoutError:
        data, why = b"", f"its error body did not arrive within {policy.read_timeout:g}s"
    except aiohttp.ClientError as e:
        data, why = b"", f"its error body could not be read: {type(e).__name__}"
    if decode and data and (resp.headers.get("content-encoding") or "").strip().lower() in ("gzip", "x-gzip", "deflate"):
        try:
            d = zlib.decompressobj(wbits=47)
            out = d.decompress(data, policy.max_error_bytes + 1)
        except zlib.error:
            out = b""
        if len(out) > policy.max_error_bytes:
            out, why = b"", f"its error body is over {policy.max_error_bytes} bytes (upstream_max_error_bytes)"
        data = out
    return data, why


def redact(text: str, secrets) -> str:
    """Every upstream key the gateway holds or sent, replaced wherever an upstream echoes it
    (longest first, as mask())."""
    for key in sorted(secrets, key=len, reverse=True):
        if key and len(key) >= 8 and key in text:
            text = text.replace(key, "[redacted]")
    return text


def sent_keys(headers: dict | None) -> list:
    """The upstream key sent with a request (x-api-key, or a bearer token)."""
    sent = []
    for k, v in (headers or {}).items():
        lk = k.lower()
        if lk == "x-api-key":
            sent.append(v)
        elif lk == "authorization":
            sent.append(v[7:] if v[:7].lower() == "bearer " else v)
    return sent


def secret_bytes(secrets) -> KeySet:
    """The keys as bytes, for mask()."""
    return KeySet({k.encode("utf-8", "surrogateescape") for k in secrets if k and len(k) >= 8})


def keys_for(upstream, sent) -> tuple:
    """mask()'s keys for one request: the configured ones (computed once), plus a key the
    client forwarded."""
    if all(k in upstream.secrets for k in sent):
        return upstream.secret_keys
    return secret_bytes((*sent, *upstream.secrets))


# mask(): below this many bytes one regular expression finds any key sooner than a search per
# key. `k in data` costs ~0.25 µs per key however short the data (it prepares for a 100-byte
# needle each time), then scans at memchr speed; the expression costs ~0.1 µs, then scans about
# four times slower. Measured with two keys: 0.18 against 0.68 µs at 256 bytes, even at 2 KiB,
# 2.6 against 1.4 µs at 4 KiB.
_ONE_SEARCH_BELOW = 1536


@functools.lru_cache(maxsize=256)
def _any_key(keys: tuple):
    """One search for all of `keys`, kept per key set: the configured keys, or those and a
    client's own."""
    return re.compile(b"|".join(re.escape(k) for k in keys)).search


class KeySet(tuple):
    """Keys as bytes, for mask(), longest first (a key inside another must not be masked first,
    or the rest of the other would stay), with `search`: the first place any of them is."""

    def __new__(cls, keys):
        self = super().__new__(cls, sorted(keys, key=lambda k: (-len(k), k)))
        self.search = _any_key(tuple(self)) if self else _no_key
        return self


def _no_key(data: bytes):
    return None


def mask(data: bytes, keys: KeySet) -> bytes:
    """`data` with every key in it overwritten by asterisks of the same length, so a relayed
    body keeps its framing (Content-Length)."""
    if len(data) < _ONE_SEARCH_BELOW and keys.search(data) is None:
        return data
    for k in keys:
        if k in data:
            data = data.replace(k, b"*" * len(k))
    return data


class StreamMask:
    """mask() over a body read in pieces: a key cut across two reads is masked too. The end of a
    read that could be the start of a key is held back until the next read (or `flush`); an SSE
    read ends with a blank line, which starts no key, so events are not delayed."""
    __slots__ = ("keys", "held")

    def __init__(self, keys: tuple):
        self.keys = keys if type(keys) is KeySet else KeySet(keys)
        self.held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = mask(self.held + chunk if self.held else chunk, self.keys)
        hold = self._key_start(data)
        self.held = data[len(data) - hold:] if hold else b""
        return data[:len(data) - hold] if hold else data

    def flush(self) -> bytes:
        data, self.held = self.held, b""
        return data

    def _key_start(self, data: bytes) -> int:
        """How many bytes at the end of `data` are the beginning of a key."""
        longest = 0
        for k in self.keys:
            i = data.find(k[:1], max(0, len(data) - len(k) + 1))
            while i != -1:
                if k.startswith(data[i:]):
                    longest = max(longest, len(data) - i)
                    break
                i = data.find(k[:1], i + 1)
        return longest
