"""Every mistake `engine check` must catch, kept as a spec file with its expected report (the way
Jolt keeps its bad specs): tests/bad_specs/NAME.yaml and NAME.expected, the exact messages with
file:line:col, source line and caret."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.catalog import compile_checked, load_spec

HERE = Path(__file__).resolve().parent
BAD = HERE / "bad_specs"
SPECS = sorted(p.stem for p in BAD.glob("*.yaml"))


def report(name: str) -> str:
    rel = f"bad_specs/{name}.yaml"
    source, errors = load_spec(BAD / f"{name}.yaml", rel)
    if source is not None:
        compile_checked(source, errors)
    return "".join(f"{e}\n" for e in errors)


@pytest.mark.parametrize("name", SPECS)
def test_bad_spec_reports_exactly_its_expected_errors(name):
    expected = (BAD / f"{name}.expected").read_text(encoding="utf-8")
    assert expected.strip(), "an expected report is never empty"
    assert report(name) == expected


def test_every_bad_spec_has_an_expected_report_and_the_reverse():
    assert sorted(p.stem for p in BAD.glob("*.expected")) == SPECS


def test_check_reports_every_error_of_every_bad_spec_in_one_run_and_exits_1():
    r = subprocess.run([sys.executable, "-m", "engine", "check", "--mappings", str(BAD)],
                       capture_output=True, text=True, timeout=120, cwd=HERE.parent)
    assert r.returncode == 1
    for name in SPECS:
        assert (BAD / f"{name}.expected").read_text(encoding="utf-8") in r.stderr, name
    count = sum(1 for line in r.stderr.splitlines() if line.startswith("bad_specs/"))
    assert f"{count} error(s) in the mapping specs" in r.stderr
    assert count == sum(sum(1 for line in (BAD / f"{n}.expected").read_text().splitlines()
                            if line.startswith("bad_specs/")) for n in SPECS)
    assert r.stdout == ""  # no spec of the folder is reported ok


def test_a_literal_object_with_keyword_parameters_is_written_with_fields():
    from engine.compiler import compile_spec
    from engine.source import load_text
    text = """\
apiVersion: engine.mapping/v1
kind: ResponseMapping
metadata: {name: t/response, version: "2025-01-01", changes: [test]}
template:
  literal: {fields: {cases: src.c, default: "'d'", value: {const: 1}, swtich: {const: x}}}
  plain: {const: {table: 1, then: 2}}
"""
    errors: list = []
    spec = compile_checked(load_text(text, "t.yaml"), errors)
    assert errors == [] and spec is not None
    assert spec.apply(src={"c": 3}) == {"literal": {"cases": 3, "default": "d", "value": 1, "swtich": "x"},
                                         "plain": {"table": 1, "then": 2}}
    assert compile_spec  # the same compiler engine check and the server use


def test_mistakes_an_overlay_writes_point_into_the_overlay_file(tmp_path):
    import shutil

    from engine.catalog import MAPPINGS_DIR, compile_dir
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, root)
    (root / "chat-to-messages" / "response" / "2026-02-01.yaml").write_text("""\
apiVersion: engine.mapping/v1
kind: ResponseMapping
metadata: {name: chat-to-messages/response, version: "2026-02-01", extends: "2025-06-01", changes: [test]}
patch:
  template.choices[0].fields.finish_reason.else.default: stop
  template.choices[0].fields.finish_reason.else.tabel: {a: b}
""")
    _, errors = compile_dir(root)
    where = [(e.file, e.line, e.col, e.path) for e in errors]
    overlay = "mappings/chat-to-messages/response/2026-02-01.yaml"
    assert where == [(overlay, 5, 58, "template.choices[0].fields.finish_reason.else.default"),
                     (overlay, 6, 3, "template.choices[0].fields.finish_reason.else.tabel")]
    assert "`stop` is not a name in scope" in errors[0].message
    assert "did you mean `table`?" in errors[1].message
