"""The translated request path: client body -> request spec -> upstream -> response or stream spec.

Shared by every client API; what differs (schemas, specs, error shape, upstream path) comes in a
`Pair`. Streams are forwarded event by event: one write per upstream read, never buffered whole."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from .. import schemas
from .. import jsontext
from ..jsontext import dumpb
from ..nodes import ItemMemo
from ..program import SHARED
from ..sse import SSEDecodeError, SSEDecoder
from ..functions import TranslationError
from ..stream import MalformedEvent, StreamTranslator
from . import ops
from .api_errors import ApiError
from .httpclient import TooLarge
from .history import HISTORY
from .members import MEMBER, MEMO, shared_members, without_member
from . import shapes
from .record import RECORDER
from .shapes import event_guard
from .shutdown import OPEN, SHUTDOWN_MESSAGE
from .upstream import (UPSTREAM_ID_HEADER, BadUpstreamStatus, UpstreamUnreachable, keys_for, mask, open_with_retries,
                       read_error_body, redact, sent_keys)

log = logging.getLogger("engine")


@dataclass
class Pair:
    """One client API translated to one upstream API, with the compiled specs of the chosen version."""
    name: str
    specs: dict              # request / response / stream / error -> CompiledSpec
    upstream_path: str
    keepalive: bytes = b": keep-alive\n\n"
    # the request's members read once it was sent (`kept_members`); None: all of them
    kept: frozenset | None = field(init=False, default=None)

    def __post_init__(self):
        self.kept = kept_members(self.specs)


# what the server itself reads of a request once it was sent upstream
_SERVER_READS = frozenset({"stream"})


def kept_members(specs: dict) -> frozenset | None:
    """The members of a client request that the pair's specs which run once it was sent (the
    response, stream and error specs) read from `req`, with what the server reads; None when one
    of them may read any member."""
    kept = _SERVER_READS
    for kind, spec in specs.items():
        if kind in ("request", "submit"):
            continue
        if spec.req_members is None:
            return None
        kept = kept | spec.req_members
    return kept


def let_go(body: dict, kept: frozenset | None, keep: frozenset = frozenset()) -> None:
    """Drops, in place, the members of a translated request that nothing will read again: those
    in neither `kept` (None: keep all) nor `keep`. A stream stays open for minutes with its
    request in scope, and most of a request is the conversation so far (hundreds of KB in a long
    coding session), which the answer's specs do not read."""
    if kept is not None:
        for k in body.keys() - kept - keep:  # set differences in C, not a test per member
            del body[k]


def _loads_utf8(raw: bytes):
    """An upstream body: UTF-8 (both providers' only encoding) through msgspec; what it refuses
    (another encoding, a lone surrogate escape) through json.loads' own detection."""
    try:
        return _msgspec_decode(raw)
    except jsontext.DecodeError:
        return json.loads(raw)


def _not_json(word: str):
    # Python's json module accepts NaN and Infinity; JSON does not, and echoing them back would
    # hand the client invalid JSON
    raise ValueError(f"{word} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (_INF, -_INF):  # 1e400 overflows to Infinity: not JSON either
        raise ValueError(f"{text} does not fit a finite number")
    return value


_INF = float("inf")
_decode = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite).decode
_msgspec_decode = jsontext.decode
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]", re.ASCII)


