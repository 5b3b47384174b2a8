"""Case files: tests/cases/<pair>/<kind>/<version>/<case>.yaml, each an input, the request or
config it needs, and the exact expected output (or the expected rejection).

Keys: description, input, request (the client request, for response specs), config
(spec cfg values), model (the upstream model, whose shipped profile is the scope name `profile`),
profile (fields that replace the shipped profile's), dropped (the params the spec's `drops:`
report, in order; none when absent), expected | rejected {param, status}. A request case is
rejected by the source schema (as the server validates first) or by the spec's checks."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine import schemas
from engine.nodes import dumps
from engine.profiles import shipped

CASES = Path(__file__).parent / "cases"
CASE_FILES = sorted(CASES.rglob("*.yaml"))


@pytest.fixture(autouse=True)
def _frozen(fixed_clock):
    pass


def _spec_for(path: Path, catalog):
    pair, kind, version = path.relative_to(CASES).parts[:3]
    return catalog.get(f"{pair}/{kind}", version)


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: str(p.relative_to(CASES)))
def test_case(path, catalog):
    case = yaml.safe_load(path.read_text())
    spec = _spec_for(path, catalog)
    cfg = {"default_max_tokens": 4096, "prompt_cache": "off", "prompt_cache_ttl": "5m", **(case.get("config") or {})}
    model = case.get("model", "claude-sonnet-4-5")
    profile = {**shipped().get(model), **(case.get("profile") or {})}
    scope = spec.scope(src=case["input"], req=case.get("request") or {}, cfg=cfg, model=model, profile=profile)
    if "rejected" in case and spec.kind == "RequestMapping":
        # the server validates the body against the source schema first (a 400 naming the path)
        issue = schemas.first_error(spec.source, case["input"])
        if issue is not None:
            assert issue.path == case["rejected"]["param"], issue
            assert case["rejected"].get("status", 400) == 400
            return
    failed = spec.check(scope)
    if "rejected" in case:
        assert failed is not None, "expected the request to be rejected"
        param, message, status, _code = failed
        assert param == case["rejected"]["param"]
        assert status == case["rejected"].get("status", 400)
        return
    assert failed is None, f"unexpectedly rejected: {failed}"
    assert [param for param, _ in spec.dropped(scope)] == case.get("dropped", [])
    out = spec.template(scope)
    assert out == case["expected"]
    # the text the server sends without building the dict (engine/serialize.py) is the dict's
    text = getattr(spec.template, "json", None)
    if text is not None:
        assert text(scope) == dumps(out)
    # the input and the output are what their APIs accept
    assert schemas.first_error(spec.source, case["input"]) is None, schemas.first_error(spec.source, case["input"])
    assert schemas.first_error(spec.target, out) is None, schemas.first_error(spec.target, out)


def test_every_spec_names_schemas_that_exist(catalog):
    known = set(schemas.schema_ids())
    for spec in catalog.specs.values():
        assert {spec.source, spec.target} <= known, f"{spec.ref}: {spec.source} -> {spec.target}"


def test_every_request_and_response_spec_has_cases(catalog):
    covered = {tuple(p.relative_to(CASES).parts[:3]) for p in CASE_FILES}
    for (name, version), spec in catalog.specs.items():
        if spec.kind in ("RequestMapping", "ResponseMapping"):
            pair, kind = name.split("/")
            assert (pair, kind, version) in covered, f"no case files for {name}@{version}"
