"""The fault load test: N concurrent streams through `engine serve` while the fake upstream
injects faults into a share of them, and every stream's outcome checked exactly.

Each stream has an id; its model name (``claude-bench-text-n40-p5-f20-s17``) tells the fake
upstream the fault plan and the id, so the client knows beforehand what each stream must end
as (`expectation`):

    no fault, or 429/529 on the first attempt only (with upstream_max_retries >= 1: the
    gateway's retry gets the normal stream)
        -> HTTP 200, the concatenated ``delta.content`` equals exactly the text the upstream sent,
           ``finish_reason: stop``, the usage chunk (``stream_options.include_usage``), then
           ``data: [DONE]`` as the last event
    error event, dropped / reset connection, end without message_stop, stall past the idle timeout
        -> HTTP 200 whose last event is an OpenAI error payload (``data: {"error": {...}}``),
           no ``[DONE]``, the content before it a prefix of the text
    429 / 529 on every attempt
        -> HTTP 429 (with retry-after) / HTTP 503, an OpenAI error body

Anything else is *unexpected*: a clean-looking truncated answer, a wrong text, a hang (no end
within the stream timeout), a response body that breaks off, a lost stream. After the run:
the gateway's /metrics shows ``engine_open_streams 0`` (and no upstream connection in use, the
retries counted), it still answers /health, and the upstream saw exactly the requests the plan
implies (one per stream, plus the gateway's retries).
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass

import aiohttp

from .upstream import (
    RETRY_AFTER,
    TRANSIENT,
    _text_pieces,
    fault_kinds,
    fault_of,
    model_name,
)

PATH = "/v1/chat/completions"
_now = time.perf_counter

OK = "ok"
ERROR_PAYLOAD = "error payload"


@dataclass
class FaultSettings:
    streams: int = 200          # streams, all open at once
    percent: int = 20           # share of them faulted
    kinds: str = "mix"          # fault kinds (upstream.FAULT_KINDS, '.'-separated) or mix
    deltas: int = 40            # text deltas per stream
    pace_ms: int = 10           # between two upstream events (so the streams overlap)
    max_retries: int = 2        # the gateway's upstream_max_retries
    idle_timeout: float = 1.0   # the gateway's upstream_idle_timeout (the stall fault outlasts it)
    stream_timeout: float = 30.0  # a stream with no end by then is a hang
    batch: int = 50             # connections opened at a time (the listen backlog is finite)

    def engine_env(self) -> dict:
        return {"TOKLIGENCE_UPSTREAM_IDLE_TIMEOUT": f"{self.idle_timeout:g}",
                "TOKLIGENCE_UPSTREAM_MAX_RETRIES": str(self.max_retries)}


def expectation(kind: str | None, max_retries: int) -> str:
    """What the client must see for a stream faulted `kind` (None: not faulted)."""
    if kind is None:
        return OK
    if kind in TRANSIENT:
        return OK if max_retries >= 1 else ("http 429" if kind == "429" else "http 503")
    if kind == "429all":
        return "http 429"
    if kind == "529all":
        return "http 503"
    return ERROR_PAYLOAD


def expected_attempts(kind: str | None, max_retries: int) -> int:
    """Upstream requests the gateway makes for one stream."""
    if kind in TRANSIENT:
        return 2 if max_retries >= 1 else 1
    if kind in ("429all", "529all"):
        return max_retries + 1
    return 1


def expected_text(deltas: int) -> str:
    return "".join(_text_pieces(deltas))


@dataclass
class StreamResult:
    sid: int
    kind: str | None
    expect: str
    status: int = 0
    sent: float = 0.0
    head: float | None = None
    end: float | None = None
    raw: bytes = b""
    retry_after: str | None = None
    error: str | None = None       # transport: hang, broken body, connection error
    seen: str = ""
    detail: str = ""
    err_type: str | None = None    # the error's type, when the client got an error

    @property
    def as_expected(self) -> bool:
        return self.seen == self.expect and not self.detail


# ---------------------------------------------------------------- judging one stream

def sse_data(raw: bytes) -> list[str]:
    """The ``data`` of each SSE event (comments such as keep-alives skipped)."""
    text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
    out = []
    for block in text.split("\n\n"):
        lines = [ln[5:][1:] if ln[5:6] == " " else ln[5:] for ln in block.split("\n") if ln.startswith("data:")]
        if lines:
            out.append("\n".join(lines))
    return out


def judge(r: StreamResult, want_text: str) -> None:
    """Sets r.seen (what the client got) and r.detail (what is wrong with it, if anything)."""
    if r.error:
        r.seen, r.detail = "transport error", r.error
        return
    if r.status != 200:
        r.seen = f"http {r.status}"
        try:
            err = json.loads(r.raw)["error"]
            r.err_type = err.get("type")
            if not isinstance(err.get("message"), str) or not err.get("type"):
                r.detail = f"error body without message/type: {r.raw[:200]!r}"
        except (ValueError, KeyError, TypeError):
            r.detail = f"not an OpenAI error body: {r.raw[:200]!r}"
        if r.status == 429 and not r.retry_after and not r.detail:
            r.detail = "429 without retry-after"
        return
    datas = sse_data(r.raw)
    content: list[str] = []
    finish = usage = None
    dones, errors, bad = [], [], []
    for i, d in enumerate(datas):
        if d == "[DONE]":
            dones.append(i)
            continue
        try:
            obj = json.loads(d)
        except ValueError:
            bad.append(d[:80])
            continue
        if not isinstance(obj, dict):
            bad.append(d[:80])
        elif "error" in obj:
            errors.append((i, obj["error"]))
        else:
            for ch in obj.get("choices") or ():
                piece = (ch.get("delta") or {}).get("content")
                if piece:
                    content.append(piece)
                if ch.get("finish_reason"):
                    finish = ch["finish_reason"]
            if obj.get("usage"):
                usage = obj["usage"]
    text = "".join(content)
    last = len(datas) - 1
    if bad:
        r.seen, r.detail = "bad stream", f"events that are not JSON: {bad[:3]}"
    elif errors:
        r.seen = ERROR_PAYLOAD
        i, err = errors[-1]
        r.err_type = err.get("type") if isinstance(err, dict) else None
        if dones:
            r.detail = f"[DONE] beside an error payload (events {dones} and {i} of {last + 1})"
        elif i != last or len(errors) > 1:
            r.detail = f"the error payload is not the one last event ({len(errors)} errors, at {i} of {last + 1})"
        elif not isinstance(err, dict) or not isinstance(err.get("message"), str) or not err.get("type"):
            r.detail = f"error payload without message/type: {err!r:.200}"
        elif not want_text.startswith(text):
            r.detail = f"the text before the error is not a prefix of what the upstream sent: {text[-80:]!r}"
    elif dones:
        r.seen = OK
        if dones != [last]:
            r.detail = f"[DONE] at events {dones} of {last + 1}"
        elif text != want_text:
            r.detail = f"text differs: {len(text)} chars, want {len(want_text)}: ...{text[-60:]!r}"
        elif finish != "stop":
            r.detail = f"finish_reason {finish!r}, want 'stop'"
        elif not usage or not usage.get("completion_tokens"):
            r.detail = f"no usage chunk (stream_options.include_usage): {usage!r}"
    else:
        r.seen = "truncated"
        r.detail = (f"ends with neither [DONE] nor an error payload after {len(datas)} events, "
                    f"{len(text)} of {len(want_text)} chars: looks complete to a lax client")


# ---------------------------------------------------------------- the load

def request_body(model: str) -> bytes:
    return json.dumps({"model": model, "max_tokens": 1024, "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                    {"role": "user", "content": "Say something."}]}).encode()


async def _one(session: aiohttp.ClientSession, url: str, r: StreamResult, body: bytes, timeout: float):
    chunks: list[bytes] = []
    r.sent = _now()
    try:
        async with asyncio.timeout(timeout):
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
                r.status = resp.status
                r.head = _now()
                r.retry_after = resp.headers.get("retry-after")
                async for c in resp.content.iter_any():
                    chunks.append(c)
    except TimeoutError:
        r.error = f"hang: no end of the response after {timeout:g}s"
    except aiohttp.ClientPayloadError as e:
        r.error = f"the gateway's response body broke off: {e}"
    except (aiohttp.ClientError, OSError) as e:
        r.error = f"{type(e).__name__}: {e}"
    r.end = _now()
    r.raw = b"".join(chunks)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with asyncio.timeout(10):
            async with session.get(url) as resp:
                return resp.status, await resp.text()
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        return 0, f"{type(e).__name__}: {e}"


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def metric(text: str, name: str) -> float | None:
    """The sum of a metric's samples in Prometheus text, None when it is absent."""
    total, seen = 0.0, False
    for m in _SAMPLE.finditer(text):
        if m.group(1) == name:
            total += float(m.group(3))
            seen = True
    return total if seen else None