def _lone_surrogate(value) -> bool:
    """True when a string holds half a UTF-16 pair (JSON may escape one; UTF-8 cannot carry it)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is str:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif type(v) is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
    return False


def _encoding(raw: bytes) -> str:
    """json.detect_encoding's answer, without its checks when the first bytes settle it (no BOM,
    no zero byte: UTF-8)."""
    head = raw[:4]
    if len(head) == 4 and 0 not in head and head[:3] != b"\xef\xbb\xbf" and head[:2] not in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-8"
    return json.detect_encoding(raw)


def size_memos(history: tuple[int, int], tools: tuple[int, int], every: int, stale_after: float) -> None:
    """Bounds the memos of client bodies (HISTORY, MEMO) as the config says, (entries, bytes)
    each, with their admission (admission.py); what they kept goes. Each `each`'s memo of what it
    made of kept items is sized to match (nodes.ItemMemo.fit)."""
    for memo, (entries, size) in ((HISTORY, history), (MEMO, tools)):
        memo.clear()
        memo.max_entries, memo.max_bytes = entries, size
        memo.admission.every, memo.admission.stale_after = every, stale_after
    ItemMemo.fit(tools[0], history[0])


def load_json(raw: bytes, max_depth: int = 100, max_items: int = 5000) -> dict:
    """The body as a JSON object within the nesting and message-count limits, else ApiError(400).

    msgspec decodes UTF-8 JSON, refusing NaN, Infinity, overflowing numbers and lone surrogate
    escapes; what it refuses goes through the json module, which reads other Unicode encodings
    and words the error (a lone surrogate it reads is refused by name)."""
    entry = found = None
    try:
        body, entry, found = _decode_known(raw)
    except RecursionError:
        raise ApiError(400, f"the request body is nested deeper than {max_depth} levels") from None
    except jsontext.DecodeError:
        body = _load_slow(raw, max_depth)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    # each level takes two bytes at least; past that, jsonschema-rs walks the tree (0.3 µs for
    # the bench's small request, 11 µs for the 19 KB Claude Code one: less than counting brackets)
    if len(raw) > 2 * max_depth:
        known_tools = entry is not None and max_depth in entry.depth_ok
        known_items = found is not None and found.entry is not None and max_depth in found.entry.depth_ok
        checked = body
        if known_items:
            checked = found.reduced(checked)
        if known_tools:
            checked = without_member(checked)
        if not _within_depth(checked, max_depth):
            raise ApiError(400, f"the request body is nested deeper than {max_depth} levels")
        if entry is not None:
            entry.depth_ok.add(max_depth)
        if found is not None and found.new is not None:
            found.new.depth_ok.add(max_depth)
    for key in ("messages", "input"):
        items = body.get(key)
        if isinstance(items, list) and len(items) > max_items:
            raise ApiError(400, f"{key} has {len(items)} entries; this gateway accepts at most {max_items}",
                           param=key)
    return body


def _decode_known(raw: bytes):
    """(body, entry of its kept tools, what the history memo found of its conversation). A body
    beginning its conversation with kept items is decoded without them (history.HISTORY), then
    around kept tools (members.MEMO); DecodeError for what msgspec refuses."""
    spliced = HISTORY.splice(raw)
    if spliced is not None:
        text, member, hist, count = spliced
        try:
            body, entry = _decode_tools(text)
        except jsontext.DecodeError:
            body = None
        found = None if body is None else HISTORY.restore(body, member, hist, count, text)
        if found is not None:
            return body, entry, found
    body, entry = _decode_tools(raw)
    return body, entry, HISTORY.learn(body, raw, 0 if entry is None else len(entry.text))


def _decode_tools(raw: bytes):
    split = MEMO.load(raw)
    if split is not None:
        return split
    return _msgspec_decode(raw), None


def _load_slow(raw: bytes, max_depth: int):
    try:
        body = _decode(raw if type(raw) is str else raw.decode(_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, f"the request body is nested deeper than {max_depth} levels") from None
    if _SURROGATE.search(raw if type(raw) is bytes else raw.encode("utf-8", "surrogatepass")) \
            and _lone_surrogate(body):
        raise ApiError(400, "the request body is not valid JSON text: a string holds a lone UTF-16 surrogate "
                            "escape (\\ud800-\\udfff without its pair)")
    return body


def _within_depth(body, limit: int) -> bool:
    try:
        return schemas.within_depth(limit)(body)
    except UnicodeEncodeError:  # a lone surrogate (read by the json module): walked here
        return _depth(body, limit) <= limit


def _depth(value, limit: int) -> int:
    """Nesting depth, without recursion; stops counting past the limit."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > deepest:
            deepest = d
            if deepest > limit:
                return deepest
        if type(v) is dict:
            stack.extend((x, d + 1) for x in v.values() if type(x) in (dict, list))
        elif type(v) is list:
            stack.extend((x, d + 1) for x in v if type(x) in (dict, list))
    return deepest


def parse_body(raw: bytes, schema_id: str, max_depth: int = 100, max_items: int = 5000) -> dict:
    """JSON object checked against the client API's schema, or ApiError(400) naming the field."""
    body = load_json(raw, max_depth, max_items)
    validate(body, schema_id)
    return body


