"""The wire-format JSON Schemas under schemas/: one registry, validators built once.

Every ``schemas/**/*.json`` file is a JSON Schema (draft 2020-12) whose ``$id`` is its path
relative to schemas/ without ``.json`` (``openai/chat.request``), so schemas ``$ref`` each other
by relative id (``"chat.response#/$defs/usage"`` from inside ``openai/chat.chunk``).

    >>> first_error("openai/chat.request", {"model": "gpt-4o"})
    Issue(path='messages', message="'messages' is a required property")

Issue paths use the OpenAI ``param`` style: ``messages[2].role``, ``tools[0].function.name``,
``""`` for the root. For a missing required property the path names the missing property
(``messages[2].tool_call_id``) and the message names the object that lacks it
(``"messages[2]: 'tool_call_id' is a required property"``).

Speed. Validators are built once per schema id. A stock jsonschema validator re-creates a child
validator (and its resolver) on every step into a subschema and re-resolves every ``$ref``, which
costs ~2 ms for a Chat request of 11 messages and 5 tools. ``validator()`` therefore returns a
2020-12 validator class extended here with three caches that do not change the result:

* the child validator for each subschema is built once (valid because no schema here uses
  ``$dynamicRef``, so a subschema's base URI and resolver never depend on how it was reached);
* each ``$ref`` is resolved once per referring subschema;
* discriminator conditions ``"if": {"required": [...], "properties": {k: {"const"|"enum": str}}}``
  (the way every schema here dispatches on ``role`` / ``type``) are evaluated directly.

That brings the request above to ~0.3 ms. If the jsonschema internals it relies on are missing
(another jsonschema version), or a schema uses ``$dynamicRef``, plain ``Draft202012Validator`` is
used instead. tests/test_schemas.py checks both give the same errors.

Most bodies are valid, so ``first_error`` and ``errors`` first ask ``is_valid(schema_id)``:
a jsonschema-rs validator (Draft 2020-12, the same files in one ``jsonschema_rs.Registry``, each
under ``BASE_URI`` + its id so relative ``$ref``s resolve as they do here). jsonschema runs only
to explain a body jsonschema-rs rejected, so the messages and paths clients see are jsonschema's
best match. tests/test_schema_rs.py checks both agree on every recorded, hand-written, generated
and mutated instance. Measured side by side in one process (timeit, best of 7 x 200 calls) on
the recorded client requests of tests/fixtures/clients, against the Python predicates generated
from the schemas: Codex 0.169 Responses (12 KB) 10.8 µs against 20.4, Codex 0.94 chat (6 KB)
5.0 against 10.4, Claude Code Messages (19 KB) 8.7 against 33.5.
"""

from __future__ import annotations

import functools
import heapq
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urljoin

import jsonschema_rs

# jsonschema and referencing (the Python validator, which words the errors) are imported where
# they are used: a body jsonschema-rs accepts never needs them, and a server that sees no
# rejected body does not keep them in memory (~3 MB with attrs and rpds)
if TYPE_CHECKING:
    import jsonschema.protocols
    from jsonschema.exceptions import ValidationError
    from referencing import Registry

