"""README's spec-author reference kept equal to the code it describes: the helper table to the
registry in engine/functions.py, the scope table to engine/scope.py."""
from __future__ import annotations

import re
from pathlib import Path

from engine.functions import CUSTOM_FUNCTIONS, TRANSFORMS
from engine.scope import SCOPE_NAMES

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n### {title}\n")
    end = README.find("\n#", start + 5)
    return README[start:end if end > 0 else None]


def test_the_helper_table_lists_exactly_the_registry():
    rows = re.findall(r"^\| `([a-z_]+)[(`]", section("Helper functions"), re.M)
    assert len(rows) == len(set(rows)), "a helper listed twice"
    assert set(rows) == set(CUSTOM_FUNCTIONS) | set(TRANSFORMS)


def test_the_scope_table_names_every_name_each_kind_provides():
    table = section("Names in scope")
    for kind, names in SCOPE_NAMES.items():
        row = re.search(rf"^\| {kind} \|(.*)$", table, re.M)
        assert row, kind
        assert set(re.findall(r"`([a-z_]+)`", row.group(1))) == set(names), kind
