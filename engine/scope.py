"""The names an expression may start with, per spec kind: the one table `engine check` reads.

A spec's own bindings come on top: `vars` (request and response specs), `state` (stream specs),
the `as`/`index` names of `each`, and the `with` names a `use` passes to a block of `defs`.
A name added to what the server puts in a spec's scope is added here, in one line."""
from __future__ import annotations

# what engine/server (and engine translate/replay) put in the scope of each kind of spec
_COMMON = ("req", "cfg", "model", "keepalive_seconds", "profile",
           # the Responses pair: the stored previous response and the ids minted for this one
           "prev", "id_base", "response_id")

SCOPE_NAMES: dict[str, frozenset] = {
    "RequestMapping": frozenset(("src",) + _COMMON),
    "ResponseMapping": frozenset(("src",) + _COMMON),
    "StreamMapping": frozenset(("event", "state") + _COMMON),
}

# the names a spec's `usage:` may read where they differ from the rest of the spec: a stream
# reports its tokens once it has ended, over its final state alone
USAGE_NAMES: dict[str, frozenset] = {
    "StreamMapping": frozenset(("state",)),
}

# the spec's own sections that bind a scope name of the same name, per kind
SECTION_NAMES: dict[str, tuple] = {
    "RequestMapping": ("vars",),
    "ResponseMapping": ("vars",),
    "StreamMapping": (),
}


# scope names whose shape a schema describes, for the path checks of engine/shapes.py;
# "<source>" is the schema the spec names in `source:`
SCHEMAS: dict[str, dict] = {
    "RequestMapping": {"src": "<source>", "profile": "model-profiles#/properties/defaults"},
    "ResponseMapping": {"src": "<source>", "profile": "model-profiles#/properties/defaults"},
    "StreamMapping": {"event": "<source>", "profile": "model-profiles#/properties/defaults"},
}


def schemas_for(kind: str, spec: dict) -> dict:
    """{scope name: schema id} for the names of this spec whose schema is known."""
    source = spec.get("source")
    out = {}
    for name, sid in SCHEMAS.get(kind, {}).items():
        if sid == "<source>":
            if not isinstance(source, str):
                continue
            sid = source
        out[name] = sid
    return out


def names_for(kind: str, spec: dict) -> frozenset:
    own = {s for s in SECTION_NAMES.get(kind, ()) if spec.get(s)}
    return SCOPE_NAMES.get(kind, frozenset()) | own
