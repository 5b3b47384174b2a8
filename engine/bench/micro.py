"""The engine alone, no network: µs per stream event and per request/response translation.

Stream specs: every StreamMapping in the catalog, fed the recorded fixtures under tests/fixtures
whose source API matches the spec's `source` (anthropic-*.sse for anthropic/stream-event,
openai-chat-*.sse for openai/chat.chunk, responses-*.sse for openai/responses.event), whole
streams (start + feed + finish, bytes in, bytes out). Beside it, the floor any translator pays for
the same input events: SSE decode + JSON decode + JSON encode (msgspec, as the engine). The
difference is what the spec costs.

Request specs: every RequestMapping, fed the client captures in tests/fixtures/clients/*.json whose
body is valid for the spec's source schema; the µs of the translation (scope + vars + checks +
template) and, for scale, the µs of the inbound schema validation the server does before it.
Response specs: every ResponseMapping, fed tests/fixtures/*.json bodies valid for its source.

Each figure is the best of several timed rounds (least disturbed by the rest of the machine).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from engine.catalog import Catalog
from engine.sse import SSEDecoder
from engine.stream import StreamTranslator

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"

# a spec's source schema id -> the fixture files recorded from that API
STREAM_FIXTURES = {
    "anthropic/stream-event": "anthropic-*.sse",
    "openai/chat.chunk": "openai-chat-*.sse",
    "openai/responses.event": "responses-*.sse",
}

# the engine's own decoder and encoder (msgspec): the floor must not flatter the engine
from engine.jsontext import decode as _decode, dumpb as _dumpb
CFG = {"default_max_tokens": 4096, "stream_id": "bench"}
STREAM_REQ = {"stream": True, "stream_options": {"include_usage": True}}


def _best(fn, budget: float, rounds: int = 5) -> float:
    """Seconds per call of fn(), best of `rounds` rounds of about budget/rounds seconds each."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(budget / rounds / one))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def _floor(raw: bytes) -> int:
    n = 0
    for _name, data in SSEDecoder().feed(raw) + SSEDecoder().flush():
        try:
            obj = _decode(data)
        except ValueError:
            continue
        _dumpb(obj)
        n += 1
    return n


def stream_rows(catalog: Catalog, budget: float = 0.3, fixtures: Path = FIXTURES) -> list[dict]:
    rows = []
    for name in catalog.names():
        spec = catalog.get(name)
        if spec.kind != "StreamMapping":
            continue
        pattern = STREAM_FIXTURES.get(spec.source or "")
        files = sorted(fixtures.glob(pattern)) if pattern else []
        full = floor = start = 0.0
        events = 0
        used = []
        for path in files:
            raw = path.read_bytes()

            def run(raw=raw):
                t = StreamTranslator(spec, req=STREAM_REQ, cfg=CFG, model="bench-model")
                return t.start_bytes() + t.feed(raw) + t.finish(), t.events_in

            try:
                _, n = run()
            except Exception as e:  # a fixture this spec cannot take: say so, go on
                used.append(f"{path.name}: {type(e).__name__}")
                continue
            if not n:
                continue
            events += n
            full += _best(run, budget) * 1e6
            floor += _best(lambda raw=raw: _floor(raw), budget) * 1e6
            start += _best(lambda: StreamTranslator(spec, req=STREAM_REQ, cfg=CFG, model="bench-model")
                           .start_bytes(), budget / 3) * 1e6
            used.append(path.name)
        rows.append({"spec": spec.ref, "source": spec.source, "fixtures": len(used), "events": events,
                     "us_event": full / events if events else None,
                     "floor_us_event": floor / events if events else None,
                     "beyond_us_event": (full - floor) / events if events else None,
                     "start_us_stream": start / len(used) if used else None,
                     "feed_beyond_us_event": (full - floor - start) / events if events else None})
    return rows


def _path_matches(schema_id: str | None, path: str | None) -> bool:
    """openai/chat.request <-> /v1/chat/completions, openai/responses.request <-> /v1/responses..."""
    if not schema_id or not path:
        return bool(schema_id)
    stem = schema_id.split("/")[-1].split(".")[0]
    return stem in path.strip("/").split("/")


