"""Every spec under mappings/, compiled once at start; config picks the version per API pair.

Versions are dates. A spec file exists for the versions where that spec changed; asked for a
version, each spec resolves to its newest file at or before it, so a pair has a version as soon
as one of its specs has a file of that version. A file with `metadata.extends` is an overlay
of an earlier version (engine/overlay.py)."""
from __future__ import annotations

from pathlib import Path

import jmespath.parser
import yaml

from . import error_types, metaschema, pairs, profiles, schemas
from .compiler import CompiledSpec, compile_spec
from .spec_errors import SpecError, SpecErrors
from .overlay import Overlay
from .source import Source, load_text

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"


class PinError(ValueError):
    """The config pins versions the specs do not have; one line per pin."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Catalog:
    def __init__(self, specs: dict[tuple[str, str], CompiledSpec], declared: dict | None = None,
                 known: dict[tuple[str, str], str] | None = None):
        """`known`: (name, version) -> status of every spec file, when `specs` holds only some of
        them compiled (a serving catalog, `Catalog.load(root, serving=...)`)."""
        self.specs = specs
        self.declared = declared or {}  # pair name -> pairs.PairDecl (mappings/<pair>/pair.yaml)
        self.known = known if known is not None else {k: s.status for k, s in specs.items()}
        self._latest_keys: dict[str, tuple[str, str]] = {}
        for key, status in sorted(self.known.items()):
            if status != "deprecated" or key[0] not in self._latest_keys:
                self._latest_keys[key[0]] = key
        self._latest = {n: specs[k] for n, k in self._latest_keys.items() if k in specs}

    @classmethod
    def load(cls, root=MAPPINGS_DIR, serving: tuple | None = None) -> "Catalog":
        """Every spec of every version, compiled. With `serving` = (mapping_versions, routes) of
        a config: only the files the gateway serves with it (each pair at its configured version
        and at each version a route pins); the others are read and indexed, not compiled, so
        every pin is still checked against every version."""
        select = None if serving is None else (lambda known: served_keys(known, *serving))
        specs, errors, known = _compile_dir(root, select)
        if errors:
            raise SpecErrors(errors)
        return cls(specs, pairs.load_dir(root), known)

    def names(self) -> list[str]:
        return sorted(self._latest_keys)

    def warm(self) -> None:
        """Makes the code objects every request through each spec runs (CompiledSpec.warm)."""
        for spec in self.specs.values():
            spec.warm()

    def latest_refs(self) -> list[str]:
        """NAME@VERSION of each spec at its newest non-deprecated version."""
        return [f"{n}@{v}" for n, v in self._latest_keys.values()]

    def versions(self, name: str) -> list[str]:
        """The versions that have a file for this spec."""
        return sorted(v for (n, v) in self.known if n == name)

    def all_versions(self) -> list[str]:
        return sorted({v for (_, v) in self.known})

    def pairs(self) -> list[str]:
        return sorted({n.rsplit("/", 1)[0] for n in self._latest_keys})

    def pair_versions(self, pair: str) -> list[str]:
        return sorted({v for (n, v) in self.known if n.startswith(pair + "/")})

    def _resolve_key(self, name: str, version: str) -> tuple[str, str] | None:
        found = [v for v in self.versions(name) if v <= version]
        return (name, found[-1]) if found else None

    def _compiled(self, key: tuple[str, str]) -> CompiledSpec:
        spec = self.specs.get(key)
        if spec is None:
            raise KeyError(f"{key[0]}@{key[1]} is not compiled in this catalog: a serving catalog "
                           "compiles the versions its config serves")
        return spec

    def resolve(self, name: str, version: str) -> CompiledSpec | None:
        """The newest file of `name` at or before `version`, or None."""
        key = self._resolve_key(name, version)
        return None if key is None else self._compiled(key)

    def _key(self, name: str, version: str | None) -> tuple[str, str]:
        if name not in self._latest_keys:
            raise KeyError(f"no mapping spec named {name!r}; known: {', '.join(self.names())}")
        if version in (None, "", "latest"):
            return self._latest_keys[name]
        key = self._resolve_key(name, version) if version in self.all_versions() else None
        if key is None:
            raise KeyError(f"no version {version!r} of mapping {name!r}; versions: "
                           f"{', '.join(self.versions(name)) or 'none'}")
        return key

    def get(self, name: str, version: str | None = None) -> CompiledSpec:
        """`version` None or 'latest' -> newest non-deprecated version; else the newest file at
        or before it, when it is a version of the catalog."""
        return self._compiled(self._key(name, version))

    def pair_keys(self, pair: str, versions: dict | None = None) -> dict[str, tuple[str, str]]:
        """The (name, version) of each spec of one API pair that `pair()` returns."""
        version = (versions or {}).get(pair)
        kinds = [n for n in self.names() if n.startswith(pair + "/")]
        if not kinds:
            raise KeyError(f"no mapping specs for {pair!r}; pairs: {', '.join(self.pairs())}")
        problem = self.pin_problem(pair, version) if version not in (None, "", "latest") else None
        if problem:
            raise KeyError(problem)
        return {n[len(pair) + 1:]: self._key(n, version) for n in kinds}

    def pair(self, pair: str, versions: dict | None = None) -> dict[str, CompiledSpec]:
        """All specs of one API pair (e.g. chat-to-messages -> request/response/stream/error)."""
        return {kind: self._compiled(key) for kind, key in self.pair_keys(pair, versions).items()}

    def pin_problem(self, pair: str, version: str) -> str | None:
        """Why `pair` cannot be served at `version`, or None."""
        if pair not in self.pairs():
            return f"no mapping pair {pair!r}; pairs: {', '.join(self.pairs())}"
        if version not in self.all_versions():
            return (f"no version {version!r} of {pair}; versions: "
                    f"{', '.join(self.pair_versions(pair)) or 'none'}")
        missing = [n for n in self.names() if n.startswith(pair + "/") and self._resolve_key(n, version) is None]
        if missing:
            return (f"{pair}@{version}: {', '.join(missing)} has no version at or before {version}; "
                    f"versions of {pair}: {', '.join(self.pair_versions(pair))}")
        return None

    def pin_errors(self, routes=(), mapping_versions=None) -> list[str]:
        """Every pin of the config that names a version the catalog cannot serve."""
        out = []
        for pair, version in (mapping_versions or {}).items():
            problem = self.pin_problem(pair, version)
            if problem:
                out.append(f"mapping_versions {pair}={version}: {problem}")
        for route in routes:
            if not route.version:
                continue
            if route.version not in self.all_versions():
                out.append(f"route {route}: no mapping version {route.version!r}; versions: "
                           f"{', '.join(self.all_versions())}")
                continue
            out.extend(f"route {route}: {p}" for p in filter(None, (
                self.pin_problem(pair, route.version) for pair in self.pairs())))
        return out


def _meta(source: Source) -> tuple[str | None, str | None, str | None]:
    meta = source.value.get("metadata") if isinstance(source.value, dict) else None
    if not isinstance(meta, dict):
        return None, None, None
    name, version, extends = (meta.get(k) for k in ("name", "version", "extends"))
    return (name if isinstance(name, str) else None, version if isinstance(version, str) else None,
            extends if isinstance(extends, str) else None)


def _error(source: Source, path: tuple, message: str) -> SpecError:
    file, line, col, text = source.locate(path)
    return SpecError(file, line, col, ".".join(p for p in path if p != "<key>"), message, text)


def _check_data_file(source, rel: str) -> list | None:
    """The errors of a file under mappings/ that is data the server reads rather than a mapping
    spec (a model-profile table, the status -> error type table, an API pair's declaration), each
    only checked here; None for a mapping spec."""
    kind = source.value.get("kind") if isinstance(source.value, dict) else None
    try:
        if kind == profiles.KIND:
            profiles.check(source)
        elif kind == error_types.KIND:
            error_types.check(source)
        elif pairs.is_declaration(source):
            pairs.parse(source)
        else:
            return None
    except profiles.ProfileError as e:
        return [SpecError(rel, 1, 1, "<profiles>", str(e))]
    except error_types.ErrorTypesError as e:
        return [SpecError(rel, 1, 1, "<error types>", str(e))]
    except pairs.PairError as e:
        return list(e.errors)
    return []


def load_dir(root) -> tuple[list[Source], list[SpecError]]:
    sources, errors = [], []
    for path in sorted(Path(root).rglob("*.yaml")):
        rel = str(path.relative_to(Path(root).parent)) if Path(root).parent in path.parents else str(path)
        source, found = load_spec(path, rel)
        if source is None:  # a YAML syntax error: reported like the others, the other files go on
            errors.extend(found)
            continue
        data_errors = _check_data_file(source, rel)
        if data_errors is not None:
            errors.extend(data_errors)
            continue
        sources.append(source)
    return sources, errors


PAIR_OVERLAY = "PairOverlay"
_PAIR_KEYS = ("apiVersion", "kind", "metadata")


def split_pair_overlay(source: Source, kinds: set, errors: list) -> list[Source]:
    """A PairOverlay file (mappings/<pair>/<version>.yaml) changes several specs of one pair in
    one version: each section named after a spec kind is an overlay of that spec, sharing the
    file's metadata. Returned as one overlay Source per kind, positions kept."""
    doc = source.value
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    pair = meta.get("name")
    if not isinstance(pair, str) or "/" in pair or not isinstance(meta.get("extends"), str):
        errors.append(_error(source, ("metadata",), "a PairOverlay's metadata names the pair (name: chat-to-messages) "
                                                   "and the version it extends (extends: \"2025-06-01\")"))
        return []
    known = sorted(k for (p, k) in kinds if p == pair)
    out = []
    for kind, body in doc.items():
        if kind in _PAIR_KEYS:
            continue
        if kind not in known:
            errors.append(_error(source, (kind, "<key>"), f"{pair} has no spec kind {kind!r}; kinds: {', '.join(known)}"))
            continue
        if not isinstance(body, dict) or any(k in body for k in _PAIR_KEYS):
            errors.append(_error(source, (kind,), f"{kind}: holds what an overlay of {pair}/{kind} holds "
                                                  "(remove, vars, template, on, patch, ...), without metadata"))
            continue
        marks = {path: pos for path, pos in source.marks.items() if path[:1] == ("metadata",)}
        marks.update({path[1:]: pos for path, pos in source.marks.items() if path[:1] == (kind,)})
        value = {"metadata": {**meta, "name": f"{pair}/{kind}"}, **body}
        out.append(Source(path=source.path, text=source.text, value=value, marks=marks))
    return out


def resolve_sources(sources: list[Source], errors: list) -> list[Source]:
    """Each file as the whole spec it stands for: overlays applied onto what they extend."""
    files: dict[tuple, Source] = {}
    out: list[Source] = []
    kinds = {tuple(n.rsplit("/", 1)) for n, _, _ in map(_meta, sources) if n and "/" in n}
    expanded = []
    for source in sources:
        if isinstance(source.value, dict) and source.value.get("kind") == PAIR_OVERLAY:
            expanded.extend(split_pair_overlay(source, kinds, errors))
        else:
            expanded.append(source)
    for source in expanded:
        name, version, _ = _meta(source)
        if name is None or version is None:
            out.append(source)  # the meta-schema says what is wrong with it
            continue
        if (name, version) in files:
            errors.append(_error(source, ("metadata", "version"),
                                 f"{name}@{version} is also defined in {files[(name, version)].path}"))
            continue
        files[(name, version)] = source
    resolved: dict[tuple, Source | None] = {}

    def resolve(key) -> Source | None:
        if key in resolved:
            return resolved[key]
        source = files[key]
        name, version, extends = _meta(source)
        resolved[key] = None  # while resolving: an extends cycle finds None
        if extends is None:
            resolved[key] = source
            return source
        if extends >= version:
            errors.append(_error(source, ("metadata", "extends"),
                                 f"a version extends an earlier one; {extends} is not before {version}"))
            return None
        below = sorted(v for (n, v) in files if n == name and v <= extends)
        if not below:
            errors.append(_error(source, ("metadata", "extends"),
                                 f"{name} has no version at or before {extends}; versions: "
                                 f"{', '.join(sorted(v for (n, v) in files if n == name))}"))
            return None
        base = resolve((name, below[-1]))
        if base is None:
            return None  # the base's own errors are reported
        resolved[key] = Overlay(base, source, errors).apply()
        return resolved[key]

    for key in files:
        merged = resolve(key)
        if merged is not None:
            out.append(merged)
    # resolve() calls itself through its closure: a cycle that would keep every file read (and
    # what it holds) alive until the next full collection, rather than until the caller is done
    del resolve
    return out


def served_keys(known: dict, mapping_versions: dict | None, routes=()) -> set:
    """The (name, version) files a gateway serves: each pair at its `mapping_versions` version
    (else the newest) and at each version a route pins. A pin the catalog cannot serve adds
    nothing (create_app refuses it with the catalog's message)."""
    index = Catalog({}, known=known)
    pins = {r.version for r in routes if getattr(r, "version", None)}
    out: set = set()
    for pair in index.pairs():
        for version in {(mapping_versions or {}).get(pair), *pins}:
            try:
                out.update(index.pair_keys(pair, {pair: version}).values())
            except KeyError:
                pass
    return out


def compile_dir(root) -> tuple[dict, list[SpecError]]:
    """Compiles every *.yaml below root; returns (specs, every error of every spec)."""
    specs, errors, _ = _compile_dir(root)
    return specs, errors


def _compile_dir(root, select=None) -> tuple[dict, list[SpecError], dict]:
    """(specs, errors, known): `select(known)` names the (name, version) files to compile, where
    `known` maps every (name, version) to its status; None compiles all. A file whose metadata
    names no spec is always compiled, so the meta-schema reports it."""
    specs: dict = {}
    for folder in sorted(Path(root).glob("*/schemas")):
        schemas.add_dir(folder)  # an API pair's own client/upstream shapes
    sources, errors = load_dir(root)
    resolved = [(source, _meta(source)[:2]) for source in resolve_sources(sources, errors)]
    known = {}
    for source, (name, version) in resolved:
        if name is not None and version is not None:
            status = source.value["metadata"].get("status", "stable")
            known[(name, version)] = status if isinstance(status, str) else "stable"
    wanted = None if select is None else select(known)
    # each file let go once compiled (those not wanted before any is): what compiling the next
    # one allocates reuses its memory, rather than the process growing by all the files at once
    todo = [(s, key) for s, key in resolved if wanted is None or key not in known or key in wanted]
    del resolved, sources
    todo.reverse()
    while todo:
        source, key = todo.pop()
        spec = compile_checked(source, errors)
        del source
        if spec is not None:
            specs[(spec.name, spec.version)] = spec
    # every expression is compiled: jmespath's parse cache (128 ASTs, ~1 MB) would only be kept
    jmespath.parser.Parser.purge()
    return specs, _unique(errors), known


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
    found = sorted(meta + compiled, key=lambda e: (e.file, e.line, e.col))
    errors.extend(found)
    return None if found else spec


def _overlap(a: tuple, b: tuple) -> bool:
    if not a or not b:
        return False
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _unique(errors: list[SpecError]) -> list[SpecError]:
    """An error in a base is found again in each overlay that inherits it: reported once."""
    seen, out = set(), []
    for e in errors:
        key = (e.file, e.line, e.col, e.message)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out