def validate(body: dict, schema_id: str):
    """ApiError(400) naming the JSON path of the first schema violation, if any."""
    entry = MEMO.entry_of(body.get(MEMBER)) if MEMBER in body else None
    found = HISTORY.take(body)
    checked = body
    if found is not None and found.entry is not None and schema_id in found.entry.valid \
            and schemas.items_alone(schema_id, found.member):
        checked = found.reduced(checked)
    if entry is not None and schema_id in entry.valid:
        checked = without_member(checked)
    issue = schemas.first_error(schema_id, checked)
    if issue is not None and checked is not body:
        # worded from the whole body: the path of an item is its index in the whole list
        issue = schemas.first_error(schema_id, body) or issue
    if issue is not None:
        raise ApiError(400, issue.message, param=issue.path or None, code="invalid_request")
    if entry is not None:
        entry.valid.add(schema_id)
    if found is not None and found.new is not None:
        found.new.valid.add(schema_id)


def translate_request(pair: Pair, body: dict, scope: dict, request: web.Request | None = None) -> dict:
    # the dict, then one pass of the C encoder: a request is mostly client content (messages,
    # tools) that the spec passes through, which the text writers of engine/serialize.py would
    # encode piece by piece, more slowly (29 µs against 25 for the bench's request)
    return apply_request(pair.specs["request"], request, src=body, **scope)[0]


def apply_request(spec, request: web.Request | None, **scope) -> tuple[dict, dict]:
    """(output, vars) of a request-kind spec: its checks (ApiError 400), its drops (noted on
    the request for the x-gateway-dropped header and logged at debug), then its template."""
    try:
        sc = spec.scope(**scope)
        failed = spec.check(sc)
        if failed:
            param, message, status, code = failed
            raise ApiError(status, message, param=param, code=code or "unsupported_parameter")
        if spec.drops:
            dropped = spec.dropped(sc)
            if dropped:
                note_dropped(request, dropped, scope.get("model"))
        return spec.template(sc), sc.get("vars") or {}
    except TranslationError as e:
        raise ApiError(e.status, e.message, param=e.param, code=e.code) from None


def note_dropped(request: web.Request | None, dropped: list, model) -> None:
    names = list(dict.fromkeys(param for param, _ in dropped))
    if request is not None:
        request["dropped"] = ", ".join(names)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("request %s: not sent to %s: %s", request.get("request_id") if request is not None else "-",
                  model, "; ".join(f"{param} ({reason})" for param, reason in dropped))


def answer_headers(request: web.Request, upstream_rid: str | None) -> dict | None:
    """Headers every translated answer carries: x-gateway-dropped names what was not sent,
    x-upstream-request-id is the upstream's own id of the request."""
    headers = {}
    dropped = request.get("dropped")
    if dropped:
        headers[DROPPED_HEADER] = dropped
    if upstream_rid is not None:
        headers[UPSTREAM_ID_HEADER] = upstream_rid
    return headers or None


DROPPED_HEADER = "x-gateway-dropped"


async def upstream_error(pair: Pair, resp, provider: str, upstream=None, secrets=(), rec=None) -> ApiError:
    """The upstream's error answer in the caller's shape (the pair's error spec); its body read
    within the error-size limit and the read timeout, upstream keys redacted."""
    policy = upstream.policy if upstream is not None else None
    if policy is not None:
        data, why = await read_error_body(resp, policy)
    else:
        data, why = await resp.read(), None
    if rec is not None:
        rec.add(data)
        rec.finish()
    text = data.decode("utf-8", "replace")
    if why is not None:
        text = f"the upstream answered {resp.status}, but {why}"
    text = redact(text, secrets)
    try:
        body = json.loads(text) if why is None else None
    except ValueError:
        body = None
    src = {"status": resp.status, "body": body, "text": text[:2000], "provider": provider,
           "retry_after": resp.headers.get("retry-after")}
    out = pair.specs["error"].apply(src=src)
    err = (out.get("body") or {}).get("error") or {}
    # an Anthropic-shaped error has no param/code: .get gives None and render() ignores them
    return ApiError(out["status"], err.get("message", ""), param=err.get("param"), code=err.get("code"),
                    type=err.get("type"),
                    headers={k: str(v) for k, v in (out.get("headers") or {}).items() if v is not None})