__all__ = [
    "Issue",
    "SCHEMA_DIR",
    "errors",
    "first_error",
    "is_valid",
    "registry",
    "schema",
    "schema_ids",
    "validator",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# the base jsonschema-rs resolves the relative ids against; never fetched (no retriever is given)
BASE_URI = "file:///engine/schemas/"


def _schema_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "schemas"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "engine" / "schemas"


SCHEMA_DIR = _schema_dir()
# folders of schemas an API pair brings (mappings/<pair>/schemas/), registered by the catalog
_EXTRA_DIRS: list[Path] = []


def add_dir(folder) -> None:
    """Registers every *.json under `folder` beside the shipped schemas (ids relative to it).
    Called when the specs load, before any schema is used."""
    folder = Path(folder).resolve()
    if folder in _EXTRA_DIRS or not folder.is_dir():
        return
    _EXTRA_DIRS.append(folder)
    for cached in (_load, _python, _rs_registry, is_valid, within_depth, validator, items_alone):
        cached.cache_clear()


@dataclass(frozen=True)
class Issue:
    """One validation error: where (OpenAI ``param`` style) and what, in words."""

    path: str
    message: str

    def __str__(self) -> str:
        return self.message


# --- loading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    documents: dict[str, Any]  # id -> the file as parsed (what schema() returns)

    @property
    def registry(self) -> Registry:
        """Over copies of the documents without a 2020-12 "$schema" (see _python)."""
        return _python()[0]

    @property
    def cls(self) -> type:
        """The validator class."""
        return _python()[1]


@functools.cache
def _load() -> _Loaded:
    documents: dict[str, Any] = {}
    files = [(SCHEMA_DIR, f) for f in sorted(SCHEMA_DIR.rglob("*.json"))]
    files += [(d, f) for d in _EXTRA_DIRS for f in sorted(d.rglob("*.json"))]
    for folder, file in files:
        doc = json.loads(file.read_text(encoding="utf-8"))
        default_id = file.relative_to(folder).with_suffix("").as_posix()
        schema_id = doc.get("$id", default_id) if isinstance(doc, dict) else default_id
        if schema_id in documents:
            raise ValueError(f"{file}: duplicate schema $id {schema_id!r}")
        documents[schema_id] = doc
    return _Loaded(documents=documents)


@functools.cache
def _python() -> tuple:
    """(referencing.Registry, validator class) of the Python validator, built on first use."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    documents = _load().documents
    # A validator stepping into a document whose root names "$schema" switches to the class
    # registered for that dialect, which would drop the cached class below for that subtree.
    # Every file here is 2020-12 and the registry defaults to it, so register copies without it.
    registered = {
        sid: {k: v for k, v in doc.items() if not (k == "$schema" and v == DIALECT)}
        if isinstance(doc, dict) else doc
        for sid, doc in documents.items()
    }
    reg = Registry().with_resources(
        (sid, Resource.from_contents(doc, default_specification=DRAFT202012))
        for sid, doc in registered.items()
    ).crawl()

    uses_dynamic_ref = any("$dynamicRef" in json.dumps(doc) for doc in documents.values())
    cls = jsonschema.Draft202012Validator if uses_dynamic_ref else _cached_class()
    return reg, cls


def registry() -> Registry:
    """The registry holding every schema file, keyed by ``$id``."""
    return _load().registry


def schema_ids() -> list[str]:
    """Every schema id, sorted."""
    return sorted(_load().documents)


def schema(schema_id: str) -> Any:
    """The schema document for ``schema_id`` as parsed from its file (KeyError when unknown)."""
    return _load().documents[schema_id]


# what a schema object may hold and still judge an array's items one by one
_ITEMWISE_KEYS = frozenset({"type", "items", "minItems", "title", "description", "$comment"})
_TOP_KEYS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "type", "properties",
                       "required", "additionalProperties"})


@functools.lru_cache(maxsize=None)
def items_alone(schema_id: str, member: str) -> bool:
    """Whether `schema_id` judges each item of its top-level array `member` alone: the same
    schema at every index, no count above one item required, nothing else in the document
    constraining that member (no maxItems, prefixItems, contains, uniqueItems, no top-level
    allOf/if). A body can then be checked with some of those items left out (history.py)."""
    loaded = _load()
    doc = loaded.documents.get(schema_id)
    if not isinstance(doc, dict) or not set(doc) <= _TOP_KEYS:
        return False
    node = (doc.get("properties") or {}).get(member)
    here = schema_id
    for _ in range(4):  # a $ref to the definition, in this document or another
        if not isinstance(node, dict) or "$ref" not in node:
            break
        if set(node) - {"$ref", "description", "title", "$comment"}:
            return False
        target, _, pointer = urljoin(BASE_URI + here, node["$ref"]).partition("#")
        here = target[len(BASE_URI):] if target.startswith(BASE_URI) else target
        node = loaded.documents.get(here)
        for part in pointer.strip("/").split("/") if pointer.strip("/") else ():
            node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or not set(node) <= _ITEMWISE_KEYS:
        return False
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return "array" in kinds and isinstance(node.get("items"), dict) and node.get("minItems", 0) <= 1


@functools.cache
def _rs_registry() -> jsonschema_rs.Registry:
    return jsonschema_rs.Registry([(BASE_URI + sid, doc) for sid, doc in _load().documents.items()])


def rs_validator(schema: Any, registry: jsonschema_rs.Registry | None = None, base_uri: str | None = None):
    """A jsonschema-rs Draft 2020-12 validator, formats not asserted (as jsonschema's default)."""
    return jsonschema_rs.Draft202012Validator(schema, registry=registry, base_uri=base_uri,
                                              validate_formats=False)


@functools.cache
def is_valid(schema_id: str) -> Callable[[Any], bool]:
    """jsonschema-rs's is_valid for ``schema_id``: True exactly when jsonschema finds no error,
    in a fraction of its time."""
    loaded = _load()
    if schema_id not in loaded.documents:
        validator(schema_id)  # raises the KeyError naming the known ids
    fast = rs_validator(loaded.documents[schema_id], _rs_registry(), BASE_URI + schema_id).is_valid

    def check(instance: Any) -> bool:
        try:
            return fast(instance)
        except UnicodeEncodeError:  # a lone surrogate, which jsonschema-rs cannot take as text
            return validator(schema_id).is_valid(instance)
    return check


@functools.cache
def within_depth(limit: int) -> Callable[[Any], bool]:
    """True when no object or array of a value is nested deeper than `limit` (the value itself is
    level 1): a chain of `limit` schemas walked by jsonschema-rs, ~11 µs for the 19 KB Claude Code
    request where a Python walk of the tree takes ~200 µs."""
    defs: dict[str, Any] = {f"d{k}": {"additionalProperties": {"$ref": f"#/$defs/d{k + 1}"},
                                      "items": {"$ref": f"#/$defs/d{k + 1}"}} for k in range(1, limit + 1)}
    defs[f"d{limit + 1}"] = {"not": {"type": ["object", "array"]}}
    return rs_validator({"$defs": defs, "$ref": "#/$defs/d1"}).is_valid


@functools.cache
def validator(schema_id: str) -> jsonschema.protocols.Validator:
    """A draft 2020-12 validator for ``schema_id`` over the shared registry, built once."""
    loaded = _load()
    if schema_id not in loaded.documents:
        known = ", ".join(sorted(loaded.documents))
        raise KeyError(f"unknown schema id {schema_id!r}; known: {known}")
    root = loaded.registry.contents(schema_id)
    return loaded.cls(root, registry=loaded.registry)


# --- the cached validator class -------------------------------------------------------------


def _discriminator(if_schema: Any) -> Callable[[Any], bool] | None:
    """A plain-Python test equivalent to ``if_schema`` when it only checks required keys and
    string/null const/enum values; None for any other shape (evaluated by jsonschema)."""
    if not isinstance(if_schema, dict) or not if_schema or not set(if_schema) <= {"required", "properties"}:
        return None
    required = if_schema.get("required", [])
    properties = if_schema.get("properties", {})
    if not isinstance(required, list) or not isinstance(properties, dict):
        return None
    checks = []
    for key, sub in properties.items():
        if not isinstance(sub, dict) or len(sub) != 1:
            return None
        ((keyword, value),) = sub.items()
        allowed = [value] if keyword == "const" else value if keyword == "enum" else None
        if not isinstance(allowed, list) or not all(a is None or isinstance(a, str) for a in allowed):
            return None
        checks.append((key, frozenset(a for a in allowed if a is not None), None in allowed))

    def test(instance: Any) -> bool:
        if not isinstance(instance, dict):
            return True  # required/properties ignore non-objects
        for key in required:
            if key not in instance:
                return False
        for key, strings, null_ok in checks:
            if key in instance:
                value = instance[key]
                if value is None:
                    if not null_ok:
                        return False
                elif not (isinstance(value, str) and value in strings):
                    return False
        return True

    return test


def _cached_class() -> type:
    """Draft202012Validator plus the caches described in the module docstring, or the plain class
    when this jsonschema lacks the internals they use."""
    import jsonschema
    import jsonschema.validators
    from jsonschema.exceptions import ValidationError
    from referencing.jsonschema import DRAFT202012

    base = jsonschema.Draft202012Validator
    probe = base({})
    if not (hasattr(probe, "_resolver") and hasattr(probe, "_validators") and hasattr(probe, "evolve")):
        return base

    children: dict[int, tuple[Any, Any]] = {}  # id(subschema) -> (subschema, child validator)
    refs: dict[tuple[int, str], tuple[Any, Any, Any]] = {}  # (id(subschema), ref) -> resolved
    tests: dict[int, tuple[Any, Callable[[Any], bool] | None]] = {}  # id(if schema) -> test

    def descend(self, instance, schema, path=None, schema_path=None, resolver=None):
        # jsonschema's Validator.descend, with the child validator built once per subschema
        if schema is True:
            return
        if schema is False:
            yield ValidationError(
                f"False schema does not allow {instance!r}",
                validator=None, validator_value=None, instance=instance, schema=schema,
            )
            return
        hit = children.get(id(schema))
        if hit is None or hit[0] is not schema:
            if resolver is None:
                resolver = self._resolver.in_subresource(DRAFT202012.create_resource(schema))
            hit = children[id(schema)] = (schema, self.evolve(schema=schema, _resolver=resolver))
        child = hit[1]
        for check, keyword, value in child._validators:
            for error in check(child, value, instance, schema) or ():
                error._set(
                    validator=keyword, validator_value=value, instance=instance,
                    schema=schema, type_checker=child.TYPE_CHECKER,
                )
                if keyword not in {"if", "$ref"}:
                    error.schema_path.appendleft(keyword)
                if path is not None:
                    error.path.appendleft(path)
                if schema_path is not None:
                    error.schema_path.appendleft(schema_path)
                yield error

    def ref(validator, ref, instance, schema):
        key = (id(schema), ref)
        hit = refs.get(key)
        if hit is None or hit[0] is not schema:
            try:
                resolved = validator._resolver.lookup(ref)
            except Exception:  # let jsonschema raise its own error
                yield from base.VALIDATORS["$ref"](validator, ref, instance, schema)
                return
            hit = refs[key] = (schema, resolved.contents, resolved.resolver)
        yield from validator.descend(instance, hit[1], resolver=hit[2])

    def if_(validator, if_schema, instance, schema):
        hit = tests.get(id(if_schema))
        if hit is None or hit[0] is not if_schema:
            hit = tests[id(if_schema)] = (if_schema, _discriminator(if_schema))
        test = hit[1]
        matched = test(instance) if test is not None else validator.evolve(schema=if_schema).is_valid(instance)
        if matched:
            if "then" in schema:
                yield from validator.descend(instance, schema["then"], schema_path="then")
        elif "else" in schema:
            yield from validator.descend(instance, schema["else"], schema_path="else")

    cls = jsonschema.validators.extend(base, {"$ref": ref, "if": if_})
    cls.descend = descend
    cls.__name__ = cls.__qualname__ = "CachedDraft202012Validator"
    return cls


# --- errors ---------------------------------------------------------------------------------


def _path(parts: Iterable[Any]) -> str:
    out = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            out.append(f".{part}" if out else str(part))
    return "".join(out)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: ValidationError) -> str:
    """jsonschema's message, with the offending instance abbreviated so a 100 kB body stays short."""
    keyword, instance, value = error.validator, error.instance, error.validator_value
    if keyword == "type":
        types = value if isinstance(value, list) else [value]
        return f"{_short(instance)} is not of type {', '.join(repr(t) for t in types)}"
    if keyword == "enum":
        return f"{_short(instance)} is not one of {value!r}"
    if keyword in ("anyOf", "oneOf"):
        return f"{_short(instance)} is not valid under any of the given schemas"
    message = error.message
    return message if len(message) <= 300 else message[:297] + "..."


def _missing_property(error: ValidationError) -> str | None:
    """The property a ``required`` error is about (jsonschema raises one error per missing one)."""
    if error.validator != "required" or not isinstance(error.instance, dict):
        return None
    for prop in error.validator_value:
        if prop not in error.instance and error.message.startswith(repr(prop)):
            return prop
    return None


def _descend(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf, the most specific sub-error: the same descent best_match() does."""
    from jsonschema.exceptions import relevance

    while error.context:
        smallest = heapq.nsmallest(2, error.context, key=relevance)
        if len(smallest) == 2 and relevance(smallest[0]) == relevance(smallest[1]):
            return error
        error = smallest[0]
    return error


def _issue(error: ValidationError) -> Issue:
    where = list(error.absolute_path)
    location = _path(where)
    message = _describe(error)
    if location:
        message = f"{location}: {message}"
    missing = _missing_property(error)
    return Issue(path=_path([*where, missing]) if missing is not None else location, message=message)


def errors(schema_id: str, instance: Any) -> list[Issue]:
    """Every error, most relevant first (``errors(...)[0] == first_error(...)``); [] when valid."""
    if is_valid(schema_id)(instance):
        return []
    from jsonschema.exceptions import relevance

    v = validator(schema_id)
    # best_match() takes the max by relevance; a reverse sort is stable, so equal keys keep the
    # order max() would see them in and the first issue is best_match's.
    ranked = sorted(v.iter_errors(instance), key=relevance, reverse=True)
    out: list[Issue] = []
    seen: set[Issue] = set()
    for error in ranked:
        issue = _issue(_descend(error))
        if issue not in seen:
            seen.add(issue)
            out.append(issue)
    return out


def first_error(schema_id: str, instance: Any) -> Issue | None:
    """The most relevant error (jsonschema's best_match), or None when ``instance`` is valid."""
    if is_valid(schema_id)(instance):
        return None
    from jsonschema.exceptions import best_match

    best = best_match(validator(schema_id).iter_errors(instance))
    return _issue(best) if best is not None else None
