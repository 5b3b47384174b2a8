"""Case files: tests/cases/<pair>/<kind>/<version>/<case>.yaml, run through a spec.

A version inherits the cases of the versions before it; a case file of the same name in a later
version's folder replaces the inherited one. Keys: description, input, request (the client
request, for response specs), config (spec cfg values), model (the upstream model),
expected | rejected {param, status}."""
from __future__ import annotations

from pathlib import Path

import yaml

CASES_DIR = Path(__file__).resolve().parent.parent / "tests" / "cases"


def versions_with_cases(root, pair: str, kind: str) -> list[str]:
    d = Path(root) / pair / kind
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def cases_at(root, pair: str, kind: str, version: str) -> dict[str, Path]:
    """Case name -> the file that holds it at `version` (its own, else the newest before)."""
    out: dict[str, Path] = {}
    for v in versions_with_cases(root, pair, kind):
        if v <= version:
            for p in sorted((Path(root) / pair / kind / v).glob("*.yaml")):
                out[p.stem] = p
    return dict(sorted(out.items()))


def kinds_with_cases(root) -> list[tuple[str, str]]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p.parent.name, p.name) for p in root.glob("*/*") if p.is_dir())


def load(path) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def run(spec, case: dict):
    """('rejected', {param, message, status}) or ('output', the translated document)."""
    cfg = {"default_max_tokens": 4096, **(case.get("config") or {})}
    scope = spec.scope(src=case["input"], req=case.get("request") or {}, cfg=cfg,
                       model=case.get("model", "claude-sonnet-4-5"))
    failed = spec.check(scope)
    if failed is not None:
        param, message, status, _code = failed
        return "rejected", {"param": param, "message": message, "status": status}
    return "output", spec.template(scope)