def run(request: web.Request, pair: Pair, upstream, body: dict, scope: dict,
        upstream_headers: dict | None = None) -> Awaitable[web.StreamResponse]:
    """Translate, call the upstream, translate back. ApiError for anything the client did wrong
    or the upstream refused before the first byte reached the client. Not a coroutine itself:
    the caller awaits `call` directly, one frame fewer on every resumption of the request."""
    out_body = translate_request(pair, body, scope, request)
    return call(request, pair, upstream, body, out_body, scope, upstream_headers)


async def call(request: web.Request, pair: Pair, upstream, body: dict, out_body: dict, scope: dict,
               upstream_headers: dict | None = None, *, on_result=None, on_write=None,
               keep: frozenset = frozenset()) -> web.StreamResponse:
    """Sends an already translated body upstream, retrying before the first byte, and
    translates the answer back. `on_result(result, scope)` sees a non-streamed
    result before it is sent; `on_write(translator)` runs before each write of a stream (the
    Responses store uses both). Once the upstream body is encoded, `body` keeps only the members
    the pair's answer specs read and those in `keep` (what the caller reads of it later)."""
    app = request.app
    headers = dict(upstream_headers or ())
    rid = request.get("request_id")
    if rid:
        headers["x-request-id"] = rid
    # kept texts are there to use only when the client's tools were (members.MEMO): a spec keeps
    # nothing it made of anything else
    tools = body.get(MEMBER)
    payload = dumpb(shared_members(out_body) if tools is not None and id(tools) in SHARED else out_body)
    del out_body  # a stream stays open for minutes: only the bytes are kept, until sent
    recorder = app.get(RECORDER)
    rec = None if recorder is None else recorder.start(pair, upstream, request, body, payload, headers)
    let_go(body, pair.kept, keep)
    try:
        ctx, resp = await open_with_retries(
            lambda: upstream.post(pair.upstream_path, payload, headers), upstream.policy,
            on_retry=lambda n: app[ops.METRICS].retries.labels(upstream.name).inc())
    except UpstreamUnreachable as e:
        app[ops.METRICS].upstream_errors.labels(upstream.name, "unreachable").inc()
        timed_out = e.timed_out
        raise ApiError(504 if timed_out else 502,
                       f"could not reach the upstream provider ({upstream.name}): {e}",
                       code="upstream_timeout" if timed_out else "upstream_unreachable",
                       type="timeout_error" if timed_out else "server_error") from None
    except BadUpstreamStatus as e:
        app[ops.METRICS].upstream_errors.labels(upstream.name, str(e.status)).inc()
        ops.note(request, upstream_status=e.status)
        raise ApiError(502, str(e), code="upstream_bad_status", type="server_error") from None
    payload = None  # answered, so no retry will send it again
    ops.note(request, upstream_status=resp.status, upstream_request_id=resp.request_id)
    if rec is not None:
        rec.answer(resp.status, resp.headers)
    try:
        sent = sent_keys(headers)
        if resp.status != 200:
            app[ops.METRICS].upstream_errors.labels(upstream.name, str(resp.status)).inc()
            err = await upstream_error(pair, resp, upstream.name, upstream, (*sent, *upstream.secrets), rec)
            if resp.request_id is not None:
                err.headers[UPSTREAM_ID_HEADER] = resp.request_id
            raise err
        keys = keys_for(upstream, sent)
        if not body.get("stream"):
            limit = upstream.max_body or None
            try:
                if resp.content_length is not None and limit is not None and resp.content_length > limit:
                    raise TooLarge(f"the upstream's answer is {resp.content_length} bytes")
                if resp.content.is_eof():  # the whole body came with the head: nothing to wait for
                    raw = await resp.read(limit)
                else:
                    async with asyncio.timeout(upstream.idle_timeout):  # no task, unlike wait_for
                        raw = await resp.read(limit)
                raw = mask(raw, keys)
                if rec is not None:
                    rec.add(raw)
                    rec.finish()
                data = _loads_utf8(raw)
            except TooLarge as e:
                raise ApiError(502, f"{e}; this gateway accepts at most {upstream.max_body} bytes "
                                    "(upstream_max_body_bytes)", code="upstream_too_large",
                               type="server_error") from None
            except (ValueError, aiohttp.ClientError, asyncio.TimeoutError) as e:
                raise ApiError(502, f"the upstream sent an unreadable response: {type(e).__name__}: {e}",
                               type="server_error") from None
            _check_shape(pair, data)
            spec = pair.specs["response"]
            sc = spec.scope(src=data, req=body, **scope)
            if spec.usage is not None:
                tokens_in, tokens_out = spec.tokens(sc)
                ops.note(request, tokens_in=tokens_in, tokens_out=tokens_out)
            text = getattr(spec.template, "json", None)
            if on_result is None and text is not None:
                # written straight to JSON text (engine/serialize.py): no dict to encode
                return web.Response(body=text(sc).encode(), content_type="application/json",
                                    headers=answer_headers(request, resp.request_id))
            result = spec.template(sc)
            if on_result is not None:
                await on_result(result, sc)
            return web.Response(body=dumpb(shared_members(result)), content_type="application/json",
                                headers=answer_headers(request, resp.request_id))
        return await _stream(request, pair, resp, body, scope, upstream, on_write, keys, rec)
    finally:
        await ctx.__aexit__(None, None, None)


