"""`engine serve --record DIR` (config key record_dir): every translated upstream exchange
written as fixture files, in the layout tests/fixtures uses and `engine replay` reads:

    DIR/anthropic-rec-<time>-<pid>-<n>.sse            a streamed Anthropic answer, as received
    DIR/anthropic-message-rec-<time>-<pid>-<n>.json   a non-streamed Anthropic answer
    DIR/openai-rec-<time>-<pid>-<n>.sse               a streamed OpenAI Chat answer
    DIR/openai-chat-completion-rec-<time>-<pid>-<n>.json
    DIR/<provider>-error-rec-<time>-<pid>-<n>.json    an upstream error body (any status but 200)
    DIR/requests/<same name>.json               the exchange: pair, spec versions, the client's
                                                request, what went upstream, status, headers

Header values that carry credentials are replaced by "[redacted]" (authorization, x-api-key,
cookies, and any header whose name holds key, token, secret or auth)."""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path

from aiohttp import web

log = logging.getLogger("engine")

REDACTED = "[redacted]"
RECORDER = web.AppKey("recorder", object)
_SECRET_WORDS = ("key", "token", "secret", "auth", "cookie", "session")


def redact_headers(headers) -> dict:
    out = {}
    for k, v in (headers or {}).items():
        name = str(k).lower()
        out[name] = REDACTED if any(w in name for w in _SECRET_WORDS) else str(v)
    return out


def _stem(provider: str, path: str, stream: bool, status: int) -> str:
    """A name the fixture globs of the tests pick up for the API the answer is in."""
    if status != 200:
        return f"{provider}-error-rec"
    if path.endswith("/count_tokens"):
        return f"{provider}-count-tokens-rec"
    if path.endswith("/responses"):
        return "responses-rec" if stream else "responses-response-rec"
    if provider == "anthropic":
        return "anthropic-rec" if stream else "anthropic-message-rec"
    return f"{provider}-rec" if stream else f"{provider}-chat-completion-rec"


def _json_or_text(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


class Recorder:
    def __init__(self, folder: str):
        self.dir = Path(folder)
        (self.dir / "requests").mkdir(parents=True, exist_ok=True)
        self.count = itertools.count(1)
        self.run = time.strftime("%Y%m%dT%H%M%S", time.gmtime())

    def start(self, pair, upstream, client_request, client_body: dict, payload: bytes, headers: dict):
        """A translated exchange: the pair and its spec versions are written beside it."""
        r = Recording(self, upstream, pair.upstream_path, client_request, client_body, payload, headers)
        r.exchange = {"pair": pair.name, "specs": {kind: spec.ref for kind, spec in pair.specs.items()},
                      **r.exchange}
        return r

    def start_passthrough(self, upstream, path: str, client_request, raw: bytes, headers: dict):
        body = _json_or_text(raw)
        return Recording(self, upstream, path, client_request, body, raw, headers)


class Recording:
    """One exchange; the answer's bytes are kept as they arrive and written at the end."""
    __slots__ = ("rec", "exchange", "provider", "path", "stream", "status", "parts", "encoded")

    def __init__(self, rec: Recorder, upstream, path: str, client_request, client_body, payload, headers):
        self.rec = rec
        self.provider = upstream.name
        self.path = path.split("?", 1)[0]
        self.stream = isinstance(client_body, dict) and bool(client_body.get("stream"))
        self.status = 0
        self.encoded = False
        self.parts: list[bytes] = []
        if isinstance(client_body, dict):
            client_body = dict(client_body)  # the translated path lets go of members (translate.let_go)
        self.exchange = {
            "client": {"method": client_request.method, "path": client_request.path,
                       "headers": redact_headers(client_request.headers), "body": client_body},
            "upstream": {"url": upstream.base_url + path,
                         "headers": redact_headers({**upstream.headers, **headers}),
                         "body": _json_or_text(payload)},
        }

    def answer(self, status: int, headers):
        self.status = status
        self.exchange["status"] = status
        self.exchange["response_headers"] = redact_headers(headers)
        # a passed-through answer may stay compressed: such bytes make no fixture
        self.encoded = (headers.get("content-encoding") or "identity").lower() != "identity"

    def add(self, data: bytes):
        self.parts.append(data)

    def finish(self):
        """Writes the files; a recording failure is logged, never the client's problem."""
        if self.encoded:
            log.info("record_dir: %s answer not recorded: it is compressed (content-encoding)", self.path)
            return
        try:
            # the pid keeps the names of forked workers apart
            name = (f"{_stem(self.provider, self.path, self.stream, self.status)}-{self.rec.run}-{os.getpid()}"
                    f"-{next(self.rec.count)}")
            data = b"".join(self.parts)
            ext = ".sse" if self.stream and self.status == 200 else ".json"
            if ext == ".json":
                body = _json_or_text(data)
                data = (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode() if not isinstance(body, str) \
                    else data
            path = self.rec.dir / (name + ext)
            _write(path, data)
            self.exchange["fixture"] = path.name
            _write(self.rec.dir / "requests" / (name + ".json"),
                   (json.dumps(self.exchange, indent=2, ensure_ascii=False) + "\n").encode())
        except OSError as e:
            log.warning("record_dir: could not write the exchange: %s", e)


def _write(path: Path, data: bytes):
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
