"""API pair declarations (mappings/<pair>/pair.yaml, kind ApiPair, checked by schemas/api-pair.json):
what the server needs of a pair besides its specs — the client endpoints and request schema, the
upstream provider and path, the keep-alive frame and the shape of the gateway's own errors (the
tokens a request reports are its response and stream specs' `usage:`). The spec catalog skips
these files as specs; `engine check` checks them."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import schemas
from .source import Source, load_text
from .spec_errors import SpecError

KIND = "ApiPair"
FILE = "pair.yaml"
SCHEMA = "api-pair"
DEFAULT_KEEPALIVE = ": keep-alive\n\n"


@dataclass(frozen=True)
class PairDecl:
    name: str
    client_api: str
    error_shape: str
    endpoints: tuple          # ((method, path), ...)
    request_schema: str
    provider: str
    upstream_path: str
    upstream_schema: str | None
    keepalive: bytes
    handler: str | None       # a built-in endpoint module, else None: the generic endpoint
    file: str


class PairError(ValueError):
    """A pair declaration that is not valid; `errors` holds one SpecError per problem."""

    def __init__(self, errors: list[SpecError]):
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors


def is_declaration(source: Source) -> bool:
    return isinstance(source.value, dict) and source.value.get("kind") == KIND


def parse(source: Source) -> PairDecl:
    """The declaration of a loaded pair.yaml, or PairError naming file:line:col and the field."""
    doc = source.value
    errors = []
    issue = schemas.first_error(SCHEMA, doc)
    if issue is not None:
        keys = tuple(int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", issue.path or ""))
        errors.append(_error(source, keys, issue.message))
        raise PairError(errors)
    ids = set(schemas.schema_ids())
    for keys in (("client", "request_schema"), ("upstream", "request_schema")):
        sid = doc[keys[0]].get(keys[1])
        if sid is not None and sid not in ids:
            errors.append(_error(source, keys, f"no schema {sid!r} under schemas/"))
    if errors:
        raise PairError(errors)
    client, upstream = doc["client"], doc["upstream"]
    return PairDecl(
        name=doc["metadata"]["name"], client_api=client["api"],
        error_shape=client.get("errors") or ("anthropic" if client["api"] == "anthropic" else "openai"),
        endpoints=tuple((e["method"], e["path"]) for e in client["endpoints"]),
        request_schema=client["request_schema"], provider=upstream["provider"], upstream_path=upstream["path"],
        upstream_schema=upstream.get("request_schema"),
        keepalive=((doc.get("stream") or {}).get("keepalive") or DEFAULT_KEEPALIVE).encode(),
        handler=doc.get("handler"), file=source.path)


def _error(source: Source, keys: tuple, message: str) -> SpecError:
    file, line, col, text = source.locate(keys)
    return SpecError(file, line, col, ".".join(map(str, keys)) or "<root>", message, text)


def load_dir(root) -> dict[str, PairDecl]:
    """Every pair declared under root (mappings/<pair>/pair.yaml), by name; PairError on any."""
    out, errors = {}, []
    root = Path(root)
    for path in sorted(root.glob(f"*/{FILE}")):
        source = load_text(path.read_text(encoding="utf-8"), str(path.relative_to(root.parent)))
        if not is_declaration(source):
            continue
        try:
            decl = parse(source)
        except PairError as e:
            errors.extend(e.errors)
            continue
        if decl.name != path.parent.name:
            errors.append(_error(source, ("metadata", "name"),
                                 f"a pair is declared in its own folder: {decl.name!r} belongs in mappings/{decl.name}/"))
            continue
        out[decl.name] = decl
    if errors:
        raise PairError(errors)
    return out