def _check_shape(pair: Pair, data) -> None:
    """A 200 whose body is not what the upstream's API answers (`{}`, `[]`, wrong types) is a
    502 before the response spec sees it: nothing half-translated is sent or stored. One
    compiled-schema check per answer, on types and shape (new enum values pass)."""
    source = pair.specs["response"].source
    if source and not shapes.is_valid(source)(data):
        raise ApiError(502, f"the upstream answered 200 with a body that is not a valid {source}: "
                            f"{shapes.first_error(source, data)}",
                       code="upstream_malformed", type="server_error")


class StoreFailed(Exception):
    """A response the client asked to store could not be stored (raised from on_write)."""


async def _stream(request, pair: Pair, resp, body: dict, scope: dict, upstream, on_write=None,
                  keys: tuple = (), rec=None) -> web.StreamResponse:
    translator = StreamTranslator(pair.specs["stream"], req=body, **scope)
    if upstream.max_event:
        translator.decoder = SSEDecoder(upstream.max_event)
    translator.guard = event_guard(pair.specs["stream"].source)
    out = web.StreamResponse(status=200, headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no", "x-request-id": request.get("request_id") or "",
        **(answer_headers(request, resp.request_id) or {})})
    await out.prepare(request)
    request["stream_response"] = out
    started = request.get("started") or time.monotonic()
    clock = {"write": time.monotonic(), "read": time.monotonic(), "idle": False, "ttfb": None}
    metrics = request.app[ops.METRICS]
    metrics.open_streams.inc()
    watchdog = _Watchdog(out, resp, pair.keepalive, scope.get("keepalive_seconds") or 15.0,
                         upstream.idle_timeout, clock)

    def cut():
        clock["shutdown"] = True
        resp.close()

    open_set = request.app.get(OPEN)
    if open_set is not None:
        open_set.add(cut)

    async def write(data: bytes):
        if on_write is not None:
            await on_write(translator)
        if data:
            if clock["ttfb"] is None:
                clock["ttfb"] = time.monotonic() - started
            clock["write"] = time.monotonic()
            await out.write(mask(data, keys) if keys else data)

    try:
        await write(translator.start_bytes())
        try:
            early = 8
            async for chunk in resp.content.iter_any():
                clock["read"] = time.monotonic()
                if rec is not None:
                    rec.add(chunk)
                if early:
                    # one read may hold most of a fast upstream's stream: the first few events go
                    # out on their own, so the first token does not wait for the whole burst
                    at, seen = early_cut(chunk, early)
                    early -= seen
                    if at:
                        data = translator.feed(chunk[:at])
                        if data:
                            await write(data)
                        chunk = chunk[at:]
                        # the rest of the burst waits one turn of the loop, so other streams'
                        # first tokens and new requests go first
                        await asyncio.sleep(0)
                data = translator.feed(chunk)
                if data:
                    await write(data)
                # time spent translating a large read is not upstream silence
                clock["read"] = time.monotonic()
                if translator.ended:
                    # the rest (the end of the chunked body) is read after the client's answer,
                    # and the connection is kept for the next request
                    resp.drain()
                    break
            tail = translator.finish() if not clock["idle"] else translator.fail_bytes(
                f"the upstream sent nothing for {upstream.idle_timeout:g}s (idle timeout)", "timeout_error")
        except TooLarge as e:
            tail = translator.fail_bytes(str(e), "api_error")
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
            if clock.get("shutdown"):
                tail = translator.fail_bytes(SHUTDOWN_MESSAGE, "overloaded_error")
            else:
                why = (f"the upstream sent nothing for {upstream.idle_timeout:g}s (idle timeout)" if clock["idle"]
                       else f"the upstream connection failed mid-stream: {type(e).__name__}")
                tail = translator.fail_bytes(why, "timeout_error" if clock["idle"] else "api_error")
        except MalformedEvent as e:
            resp.close()
            tail = translator.fail_bytes(f"{e}; the stream was ended", "api_error")
        except SSEDecodeError:
            resp.close()
            tail = translator.fail_bytes(f"an upstream event is over {upstream.max_event} bytes "
                                         "(upstream_max_event_bytes)", "api_error")
        except StoreFailed as e:
            resp.close()
            translator.ended = False  # the final event must not go out: an error replaces it
            tail = translator.fail_bytes(str(e), "api_error")
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            # a spec that fails on this event: the client gets an error in its own stream grammar
            log.exception("stream translation failed (%s)", pair.specs["stream"].ref)
            tail = translator.fail_bytes("internal gateway error while translating the stream", "api_error")
        if on_write is not None:
            try:
                await on_write(translator)
            except StoreFailed as e:
                translator.ended = False  # the final event must not go out: an error replaces it
                tail = translator.fail_bytes(str(e), "api_error")
        if tail and clock["ttfb"] is None:
            clock["ttfb"] = time.monotonic() - started
        # the last events and the end of the chunked body in one write
        await out.write_eof(mask(tail, keys) if keys and tail else tail)
    except (ConnectionResetError, asyncio.CancelledError):
        # the client went away: close the upstream request at once
        resp.close()
        raise
    finally:
        watchdog.cancel()
        if open_set is not None:
            open_set.discard(cut)
        metrics.open_streams.dec()
        if rec is not None:
            rec.finish()
        tokens_in, tokens_out = pair.specs["stream"].tokens({"state": translator.state})
        ops.note(request, ttfb=clock["ttfb"], tokens_in=tokens_in or None, tokens_out=tokens_out)
    return out


