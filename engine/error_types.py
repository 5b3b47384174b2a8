"""The error type each HTTP status gets in a client API's error shape (mappings/errors.yaml, kind
ErrorTypes, checked by schemas/error-types.json): one table, read by the gateway's own errors
(engine/server/api_errors.py) and by the error specs through the helper error_type(api, status).
Loaded once; the spec catalog skips the file as a spec and `engine check` checks it."""
from __future__ import annotations

import re
from pathlib import Path

from . import schemas
from .source import load_file

ERRORS_FILE = Path(__file__).resolve().parent.parent / "mappings" / "errors.yaml"
KIND = "ErrorTypes"
SCHEMA = "error-types"


class ErrorTypesError(ValueError):
    """A table that is not valid; the message names file:line:col and the field."""


class ErrorTypes:
    def __init__(self, doc: dict):
        # api -> ({status: type}, type of another status under 500, type of any other)
        self._apis = {api: ({int(k): v for k, v in t.items() if k.isdigit()}, t["4xx"], t["5xx"])
                      for api, t in doc["types"].items()}

    def type_of(self, api: str, status: int) -> str:
        table, client, server = self._apis[api]
        found = table.get(status)
        if found is not None:
            return found
        return server if status >= 500 else client

    def types(self, api: str) -> frozenset:
        """Every type the table gives `api`'s errors."""
        table, client, server = self._apis[api]
        return frozenset(table.values()) | {client, server}

    def apis(self) -> frozenset:
        return frozenset(self._apis)


def check(source) -> ErrorTypes:
    """The table of a loaded file, or ErrorTypesError naming file:line:col and the field."""
    doc = source.value
    issue = schemas.first_error(SCHEMA, doc)
    if issue is not None:
        keys = tuple(int(k) if k.isdigit() and not (issue.path or "").startswith("types") else k
                     for k in re.findall(r"[^.\[\]]+", issue.path or ""))
        line, col = source.mark(keys)
        raise ErrorTypesError(f"{source.path}:{line}:{col}: {issue.path or '<root>'}: {issue.message}")
    return ErrorTypes(doc)


_shipped: ErrorTypes | None = None


def shipped() -> ErrorTypes:
    """The shipped table (mappings/errors.yaml), read on first use and kept."""
    global _shipped
    if _shipped is None:
        _shipped = check(load_file(ERRORS_FILE))
    return _shipped
