"""Upstream stream events checked against the upstream's schema before a spec reads them.

A whole-schema check costs a few µs an event (jsonschema-rs, as engine/schemas.py), about
a quarter of what translating the event costs. Most events of a stream are of one or two
kinds, content deltas, whose fields the specs copy into the client's events: for those the
types the schema declares for the fields read are checked inline (~0.3 µs); every other event
(starts, stops, usage, finish) gets the whole-schema check. Only types and shape are checked:
an unknown delta kind or stop reason passes, as the APIs add them over time.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jsonschema_rs

from .. import schemas

# content_block_delta: the delta kind -> the one field it carries (anthropic/stream-event, block_delta)
_ANTHROPIC_DELTA_FIELD = {"text_delta": "text", "input_json_delta": "partial_json",
                          "thinking_delta": "thinking", "signature_delta": "signature"}


def _anthropic_delta(event: dict):
    """True/False for a text, JSON, thinking or signature delta; None for any other event."""
    if event.get("type") != "content_block_delta":
        return None
    delta = event.get("delta")
    if type(delta) is not dict or type(event.get("index")) is not int:
        return False
    kind = delta.get("type")
    if type(kind) is not str:
        return False
    field = _ANTHROPIC_DELTA_FIELD.get(kind)
    if field is None:
        return None if kind == "citations_delta" else True  # an unknown kind is for the spec to skip
    return type(delta.get(field)) is str


def _chat_delta(event: dict):
    """True/False for a chunk of one choice whose delta carries text or tool-call fragments;
    None for the others (the first chunk with its role, the finish, usage, errors)."""
    choices = event.get("choices")
    if type(choices) is not list:
        return None
    if len(choices) != 1 or "usage" in event and event["usage"] is not None:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") is not None:
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or "role" in delta:
        return None
    if type(event.get("id")) is not str or type(event.get("model")) is not str or type(choice.get("index")) is not int:
        return False
    for key, value in delta.items():
        if key == "content" or key == "refusal" or key == "reasoning_content" or key == "reasoning":
            if value is not None and type(value) is not str:
                return False
        elif key == "tool_calls":
            if value is None:
                continue
            if type(value) is not list:
                return False
            for call in value:
                if type(call) is not dict or type(call.get("index")) is not int:
                    return False
                fn = call.get("function")
                if fn is not None and (type(fn) is not dict or not all(
                        type(fn.get(k)) is str for k in ("name", "arguments") if k in fn)):
                    return False
        else:
            return None  # a field this check does not know: the whole schema decides
    return True


_FAST: dict[str, Callable[[dict], Any]] = {
    "anthropic/stream-event": _anthropic_delta,
    "openai/chat.chunk": _chat_delta,
}


@functools.cache
def event_guard(schema_id: str | None) -> Callable[[dict], bool] | None:
    """event -> bool for a stream spec's source schema; None when there is no schema."""
    if not schema_id or schema_id not in schemas.schema_ids():
        return None
    full = is_valid(schema_id, loose=True)
    fast = _FAST.get(schema_id)
    if fast is None:
        return full

    def guard(event: dict) -> bool:
        ok = fast(event)
        return full(event) if ok is None else ok
    return guard


# ---------------------------------------------------------------- the schemas with open enums

def _open(node, loose: bool, in_if: bool = False):
    """A schema without its `enum` lists (outside `if` conditions, where they dispatch): the
    values an API may add to (stop reasons, block and delta kinds) pass; types and shape stay.
    `loose` drops `required` too (stream events: OpenAI-compatible servers leave out fields
    such as usage.total_tokens or error.param that no spec needs)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if not in_if and (k == "enum" or (loose and k == "required")):
                continue
            if k == "$schema" and v == schemas.DIALECT:
                continue
            out[k] = _open(v, loose, in_if or k == "if")
        return out
    if isinstance(node, list):
        return [_open(v, loose, in_if) for v in node]
    return node


@functools.cache
def _open_registry(loose: bool):
    """The Python validator's registry, built when an event is to be explained (never otherwise)."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    docs = schemas._load().documents
    return Registry().with_resources(
        (sid, Resource.from_contents(_open(doc, loose), default_specification=DRAFT202012))
        for sid, doc in docs.items()
    ).crawl()


@functools.cache
def _validator(schema_id: str, loose: bool = False):
    reg = _open_registry(loose)
    return schemas._load().cls(reg.contents(schema_id), registry=reg)


@functools.cache
def _open_rs_registry(loose: bool):
    return jsonschema_rs.Registry([(schemas.BASE_URI + sid, _open(doc, loose))
                                   for sid, doc in schemas._load().documents.items()])


@functools.cache
def is_valid(schema_id: str, loose: bool = False) -> Callable[[Any], bool]:
    """jsonschema-rs's predicate of `schema_id` with open enums (as engine/schemas.is_valid)."""
    fast = schemas.rs_validator(_open(schemas.schema(schema_id), loose), _open_rs_registry(loose),
                                schemas.BASE_URI + schema_id).is_valid

    def check(instance: Any) -> bool:
        try:
            return fast(instance)
        except UnicodeEncodeError:  # a lone surrogate, which jsonschema-rs cannot take as text
            return _validator(schema_id, loose).is_valid(instance)
    return check


def first_error(schema_id: str, instance) -> str:
    """Where and why `instance` is not of the schema's shape, in words."""
    from jsonschema.exceptions import best_match

    best = best_match(_validator(schema_id).iter_errors(instance))
    if best is None:
        return "wrong shape"
    issue = schemas._issue(best)
    return f"{issue.path}: {issue.message}" if issue.path else issue.message
