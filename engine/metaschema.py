"""Validates a spec against schemas/mapping-spec.json; errors point at file:line:col."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema_rs

from .spec_errors import SpecError, spec_path
from .names import nearest

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@lru_cache(maxsize=1)
def _schema() -> dict:
    with open(SCHEMA_DIR / "mapping-spec.json", encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=1)
def _fast():
    """jsonschema-rs's predicate: a valid spec (nearly all) never needs the Python validator."""
    return jsonschema_rs.Draft202012Validator(_schema(), validate_formats=False).is_valid


@lru_cache(maxsize=1)
def _validator():
    """jsonschema's validator, whose errors are what a spec author reads."""
    from jsonschema import Draft202012Validator
    return Draft202012Validator(_schema())


def _valid(value) -> bool:
    try:
        return _fast()(value)
    except Exception:  # noqa: BLE001 - a value jsonschema-rs cannot take (a YAML date): jsonschema decides
        return False


_BRANCH_NOISE = {"required", "additionalProperties", "const", "enum", "type", "not"}


def _leaves(err, out):
    if not err.context:
        out.append(err)
    for sub in err.context or ():
        _leaves(sub, out)
    return out


def _leaf(err):
    """The error that names the real mistake under oneOf/anyOf: the deepest one, and among
    equally deep ones a validator other than those every non-matching branch reports."""
    leaves = _leaves(err, [])

    def score(e):
        # a branch whose required keys are all present is the one the author meant
        req = e.schema.get("required") if isinstance(e.schema, dict) else None
        meant = bool(req) and isinstance(e.instance, dict) and all(k in e.instance for k in req)
        return (len(e.absolute_path), meant, e.validator not in _BRANCH_NOISE)
    return max(leaves, key=score)


def sections() -> list[str]:
    """The top-level sections a spec may have: the meta-schema's own list, the one place to add one."""
    return sorted(_schema()["properties"])


def _unknown_keys(source, leaf) -> list[SpecError] | None:
    """`additionalProperties: false` as one error per unknown key, at the key, with the nearest."""
    schema = leaf.schema if isinstance(leaf.schema, dict) else {}
    if leaf.validator != "additionalProperties" or schema.get("additionalProperties") is not False \
            or not isinstance(leaf.instance, dict):
        return None
    known = set(schema.get("properties") or ())
    out = []
    for key in leaf.instance:
        if key in known:
            continue
        path = tuple(leaf.absolute_path) + (key,)
        file, line, col, text = source.locate(path, key=True)
        near = nearest(str(key), known)
        msg = f"unknown key `{key}`" + (f": did you mean `{near}`?" if near else
                                         f" (keys here: {', '.join(sorted(known))})")
        out.append(SpecError(file, line, col, spec_path(path), msg, text, keypath=path))
    return out


def check(source) -> list[SpecError]:
    if not isinstance(source.value, dict):
        line, col = source.mark(())
        return [SpecError(source.path, line, col, "<root>", "a spec is a YAML mapping", source.line(line))]
    if _valid(source.value):
        return []
    out = []
    seen = set()
    for err in _validator().iter_errors(source.value):
        leaf = _leaf(err)
        path = list(leaf.absolute_path)
        key = (tuple(path), leaf.message)
        if key in seen:
            continue
        seen.add(key)
        keys = _unknown_keys(source, leaf)
        if keys is not None:
            out.extend(keys)
            continue
        file, line, col, text = source.locate(tuple(path))
        out.append(SpecError(file, line, col, spec_path(path), leaf.message, text, keypath=tuple(path)))
    out.sort(key=lambda e: (e.file, e.line, e.col))
    return out
