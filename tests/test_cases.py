"""Case files: tests/cases/<pair>/<kind>/<version>/<case>.yaml, each an input, the request or
config it needs, and the exact expected output (or the expected rejection).

Keys: description, input, request (the client request, for response specs), config
(spec cfg values), model (the upstream model, whose shipped profile is the scope name `profile`),
profile (fields that replace the shipped profile's), dropped (the params the spec's `drops:`
report, in order; none when absent), expected | rejected {param, status}.

Each version of a spec runs the cases it inherits (engine/cases.py): its own folder's, and those
of earlier versions that no case of the same name replaces."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine import cases as case_files, schemas
from engine.catalog import MAPPINGS_DIR
from engine.nodes import dumps
from engine.profiles import shipped

CASES = Path(__file__).parent / "cases"
CASE_FILES = sorted(CASES.rglob("*.yaml"))


def _runs():
    """(pair, kind, version, case file) for each spec version and each case it inherits."""
    out = []
    for pair, kind in case_files.kinds_with_cases(CASES):
        spec_versions = {p.stem for p in (MAPPINGS_DIR / pair / kind).glob("*.yaml")}
        for version in sorted(spec_versions | set(case_files.versions_with_cases(CASES, pair, kind))):
            for path in case_files.cases_at(CASES, pair, kind, version).values():
                out.append((pair, kind, version, path))
    return out


RUNS = _runs()


@pytest.fixture(autouse=True)
def _frozen(fixed_clock):
    pass


@pytest.mark.parametrize("pair,kind,version,path", RUNS, ids=[f"{p}/{k}/{v}/{f.name}" for p, k, v, f in RUNS])
def test_case(pair, kind, version, path, catalog):
    case = yaml.safe_load(path.read_text())
    spec = catalog.get(f"{pair}/{kind}", version)
    cfg = {"default_max_tokens": 4096, "prompt_cache": "off", "prompt_cache_ttl": "5m", **(case.get("config") or {})}
    model = case.get("model", "claude-sonnet-4-5")
    profile = {**shipped().get(model), **(case.get("profile") or {})}
    scope = spec.scope(src=case["input"], req=case.get("request") or {}, cfg=cfg, model=model, profile=profile)
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
    for (name, version), spec in catalog.specs.items():
        if spec.kind in ("RequestMapping", "ResponseMapping"):
            pair, kind = name.split("/")
            assert case_files.cases_at(CASES, pair, kind, version), f"no case files for {name}@{version}"
