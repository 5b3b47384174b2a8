"""Model profiles: what each upstream model accepts, as data (mappings/profiles/models.yaml).

A table of model-name globs, first match wins; an entry's missing fields come from the table's
`defaults`, or, with `like: <model>`, from the profile another entry gives that model. A user file
(config key model_profiles_file) holds entries of the same shape, read before the shipped ones.
The specs see the target model's profile as the scope name `profile`; no model name is in Python.
"""
from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from . import schemas
from .source import load_file

PROFILES_FILE = Path(__file__).resolve().parent.parent / "mappings" / "profiles" / "models.yaml"
KIND = "ModelProfiles"
_MEMO_MAX = 4096


class ProfileError(ValueError):
    """A profile file that is not a valid table; the message names file:line:col and the field."""


def _entries(path, source=None) -> tuple[dict, list]:
    """(defaults, [(compiled globs, fields, like, where)]) of one file, validated."""
    source = source or load_file(path)
    doc = source.value
    issue = schemas.first_error("model-profiles", doc)
    if issue is not None:
        keys = tuple(int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", issue.path or ""))
        line, col = source.mark(keys)
        raise ProfileError(f"{path}:{line}:{col}: {issue.path or '<root>'}: {issue.message}")
    out = []
    for i, entry in enumerate(doc.get("profiles") or ()):
        globs = entry["match"] if isinstance(entry["match"], list) else [entry["match"]]
        rx = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs), re.IGNORECASE | re.DOTALL)
        fields = {k: v for k, v in entry.items() if k not in ("match", "like", "note")}
        line, _ = source.mark(("profiles", i))
        out.append((rx, fields, entry.get("like"), f"{path}:{line}", ", ".join(globs)))
    return doc.get("defaults") or {}, out


class Profiles:
    def __init__(self, defaults: dict, entries: list):
        self.defaults = defaults
        self.entries = entries
        self._memo: dict[str, dict] = {}

    @classmethod
    def load(cls, user_file: str | None = None, shipped=PROFILES_FILE) -> "Profiles":
        defaults, entries = _entries(shipped)
        if user_file:
            user_defaults, user_entries = _entries(user_file)
            defaults = {**defaults, **user_defaults}
            entries = user_entries + entries
        table = cls(defaults, entries)
        for i, (_, _, like, where, _) in enumerate(entries):
            if like is not None and table._match(like, frozenset({i})) is None:
                raise ProfileError(f"{where}: like: {like!r} matches no other entry")
        return table

    def _match(self, model: str, chain: frozenset = frozenset()) -> dict | None:
        """The first entry matching `model` that is not already on the `like` chain (no loops)."""
        for i, (rx, fields, like, _, globs) in enumerate(self.entries):
            if i not in chain and rx.match(model) is not None:
                base = self._match(like, chain | {i}) if like is not None else self.defaults
                return {**(base or self.defaults), **fields, "match": globs}
        return None

    def get(self, model: str | None) -> dict:
        """The profile of `model`: every field, defaults filled in (the same dict for a name)."""
        key = model or ""
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= _MEMO_MAX:  # clients choose the names: bounded
                self._memo.clear()
            hit = self._memo[key] = self._match(key) or {**self.defaults, "match": None}
        return hit


def check(source) -> None:
    """ProfileError when a loaded profile file is not a valid table (`engine check`)."""
    _entries(source.path, source)


_shipped: Profiles | None = None


def shipped() -> Profiles:
    """The shipped table alone (tests, `engine translate`)."""
    global _shipped
    if _shipped is None:
        _shipped = Profiles.load()
    return _shipped
