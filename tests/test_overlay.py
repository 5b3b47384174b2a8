"""Spec versions as overlays: what an overlay replaces, adds and removes, how the catalog resolves
each spec of a pair at a version, where overlay errors point, and how cases are inherited."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from engine import cases
from engine.catalog import MAPPINGS_DIR, Catalog, compile_dir

OVERLAY = Path(__file__).parent / "fixtures" / "overlays" / "compaction"


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def with_overlay(tmp_path: Path) -> Path:
    """A copy of the shipped mappings plus the compaction overlay (one PairOverlay file)."""
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, root)
    shutil.copytree(OVERLAY / "mappings", root, dirs_exist_ok=True)
    return root


BASE = """\
apiVersion: engine.mapping/v1
kind: {kind}
metadata: {{name: t/{name}, version: "2025-01-01", changes: [base]}}
"""


def overlay_head(kind="RequestMapping", name="request", version="2025-02-01", extends="2025-01-01"):
    return (f"apiVersion: engine.mapping/v1\nkind: {kind}\nmetadata: {{name: t/{name}, version: \"{version}\", "
            f"extends: \"{extends}\", changes: [overlay]}}\n")


def test_a_new_stop_reason_is_one_small_file_and_both_versions_stay(tmp_path):
    files = list((OVERLAY / "mappings").rglob("*.yaml"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) < 20
    cat = Catalog.load(with_overlay(tmp_path))
    body = {"id": "m1", "model": "claude", "content": [{"type": "text", "text": "x"}], "stop_reason": "compaction",
            "usage": {"input_tokens": 1, "output_tokens": 1}}
    old = cat.pair("chat-to-messages", {"chat-to-messages": "2025-06-01"})
    new = cat.pair("chat-to-messages", {"chat-to-messages": "2026-01-15"})
    assert new["response"].ref == "chat-to-messages/response@2026-01-15"
    # the kinds without a file of that version resolve to their newest file before it
    assert new["request"].ref == "chat-to-messages/request@2025-06-01"
    assert new["error"].ref == "chat-to-messages/error@2025-06-01"
    assert new["response"].apply(src=body, req={}, cfg={}, model="m")["choices"][0]["finish_reason"] == "length"
    assert old["response"].apply(src=body, req={}, cfg={}, model="m")["choices"][0].get("finish_reason") != "length"
    # the rest of the base is inherited unchanged
    body["stop_reason"] = "max_tokens"
    assert new["response"].apply(src=body, req={}, cfg={}, model="m") == \
        old["response"].apply(src=body, req={}, cfg={}, model="m")
    # the newest version is the default; another pair is unaffected and accepts the version too
    newest = max(cat.versions("chat-to-messages/stream"))
    assert newest >= "2026-01-15" and cat.pair("chat-to-messages")["stream"].ref == f"chat-to-messages/stream@{newest}"
    assert cat.pair("messages-to-chat", {"messages-to-chat": "2026-01-15"})["response"].version == "2025-06-01"


def test_named_rules_are_replaced_added_and_removed(tmp_path):
    write(tmp_path, "t/request/2025-01-01.yaml", BASE.format(kind="RequestMapping", name="request") + textwrap.dedent("""\
        helpers: [to_json]
        vars: {a: src.a, b: src.b}
        defs: {wrap: {inner: x}}
        checks:
          - {when: "src.n > `1`", param: n, message: too many}
          - {name: no_x, when: src.x, param: x, message: no x}
        template:
          a: vars.a
          b: vars.b
          w: {use: wrap, with: {x: src.w}}
          nested: {keep: src.k, drop: src.d}
          list: [src.l]
        """))
    write(tmp_path, "t/request/2025-02-01.yaml", overlay_head() + textwrap.dedent("""\
        remove: [vars.b, template.b, template.nested.drop, checks.no_x]
        vars: {a: "src.a2", c: src.c}
        defs: {wrap: {outer: x}}
        checks:
          - {when: "src.n > `2`", param: n, message: too many now}
        template:
          c: vars.c
          nested: {added: src.k}
          list: [src.l2]
        patch:
          template.w.with.x: src.w2
        """))
    specs, errors = compile_dir(tmp_path)
    assert not errors, "\n".join(map(str, errors))
    cat = Catalog(specs)
    src = {"a": 1, "a2": 2, "b": 3, "c": 4, "k": 5, "d": 6, "l": 7, "l2": 8, "w": 9, "w2": 10, "n": 2, "x": 1}
    old, new = cat.get("t/request", "2025-01-01"), cat.get("t/request", "2025-02-01")
    assert old.apply(src=src) == {"a": 1, "b": 3, "w": {"inner": 9}, "nested": {"keep": 5, "drop": 6}, "list": [7]}
    assert new.apply(src=src) == {"a": 2, "w": {"outer": 10}, "nested": {"keep": 5, "added": 5}, "list": [8], "c": 4}
    assert [v for v, _ in new.vars] == ["a", "c"]
    assert old.check(new.scope(src=src))[0] == "n"
    assert new.check(new.scope(src=src)) is None  # n > 2 now, and the x check is gone
    assert new.check(new.scope(src={**src, "n": 3}))[1] == "too many now"


def test_stream_state_and_handlers_by_name(tmp_path):
    write(tmp_path, "t/stream/2025-01-01.yaml", BASE.format(kind="StreamMapping", name="stream") + textwrap.dedent("""\
        state: {n: 0}
        discriminator: event.type
        on:
          a: {emit: {a: event.v}}
          "x.y": {emit: {xy: event.v}}
          b: ignore
        """))
    write(tmp_path, "t/stream/2025-02-01.yaml", overlay_head("StreamMapping", "stream") + textwrap.dedent("""\
        remove: [on."x.y"]
        state: {m: 5}
        on:
          b: [{incr: n}, {emit: {b: state.n, m: state.m}}]
        """))
    specs, errors = compile_dir(tmp_path)
    assert not errors, "\n".join(map(str, errors))
    from engine.stream import StreamTranslator
    t = StreamTranslator(Catalog(specs).get("t/stream", "2025-02-01"), req={}, cfg={})
    assert t.event({"type": "a", "v": 1}) == [{"a": 1}]
    assert t.event({"type": "x.y", "v": 1}) == []
    assert t.event({"type": "b"}) == [{"b": 1, "m": 5}]


def test_errors_in_what_an_overlay_writes_point_into_the_overlay_file(tmp_path):
    write(tmp_path, "t/request/2025-01-01.yaml", BASE.format(kind="RequestMapping", name="request")
          + "template: {a: src.a, b: {use: blk}}\ndefs: {blk: {x: src.x}}\n")
    write(tmp_path, "t/request/2025-02-01.yaml", overlay_head() + textwrap.dedent("""\
        remove: [defs.blk, template.nope]
        patch:
          template.a: "src.[["
          "template.missing.deeper": x
        """))
    specs, errors = compile_dir(tmp_path)
    text = "\n".join(map(str, errors))
    assert "t/request/2025-02-01.yaml:4:20: remove[1]: t/request@2025-01-01 has no template.nope to remove" in text, text
    assert "t/request/2025-02-01.yaml:7:3: patch.template.missing.deeper:" in text, text
    assert "t/request@2025-01-01 has nothing at template.missing" in text, text
    # a patch error is only reported once the paths are right; then the expression error points at the overlay
    (tmp_path / "t/request/2025-02-01.yaml").write_text(overlay_head() + "remove: [defs.blk]\npatch:\n  template.a: \"src.[[\"\n")
    specs, errors = compile_dir(tmp_path)
    text = "\n".join(map(str, errors))
    assert "t/request/2025-02-01.yaml:6:" in text and "invalid JMESPath" in text, text
    # what the overlay removed is missing from the base's text: the error points into the base
    assert "t/request/2025-01-01.yaml:4:" in text and "no block named 'blk'" in text, text
    assert ("t/request", "2025-01-01") in specs and ("t/request", "2025-02-01") not in specs


def test_extends_must_name_an_earlier_version_that_exists(tmp_path):
    write(tmp_path, "t/request/2025-03-01.yaml", BASE.format(kind="RequestMapping", name="request")
          .replace("2025-01-01", "2025-03-01") + "template: {a: src.a}\n")
    write(tmp_path, "t/request/2025-04-01.yaml", overlay_head(version="2025-04-01", extends="2025-02-01")
          + "template: {b: src.b}\n")
    write(tmp_path, "t/request/2025-05-01.yaml", overlay_head(version="2025-05-01", extends="2025-06-01")
          + "template: {b: src.b}\n")
    specs, errors = compile_dir(tmp_path)
    text = "\n".join(map(str, errors))
    assert "2025-04-01.yaml:3:" in text and "no version at or before 2025-02-01; versions: 2025-03-01" in text, text
    assert "2025-05-01.yaml:3:" in text and "2025-06-01 is not before 2025-05-01" in text, text
    # extends resolves at or before too: an overlay of an overlay
    write(tmp_path, "t/request/2025-04-01.yaml", overlay_head(version="2025-04-01", extends="2025-03-15")
          + "template: {b: src.b}\n")
    write(tmp_path, "t/request/2025-05-01.yaml", overlay_head(version="2025-05-01", extends="2025-04-01")
          + "remove: [template.a]\n")
    specs, errors = compile_dir(tmp_path)
    assert not errors, "\n".join(map(str, errors))
    assert Catalog(specs).get("t/request", "2025-05-01").apply(src={"a": 1, "b": 2}) == {"b": 2}
    assert Catalog(specs).get("t/request", "2025-04-01").apply(src={"a": 1, "b": 2}) == {"a": 1, "b": 2}


def test_overlay_kind_must_match(tmp_path):
    write(tmp_path, "t/request/2025-01-01.yaml", BASE.format(kind="RequestMapping", name="request") + "template: {a: src.a}\n")
    write(tmp_path, "t/request/2025-02-01.yaml", overlay_head(kind="ResponseMapping") + "template: {b: src.b}\n")
    _, errors = compile_dir(tmp_path)
    assert any("keeps the kind" in e.message and e.file.endswith("2025-02-01.yaml") for e in errors)


def test_cases_are_inherited_unless_a_case_of_the_same_name_replaces_them(tmp_path):
    write(tmp_path, "p/response/2025-01-01/a.yaml", "input: 1\n")
    write(tmp_path, "p/response/2025-01-01/b.yaml", "input: 2\n")
    write(tmp_path, "p/response/2025-03-01/b.yaml", "input: 3\n")
    write(tmp_path, "p/response/2025-03-01/c.yaml", "input: 4\n")
    at = lambda v: {k: cases.load(p)["input"] for k, p in cases.cases_at(tmp_path, "p", "response", v).items()}  # noqa: E731
    assert at("2025-01-01") == {"a": 1, "b": 2}
    assert at("2025-02-01") == {"a": 1, "b": 2}
    assert at("2025-03-01") == {"a": 1, "b": 3, "c": 4}


def test_the_overlay_case_and_every_inherited_case_pass_on_the_new_version(tmp_path, fixed_clock):
    cat = Catalog.load(with_overlay(tmp_path))
    root = tmp_path / "cases"
    shutil.copytree(cases.CASES_DIR, root)
    shutil.copytree(OVERLAY / "cases", root, dirs_exist_ok=True)
    spec = cat.get("chat-to-messages/response", "2026-01-15")
    found = cases.cases_at(root, "chat-to-messages", "response", "2026-01-15")
    assert "stop-reason-compaction" in found and "cache-usage" in found
    for name, path in found.items():
        case = cases.load(path)
        assert cases.run(spec, case) == ("output", case["expected"]), name
    # the old version does not map the new stop reason
    old = cat.get("chat-to-messages/response", "2025-06-01")
    case = cases.load(found["stop-reason-compaction"])
    assert cases.run(old, case) != ("output", case["expected"])


@pytest.mark.parametrize("version", ["2099-01-01", "2024-01-01"])
def test_an_unknown_version_is_refused_with_the_versions_there_are(tmp_path, version):
    cat = Catalog.load(with_overlay(tmp_path))
    with pytest.raises(KeyError, match="versions: 2025-06-01, 2026-01-15"):
        cat.pair("chat-to-messages", {"chat-to-messages": version})
    with pytest.raises(KeyError, match="versions: 2025-06-01, 2026-01-15"):
        cat.get("chat-to-messages/response", version)


def test_a_pair_overlay_changes_several_specs_in_one_file(tmp_path):
    for kind in ("request", "response"):
        write(tmp_path, f"t/{kind}/2025-01-01.yaml", BASE.format(kind="RequestMapping", name=kind)
              + "template: {a: src.a}\n")
    pair = textwrap.dedent("""\
        apiVersion: engine.mapping/v1
        kind: PairOverlay
        metadata: {name: t, version: "2025-02-01", extends: "2025-01-01", changes: [both]}
        request:
          template: {b: src.b}
        response:
          patch: {template.a: src.c}
        """)
    write(tmp_path, "t/2025-02-01.yaml", pair)
    specs, errors = compile_dir(tmp_path)
    assert not errors, "\n".join(map(str, errors))
    cat = Catalog(specs)
    assert cat.get("t/request", "2025-02-01").apply(src={"a": 1, "b": 2, "c": 3}) == {"a": 1, "b": 2}
    assert cat.get("t/response", "2025-02-01").apply(src={"a": 1, "b": 2, "c": 3}) == {"a": 3}
    assert cat.get("t/response", "2025-02-01").changes == ["both"]
    # a section that names no spec of the pair, and an error inside a section, point into the file
    write(tmp_path, "t/2025-02-01.yaml", pair.replace("response:", "respons:").replace("src.b", "'src.[['"))
    _, errors = compile_dir(tmp_path)
    text = "\n".join(map(str, errors))
    assert "t/2025-02-01.yaml:6:1: respons: t has no spec kind 'respons'; kinds: request, response" in text, text
    assert "t/2025-02-01.yaml:5:" in text and "template.b: invalid JMESPath" in text, text


def test_fields_nodes_merge_by_field_name_keywords_included(tmp_path):
    write(tmp_path, "t/request/2025-01-01.yaml", BASE.format(kind="RequestMapping", name="request")
          + "template: {fields: {merge: src.m, keep: src.k}, keep_null: [merge]}\n")
    write(tmp_path, "t/request/2025-02-01.yaml", overlay_head() + "template: {fields: {use: src.u, merge: src.k}}\n")
    specs, errors = compile_dir(tmp_path)
    assert not errors, "\n".join(map(str, errors))
    out = Catalog(specs).get("t/request", "2025-02-01").apply(src={"m": 1, "k": 2, "u": 3})
    assert out == {"merge": 2, "keep": 2, "use": 3}
    assert Catalog(specs).get("t/request", "2025-02-01").apply(src={"u": 3}) == {"merge": None, "use": 3}