def _client_bodies(fixtures: Path) -> list[tuple[str, str | None, dict]]:
    out = []
    for path in sorted((fixtures / "clients").glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            continue
        body = doc.get("body") if isinstance(doc, dict) and "body" in doc else doc
        if isinstance(body, dict):
            out.append((path.name, doc.get("path"), body))
    return out


def _valid(schema_id: str | None, body) -> bool:
    if not schema_id:
        return False
    try:
        from engine import schemas
        return schemas.first_error(schema_id, body) is None
    except Exception:
        return False


def request_rows(catalog: Catalog, budget: float = 0.2, fixtures: Path = FIXTURES) -> list[dict]:
    from engine import schemas

    rows = []
    bodies = _client_bodies(fixtures)
    for name in catalog.names():
        spec = catalog.get(name)
        if spec.kind != "RequestMapping":
            continue
        for fname, path, body in bodies:
            if not _path_matches(spec.source, path) or not _valid(spec.source, body):
                continue

            def run(body=body):
                sc = spec.scope(src=body, model=body.get("model"), cfg=CFG)
                if spec.check(sc) is None:
                    spec.template(sc)

            try:
                run()
            except Exception as e:
                rows.append({"spec": spec.ref, "input": fname, "error": f"{type(e).__name__}: {e}"})
                continue
            rows.append({"spec": spec.ref, "input": fname, "bytes": len(json.dumps(body)),
                         "us": _best(run, budget) * 1e6,
                         "validate_us": _best(lambda body=body: schemas.first_error(spec.source, body),
                                              budget) * 1e6,
                         "json_us": _best(lambda body=body: _decode(_dumpb(body)), budget) * 1e6})
    return rows


def response_rows(catalog: Catalog, budget: float = 0.2, fixtures: Path = FIXTURES) -> list[dict]:
    rows = []
    docs = []
    for path in sorted(fixtures.glob("*.json")):
        try:
            docs.append((path.name, json.loads(path.read_text())))
        except ValueError:
            continue
    for name in catalog.names():
        spec = catalog.get(name)
        if spec.kind != "ResponseMapping":
            continue
        for fname, body in docs:
            if not _valid(spec.source, body):
                continue
            req = {"model": "bench-model", "messages": []}

            def run(body=body):
                return spec.apply(src=body, req=req, model="bench-model", cfg=CFG)

            try:
                run()
            except Exception as e:
                rows.append({"spec": spec.ref, "input": fname, "error": f"{type(e).__name__}: {e}"})
                continue
            rows.append({"spec": spec.ref, "input": fname, "us": _best(run, budget) * 1e6})
    return rows


def run(quick: bool = False, catalog: Catalog | None = None, budget: float | None = None) -> dict:
    catalog = catalog or Catalog.load()
    budget = budget if budget is not None else (0.1 if quick else 0.3)
    return {"stream": stream_rows(catalog, budget), "request": request_rows(catalog, budget * 0.7),
            "response": response_rows(catalog, budget * 0.7)}


def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def render(result: dict) -> str:
    lines = ["Micro-benchmark: the engine alone (one process, no network; best of 5 rounds)", ""]
    lines.append(f"{'stream spec':42} {'fixtures':>8} {'events':>7} {'µs/event':>9} "
                 f"{'SSE+json only':>13} {'spec beyond':>11} {'start µs/stream':>15} {'beyond, w/o start':>17}")
    for r in result["stream"]:
        lines.append(f"{r['spec']:42} {r['fixtures']:>8} {r['events']:>7} {_f(r['us_event']):>9} "
                     f"{_f(r['floor_us_event']):>13} {_f(r['beyond_us_event']):>11} "
                     f"{_f(r.get('start_us_stream'), '{:.1f}'):>15} {_f(r.get('feed_beyond_us_event')):>17}")
    if not result["stream"]:
        lines.append("(no stream specs)")
    lines.append("")
    lines.append(f"{'request spec':42} {'input (client capture)':40} {'bytes':>6} {'µs':>8} "
                 f"{'validate µs':>11} {'json rt µs':>10}")
    for r in result["request"]:
        if "error" in r:
            lines.append(f"{r['spec']:42} {r['input']:40} error: {r['error']}")
        else:
            lines.append(f"{r['spec']:42} {r['input']:40} {r['bytes']:>6} {_f(r['us'], '{:.1f}'):>8} "
                         f"{_f(r['validate_us'], '{:.1f}'):>11} {_f(r['json_us'], '{:.1f}'):>10}")
    if not result["request"]:
        lines.append("(no request spec with a matching client capture)")
    lines.append("")
    lines.append(f"{'response spec':42} {'input':40} {'µs':>8}")
    for r in result["response"]:
        if "error" in r:
            lines.append(f"{r['spec']:42} {r['input']:40} error: {r['error']}")
        else:
            lines.append(f"{r['spec']:42} {r['input']:40} {_f(r['us'], '{:.1f}'):>8}")
    if not result["response"]:
        lines.append("(no response spec with a matching fixture)")
    lines.append("")
    lines.append("µs/event: whole recorded streams through the spec (SSE decode, json, rules, json encode, "
                 "SSE framing); SSE+json only: SSE decode + JSON decode + JSON encode (msgspec) of the same input events; "
                 "spec beyond: the difference (the target); start µs/stream: what a stream costs before its "
                 "first upstream event (the Responses spec writes response.created and response.in_progress "
                 "there); beyond, w/o start: spec beyond without that fixed cost, spread over the recorded "
                 "streams' few events (12 on average); json rt: json encode + decode of the request body, "
                 "for scale.")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    print(render(run(quick="--quick" in sys.argv)))