async def drive(base: str, up_url: str, s: FaultSettings) -> dict:
    """Runs the streams against a gateway at `base` whose upstream is the fake at `up_url`
    (fresh: it counts attempts per stream since it started), then checks the aftermath."""
    kinds = fault_kinds(s.kinds)
    want = expected_text(s.deltas)
    results = []
    for sid in range(s.streams):
        kind = fault_of(sid, s.percent, kinds)
        results.append(StreamResult(sid, kind, expectation(kind, s.max_retries)))
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as session:
        _, before = await _get(session, base + "/metrics")
        tasks_before = metric(before, "engine_asyncio_tasks")
        start = _now()
        tasks = []
        for r in results:
            body = request_body(model_name("text", n=s.deltas, pace_ms=s.pace_ms, fault_pct=s.percent,
                                           fault_kinds=s.kinds, sid=r.sid))
            tasks.append(asyncio.ensure_future(_one(session, base + PATH, r, body, s.stream_timeout)))
            if s.batch and len(tasks) % s.batch == 0:
                await asyncio.sleep(0.01)
        done = await asyncio.gather(*tasks, return_exceptions=True)
        wall = max((r.end for r in results if r.end), default=_now()) - start
        crashed = [f"stream {r.sid}: {d!r}" for r, d in zip(results, done) if isinstance(d, BaseException)]
        for r in results:
            judge(r, want)
            # retry-after honoured: a 429 stream waits that long before each retry
            waits = expected_attempts(r.kind, s.max_retries) - 1 if r.kind in ("429", "429all") else 0
            if waits and r.end and not r.detail and r.end - r.sent < waits * float(RETRY_AFTER) - 0.005:
                r.detail = (f"answered after {r.end - r.sent:.3f}s: {waits} retries without waiting the "
                            f"retry-after of {RETRY_AFTER}s")

        # the aftermath: streams closed, connections released, still serving, exact upstream traffic
        deadline = _now() + 5.0
        while True:
            _, text = await _get(session, base + "/metrics")
            open_streams = metric(text, "engine_open_streams")
            up_conns = metric(text, "engine_upstream_connections")
            if (open_streams == 0 and not up_conns) or _now() > deadline:
                break
            await asyncio.sleep(0.1)
        health, _ = await _get(session, base + "/health")
        _, stats_text = await _get(session, up_url + "/_bench/stats")
    try:
        stats = json.loads(stats_text)
    except ValueError:
        stats = {}

    want_attempts = sum(expected_attempts(r.kind, s.max_retries) for r in results)
    want_retries = want_attempts - s.streams
    want_faults: dict = {}
    for r in results:
        if r.kind is not None:
            n = 1 if r.kind in TRANSIENT else expected_attempts(r.kind, s.max_retries)
            want_faults[r.kind] = want_faults.get(r.kind, 0) + n
    retries = metric(text, "engine_upstream_retries_total")
    tasks_after = metric(text, "engine_asyncio_tasks")
    checks = [
        ("no stream lost", len(results) == s.streams and not crashed,
         f"{len(results)} results for {s.streams} streams" + (f"; {crashed[:3]}" if crashed else "")),
        ("engine_open_streams 0 after the run", open_streams == 0, f"engine_open_streams {open_streams}"),
        ("gateway answers /health", health == 200, f"/health -> {health}"),
        ("upstream saw every stream", len(stats.get("attempts", {})) == s.streams,
         f"{len(stats.get('attempts', {}))} distinct streams at the upstream"),
        ("upstream requests = streams + the gateway's retries", stats.get("requests") == want_attempts,
         f"{stats.get('requests')} requests, want {want_attempts}"),
        ("faults written as planned", stats.get("faults") == want_faults,
         ", ".join(f"{k} {n}" for k, n in want_faults.items())
         + ("" if stats.get("faults") == want_faults else f"; the upstream wrote {stats.get('faults')}")),
    ]
    if up_conns is not None:
        checks.append(("no upstream connection in use after the run", up_conns == 0,
                       f"engine_upstream_connections {up_conns:g}"))
    # a labelled counter has no sample until its first increment
    if retries is not None or want_retries == 0 or "engine_upstream_retries" in text:
        got = retries or 0
        checks.append(("engine_upstream_retries counts the retries", got == want_retries,
                       f"engine_upstream_retries_total {got:g}, want {want_retries}"))

    # most requests in flight at once (sent -> end of the response), and most streams open at once
    # (response head -> end, answers with HTTP 200 only)
    peak_flight = _peak([(r.sent, r.end) for r in results if r.end])
    # a stream refused at once (529 on every attempt, retried after a jittered backoff that may be
    # ~0) can end before the last one is sent; the full-length ones (every delta, 10 ms apart)
    # must all have been in flight together
    peak_full = _peak([(r.sent, r.end) for r in results if r.end and r.expect == OK])
    peak = _peak([(r.head, r.end) for r in results if r.head and r.end and r.status == 200])
    by_kind: dict = {}
    for r in results:
        k = by_kind.setdefault(r.kind or "none", {"n": 0, "expect": r.expect, "as_expected": 0, "seen": {},
                                                  "error_types": []})
        k["n"] += 1
        k["as_expected"] += r.as_expected
        k["seen"][r.seen] = k["seen"].get(r.seen, 0) + 1
        if r.err_type and r.err_type not in k["error_types"]:
            k["error_types"].append(r.err_type)
    unexpected = [r for r in results if not r.as_expected]
    return {
        "streams": s.streams,
        "faulted": sum(r.kind is not None for r in results),
        "completed_ok": sum(r.as_expected and r.expect == OK for r in results),
        "recovered": sum(r.as_expected and r.kind is not None and r.expect == OK for r in results),
        "failed_as_expected": sum(r.as_expected and r.expect != OK for r in results),
        "unexpected": len(unexpected) + (s.streams - len(results)),
        "unexpected_detail": [{"sid": r.sid, "kind": r.kind, "expect": r.expect, "seen": r.seen,
                               "detail": r.detail, "status": r.status,
                               "tail": r.raw[-300:].decode("utf-8", "replace")} for r in unexpected],
        "wall": wall,
        "max_open": peak,
        "max_in_flight": peak_flight,
        "max_in_flight_full": peak_full,
        "by_kind": by_kind,
        "checks": [{"name": n, "ok": bool(ok), "detail": d} for n, ok, d in checks],
        "tasks_before": tasks_before, "tasks_after": tasks_after,
        "upstream": stats,
        "settings": {"percent": s.percent, "kinds": s.kinds, "deltas": s.deltas, "pace_ms": s.pace_ms,
                     "max_retries": s.max_retries, "idle_timeout": s.idle_timeout},
    }


