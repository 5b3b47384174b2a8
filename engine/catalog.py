"""Every spec under mappings/, compiled once at start; config picks the version per API pair."""
from __future__ import annotations

from pathlib import Path

import yaml

from . import metaschema
from .compiler import CompiledSpec, compile_spec
from .errors import SpecError, SpecErrors
from .source import load_text

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"


class Catalog:
    def __init__(self, specs: dict[tuple[str, str], CompiledSpec]):
        self.specs = specs
        self._latest: dict[str, CompiledSpec] = {}
        for (name, _), spec in sorted(specs.items()):
            if spec.status != "deprecated" or name not in self._latest:
                self._latest[name] = spec

    @classmethod
    def load(cls, root=MAPPINGS_DIR) -> "Catalog":
        specs, errors = compile_dir(root)
        if errors:
            raise SpecErrors(errors)
        return cls(specs)

    def names(self) -> list[str]:
        return sorted(self._latest)

    def versions(self, name: str) -> list[str]:
        return sorted(v for (n, v) in self.specs if n == name)

    def get(self, name: str, version: str | None = None) -> CompiledSpec:
        """`version` None or 'latest' -> newest non-deprecated version."""
        if version in (None, "", "latest"):
            try:
                return self._latest[name]
            except KeyError:
                raise KeyError(f"no mapping spec named {name!r}; known: {', '.join(self.names())}") from None
        try:
            return self.specs[(name, version)]
        except KeyError:
            raise KeyError(f"no version {version!r} of mapping {name!r}; versions: "
                           f"{', '.join(self.versions(name)) or 'none'}") from None

    def pair(self, pair: str, versions: dict | None = None) -> dict[str, CompiledSpec]:
        """All specs of one API pair (e.g. chat-to-messages -> request/response/stream/error)."""
        version = (versions or {}).get(pair)
        out = {}
        for name in self.names():
            if name.startswith(pair + "/"):
                out[name[len(pair) + 1:]] = self.get(name, version)
        if not out:
            raise KeyError(f"no mapping specs for {pair!r}")
        return out


def compile_dir(root) -> tuple[dict, list[SpecError]]:
    """Compiles every *.yaml below root; returns (specs, every error of every spec)."""
    specs: dict = {}
    errors: list[SpecError] = []
    for path in sorted(Path(root).rglob("*.yaml")):
        rel = str(path.relative_to(Path(root).parent)) if Path(root).parent in path.parents else str(path)
        source, found = load_spec(path, rel)
        if source is None:
            errors.extend(found)
            continue
        spec = compile_checked(source, found)
        errors.extend(found)
        if spec is None:
            continue
        key = (spec.name, spec.version)
        if key in specs:
            line, col = source.mark(("metadata", "version"))
            errors.append(SpecError(rel, line, col, "metadata.version",
                                    f"{spec.ref} is also defined in {specs[key].file}", source.line(line)))
            continue
        specs[key] = spec
    return specs, errors


def load_spec(path, rel: str):
    """(Source, []) or (None, [the YAML syntax error at its line and column, with a caret])."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return load_text(text, rel), []
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        lines = text.splitlines()
        if line > len(lines) and lines:  # the end of the file: point after its last line
            line, col = len(lines), len(lines[-1]) + 1
        src_line = lines[line - 1] if 0 < line <= len(lines) else ""
        start = getattr(e, "context_mark", None)
        if context and start is not None and start is not mark:
            context += f" at line {start.line + 1}, column {start.column + 1}"
        msg = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
        return None, [SpecError(rel, line, col, "<yaml>", msg, src_line)]


def compile_checked(source, errors: list):
    """Meta-schema check and compile of one spec, every error of both in `errors` (sorted by
    position); the compiled spec, or None. The compiler's own message for a node replaces the
    meta-schema's for the same node: it names the nearest keyword."""
    meta = metaschema.check(source)
    compiled: list = []
    try:
        spec = compile_spec(source, compiled)
    except Exception:  # noqa: BLE001 - a structure the meta-schema already refused
        if not meta:
            raise
        spec = None
    meta = [m for m in meta if not any(_overlap(m.keypath, c.keypath) for c in compiled)]
    found = sorted(meta + compiled, key=lambda e: (e.line, e.col))
    errors.extend(found)
    return None if found else spec


def _overlap(a: tuple, b: tuple) -> bool:
    if not a or not b:
        return False
    n = min(len(a), len(b))
    return a[:n] == b[:n]
