"""Every spec under mappings/, compiled once at start; config picks the version per API pair."""
from __future__ import annotations

from pathlib import Path

from . import metaschema, profiles
from .compiler import CompiledSpec, compile_spec
from .errors import SpecError, SpecErrors
from .source import load_file

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
        try:
            source = load_file(path)
            source.path = rel
        except Exception as e:  # YAML syntax error: report it like the others and go on
            mark = getattr(e, "problem_mark", None)
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            errors.append(SpecError(rel, line, col, "<yaml>", str(getattr(e, "problem", e))))
            continue
        if isinstance(source.value, dict) and source.value.get("kind") == profiles.KIND:
            # a model-profile table (engine/profiles.py), not a mapping spec: only checked here
            try:
                profiles.check(source)
            except profiles.ProfileError as e:
                errors.append(SpecError(rel, 1, 1, "<profiles>", str(e)))
            continue
        found = metaschema.check(source)
        if found:
            errors.extend(found)
            continue
        spec = compile_spec(source, errors)
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
