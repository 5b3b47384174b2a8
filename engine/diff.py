"""`engine diff PAIR VERSION_A VERSION_B`: the behavioural changelog of a version.

Every case file of the pair (tests/cases, as inherited at either version) and every recorded
fixture (tests/fixtures and any --fixtures folder, e.g. one `engine serve --record` wrote) is run
through the pair's specs at both versions; what comes out differently is printed per case, as
JSON paths with the value before and after. The clock and ids are fixed while it runs, so only
the specs make a difference."""
from __future__ import annotations

import json
from pathlib import Path

from . import cases as case_files
from . import functions
from .sse import SSEDecoder
from .stream import StreamTranslator

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
DEFAULT_STREAM_REQ = {"model": "replay-model", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                      "stream_options": {"include_usage": True}}
_ABSENT = object()


def changes(a, b, path: str = "") -> list[str]:
    """One line per JSON path whose value differs: `path: before -> after`."""
    if type(a) is dict and type(b) is dict:
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{k}" if path else str(k)
            out += changes(a.get(k, _ABSENT), b.get(k, _ABSENT), sub)
        return out
    if type(a) is list and type(b) is list and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += changes(x, y, f"{path}[{i}]")
        return out
    if a == b and type(a) is type(b):
        return []
    return [f"{path or '<root>'}: {_show(a)} -> {_show(b)}"]


def _show(v) -> str:
    if v is _ABSENT:
        return "(absent)"
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def _stream_out(spec, raw: bytes, req: dict) -> list:
    t = StreamTranslator(spec, req=req, cfg={"default_max_tokens": 4096, "stream_id": "diff"}, model="replay-model")
    out = t.start_bytes() + t.feed(raw) + t.finish()
    dec = SSEDecoder()
    events = []
    for name, data in dec.feed(out) + dec.flush():
        try:
            value = json.loads(data)
        except ValueError:
            value = data
        events.append({"event": name, "data": value} if name else value)
    return events


def _stream_changes(a: list, b: list) -> list[str]:
    out = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else _ABSENT
        y = b[i] if i < len(b) else _ABSENT
        out += [f"event {i}: {line}" for line in changes(x, y)] if x is not _ABSENT and y is not _ABSENT \
            else [f"event {i}: {_show(x)} -> {_show(y)}"]
    return out


def _exchange(path: Path) -> dict | None:
    side = path.parent / "requests" / (path.stem + ".json")
    if side.is_file():
        try:
            return json.loads(side.read_text(encoding="utf-8"))
        except ValueError:
            return None
    return None


def _fixture_runs(folders, specs_a: dict, specs_b: dict, pair: str):
    """(label, kind, run(spec) -> output) for each fixture that the pair's specs read."""
    for folder in folders:
        for path in sorted(Path(folder).glob("*")):
            if path.suffix not in (".sse", ".json") or path.name.endswith(".part"):
                continue
            ex = _exchange(path)
            if ex is not None and ex.get("pair") not in (None, pair):
                continue
            if ex is not None and ex.get("status", 200) != 200:
                continue
            translated = ex is not None and ex.get("pair") == pair
            # a passed-through exchange's client request is in the upstream's API, not the pair's
            req = ex["client"].get("body") if translated else None
            if path.suffix == ".sse":
                kind, schema = "stream", _stream_source(path.name)
            else:
                kind, schema = "response", _body_source(path.name)
            spec = specs_b.get(kind)
            if spec is None or (not translated and schema != spec.source):
                continue
            raw = path.read_bytes()
            if kind == "stream":
                yield path.name, kind, (lambda s, raw=raw, req=req: _stream_out(s, raw, req or DEFAULT_STREAM_REQ))
            else:
                try:
                    body = json.loads(raw)
                except ValueError:
                    continue
                yield path.name, kind, (lambda s, body=body, req=req: s.apply(
                    src=body, req=req or {}, cfg={"default_max_tokens": 4096}, model="replay-model"))


def _stream_source(name: str) -> str | None:
    return "anthropic/stream-event" if name.startswith("anthropic-") else \
        "openai/chat.chunk" if name.startswith("openai-") else None


def _body_source(name: str) -> str | None:
    return "anthropic/messages.response" if name.startswith("anthropic-message") else \
        "openai/chat.response" if name.startswith("openai-chat-completion") else None


def run(catalog, pair: str, a: str, b: str, cases_dir=case_files.CASES_DIR, fixtures=(FIXTURES_DIR,), out=print) -> int:
    """Prints the changelog; returns how many cases and fixtures changed."""
    specs_a = catalog.pair(pair, {pair: a})
    specs_b = catalog.pair(pair, {pair: b})
    saved = functions.clock, functions.random_bytes
    functions.clock, functions.random_bytes = (lambda: 1760000000), (lambda n: bytes(n))
    try:
        out(f"{pair} {a} -> {b}")
        for kind in sorted(specs_b):
            ra, rb = specs_a[kind].ref, specs_b[kind].ref
            out(f"  {kind:<9} {ra.split('@')[1]} -> {rb.split('@')[1]}" + ("  (same spec)" if ra == rb else ""))
            name = specs_b[kind].name
            for v in (v for v in catalog.versions(name) if min(a, b) < v <= max(a, b)):
                out("\n".join(f"            {v}: {c}" for c in catalog.specs[(name, v)].changes))
        changed = total = 0
        for kind in sorted(specs_b):
            if specs_a[kind] is specs_b[kind]:
                continue
            names = {**case_files.cases_at(cases_dir, pair, kind, a), **case_files.cases_at(cases_dir, pair, kind, b)}
            for name, path in sorted(names.items()):
                case = case_files.load(path)
                total += 1
                lines = changes(_result(specs_a[kind], case), _result(specs_b[kind], case))
                if lines:
                    changed += 1
                    out(f"changed  case {kind}/{name}  ({_shown_path(path)})")
                    out("\n".join("    " + line for line in lines))
        for label, kind, apply in _fixture_runs(fixtures, specs_a, specs_b, pair):
            if specs_a[kind] is specs_b[kind]:
                continue
            total += 1
            x, y = _safe(apply, specs_a[kind]), _safe(apply, specs_b[kind])
            lines = _stream_changes(x, y) if kind == "stream" and type(x) is list and type(y) is list else changes(x, y)
            if lines:
                changed += 1
                out(f"changed  fixture {label}  ({kind})")
                out("\n".join("    " + line for line in lines))
        out(f"{total} case(s) and fixture(s) run through both versions; {changed} changed")
        return changed
    finally:
        functions.clock, functions.random_bytes = saved


def _shown_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _result(spec, case: dict):
    try:
        kind, value = case_files.run(spec, case)
    except Exception as e:  # a spec that fails on a case is a behaviour too
        return {"failed": f"{type(e).__name__}: {e}"}
    return {"rejected": value} if kind == "rejected" else value


def _safe(apply, spec):
    try:
        return apply(spec)
    except Exception as e:
        return {"failed": f"{type(e).__name__}: {e}"}