def _peak(spans: list) -> int:
    cur = peak = 0
    for _, d in sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans]):
        cur += d
        peak = max(peak, cur)
    return peak


def passed(res: dict) -> bool:
    return res["unexpected"] == 0 and all(c["ok"] for c in res["checks"])


def render(res: dict) -> str:
    st = res["settings"]
    heads = ("streams", "faulted", "completed ok", "failed as expected", "unexpected", "wall s")
    vals = (res["streams"], res["faulted"], res["completed_ok"], res["failed_as_expected"], res["unexpected"],
            f"{res['wall']:.2f}")
    widths = [max(len(h), len(str(v))) for h, v in zip(heads, vals)]
    lines = [
        (f"fault load test: {res['streams']} concurrent streams through engine serve (chat completions, "
         f"stream, include_usage), {st['percent']}% faulted ({st['kinds']}); upstream_max_retries="
         f"{st['max_retries']}, upstream_idle_timeout={st['idle_timeout']:g}s; {st['deltas']} deltas "
         f"{st['pace_ms']} ms apart; at most {res['max_in_flight']} requests in flight and {res['max_open']} "
         "streams open (HTTP 200 head received, not ended) at once"),
        "  ".join(h.rjust(w) for h, w in zip(heads, widths)),
        "  ".join("-" * w for w in widths),
        "  ".join(str(v).rjust(w) for v, w in zip(vals, widths)),
        "",
        f"completed ok includes {res['recovered']} faulted by a 429/529 on the first attempt and retried.",
        "by fault: " + "; ".join(
            f"{k} x{v['n']} -> {', '.join(f'{s} {n}' for s, n in sorted(v['seen'].items()))}"
            + (f" [{', '.join(v['error_types'])}]" if v["error_types"] else "")
            + ("" if v["as_expected"] == v["n"] else f" (want {v['expect']} x{v['n']})")
            for k, v in sorted(res["by_kind"].items())),
    ]
    for c in res["checks"]:
        lines.append(f"  [{'ok' if c['ok'] else 'FAILED'}] {c['name']}: {c['detail']}")
    if res["tasks_before"] is not None:
        lines.append(f"  engine_asyncio_tasks before {res['tasks_before']:g}, after {res['tasks_after']:g}")
    for u in res["unexpected_detail"][:10]:
        lines.append(f"  UNEXPECTED stream {u['sid']} ({u['kind'] or 'no fault'}): want {u['expect']}, "
                     f"got {u['seen']}: {u['detail']}")
    lines.append("verdict: " + ("met (0 unexpected, every check passed)" if passed(res) else "MISSED"))
    return "\n".join(lines)