def early_cut(chunk: bytes, events: int) -> tuple[int, int]:
    """(where the first `events` SSE events of `chunk` end when more bytes follow them, else 0;
    how many event ends were seen, at most `events`). A stream's first 8 upstream events reach
    the first content delta of every shipped stream spec (Anthropic: message_start,
    content_block_start, ping, content_block_delta; OpenAI: the role chunk, then content)."""
    i = -2
    for seen in range(events):
        i = chunk.find(b"\n\n", i + 2)
        if i < 0:
            return 0, seen
    return (i + 2 if i + 2 < len(chunk) else 0), events


class _Watchdog:
    """Per stream, on loop timers rather than a task: a keep-alive while the upstream is silent,
    so clients and proxies do not time out, and the idle timeout between upstream reads (never
    a total timeout)."""

    def __init__(self, out: web.StreamResponse, resp, keepalive: bytes, every: float, idle_timeout: float,
                 clock: dict):
        self.out, self.resp, self.keepalive, self.every, self.idle = out, resp, keepalive, every, idle_timeout
        self.clock = clock
        self.tick = max(0.05, min(every, idle_timeout or every) / 4)
        self.loop = asyncio.get_running_loop()
        self.writing: asyncio.Task | None = None
        self.handle = self.loop.call_later(self.tick, self._check)

    def _check(self):
        now = time.monotonic()
        clock = self.clock
        if self.idle and now - clock["read"] >= self.idle:
            clock["idle"] = True
            self.resp.close()  # the read loop sees the connection end and reports the timeout
            return
        if now - clock["write"] >= self.every and self.writing is None:
            clock["write"] = now
            self.writing = self.loop.create_task(self._write())
        self.handle = self.loop.call_later(self.tick, self._check)

    async def _write(self):
        try:
            await self.out.write(self.keepalive)
        except (ConnectionResetError, RuntimeError):
            pass
        finally:
            self.writing = None

    def cancel(self):
        self.handle.cancel()
        if self.writing is not None:
            self.writing.cancel()
