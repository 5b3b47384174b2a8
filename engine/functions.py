"""The custom JMESPath functions and named transforms that mapping specs may call.

This is the whole list; a spec declares the ones it uses under `helpers:` and the compiler
refuses any other. Keep it short: translation behaviour belongs in YAML, these only say what
JMESPath cannot (JSON text, data: URLs, ids, clock, turn merging).

JMESPath functions (use inside expressions):
  from_json(s)         JSON text -> value; '' or null -> {} (tool arguments); invalid -> TranslationError
  to_json(v)           value -> compact JSON text (object keys in their order)
  data_url(s)          'data:image/png;base64,XXXX' -> {media_type, data}; anything else -> null
  clamp(x, lo, hi)     number limited to [lo, hi]; null stays null
  get(obj, key)        obj[key] for a computed key (numbers are turned into strings); null if absent
                       or if obj is not an object
  new_id(prefix)       prefix + 24 random alphanumerics (ids the gateway mints)
  now()                current Unix time in whole seconds
  is_string(v) / is_object(v) / is_array(v)   type tests that read better than type(v) == '...'
  json_or(s, fallback) JSON text -> value; fallback when s is null, '' or not valid JSON (a tool call's
                       arguments cut off by a length stop must not fail the whole response)
  minus(a, b)          a - b, null counting as 0 (JMESPath has no arithmetic: prompt minus cached tokens)
  error_type(api, status)  the error type of an HTTP status in a client API's error shape ('openai',
                       'anthropic'), from the one table mappings/errors.yaml

Named transforms (use as {pipe: NAME, input: ..., args: {...}}):
  merge_turns(messages)       consecutive same-role Anthropic turns merged into one; in user turns
                              tool_result blocks are moved first (Anthropic requires it); turns left
                              with no blocks are dropped
  merge_tool_messages(msgs)   Anthropic -> OpenAI: nothing to merge, but tool messages produced from a
                              user turn are placed before that turn's other content
"""
from __future__ import annotations

import bisect
import json
import os
import time

from jmespath import functions as jf

from . import error_types
from .jsontext import dumps, loads as _loads
from .program import MUTATIONS


class TranslationError(Exception):
    """Bad input discovered while translating; becomes a 400 naming `param`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class _Entropy:
    """os.urandom read 4 KiB at a time: one system call per ~170 ids instead of one per id
    (measurable under load: two ids a request). A forked worker starts with a fresh buffer, so
    no two processes hand out the same bytes."""

    def __init__(self, size: int = 4096):
        self.size = size
        self.buf = b""
        self.pos = 0
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reset)

    def reset(self):
        self.buf = b""
        self.pos = 0

    def __call__(self, n: int) -> bytes:
        pos = self.pos
        end = pos + n
        if end > len(self.buf):
            self.buf = os.urandom(max(self.size, n))
            pos, end = 0, n
        self.pos = end
        return self.buf[pos:end]


# Replaceable so replay tests and snapshots are deterministic.
clock = time.time
random_bytes = _Entropy()


# byte -> _ALNUM[byte % 62], for bytes.translate: the mapping done in C, not a Python loop
_ALNUM_OF_BYTE = bytes(ord(_ALNUM[b % 62]) for b in range(256))


def new_id(prefix: str = "", n: int = 24) -> str:
    return prefix + random_bytes(n).translate(_ALNUM_OF_BYTE).decode("ascii")


def _from_json(s):
    if s is None or s == "":
        return {}
    if not isinstance(s, str):
        return s
    try:
        return _loads(s)
    except ValueError as e:
        raise TranslationError(f"not valid JSON: {e.msg} at position {e.pos}: {s[:80]!r}") from None


def _data_url(s):
    if not isinstance(s, str) or not s.startswith("data:"):
        return None
    head, sep, data = s[5:].partition(",")
    if not sep:
        return None
    media_type, _, enc = head.partition(";")
    if enc != "base64":
        return None
    return {"media_type": media_type or "application/octet-stream", "data": data}


_to_json = dumps
_to_string = json.JSONEncoder(separators=(",", ":"), default=str).encode


class Functions(jf.Functions):
    @jf.signature({"types": ["string", "null"]})
    def _func_from_json(self, s):
        return _from_json(s)

    @jf.signature({"types": []})
    def _func_to_json(self, v):
        return _to_json(v)

    @jf.signature({"types": []})
    def _func_to_string(self, arg):
        # jmespath's own, with its encoder built once instead of per call (2 µs of a `join`)
        return arg if isinstance(arg, str) else _to_string(arg)

    @jf.signature({"types": ["string", "null"]})
    def _func_data_url(self, s):
        return _data_url(s)

    @jf.signature({"types": ["number", "null"]}, {"types": ["number"]}, {"types": ["number"]})
    def _func_clamp(self, x, lo, hi):
        if x is None:
            return None
        return lo if x < lo else hi if x > hi else x

    @jf.signature({"types": []}, {"types": ["string", "number", "null"]})
    def _func_get(self, obj, key):
        # client-supplied shapes (a tool's `properties`) may be anything: not an object -> null
        if type(obj) is not dict or key is None:
            return None
        if not isinstance(key, str):
            key = str(key)
        return obj.get(key)

    @jf.signature({"types": ["string"]})
    def _func_new_id(self, prefix):
        return new_id(prefix)

    @jf.signature()
    def _func_now(self):
        return int(clock())

    @jf.signature({"types": []}, {"types": []})
    def _func_json_or(self, s, fallback):
        if not isinstance(s, str):
            return fallback if s is None else s
        try:
            return _loads(s) if s.strip() else fallback
        except ValueError:
            return fallback

    @jf.signature({"types": ["number", "null"]}, {"types": ["number", "null"]})
    def _func_minus(self, a, b):
        return (a or 0) - (b or 0)

    @jf.signature({"types": ["string"]}, {"types": ["number"]})
    def _func_error_type(self, api, status):
        table = error_types.shipped()
        if api not in table.apis():
            raise TranslationError(f"error_type: no client API {api!r} in mappings/errors.yaml "
                                   f"(there: {', '.join(sorted(table.apis()))})")
        return table.type_of(api, int(status))

    @jf.signature({"types": []})
    def _func_is_string(self, v):
        return isinstance(v, str)

    @jf.signature({"types": []})
    def _func_is_object(self, v):
        return isinstance(v, dict)

    @jf.signature({"types": []})
    def _func_is_array(self, v):
        return isinstance(v, list)

    @jf.signature({"types": ["array", "null"]})
    def _func_duplicates(self, values):
        # the values (nulls aside) that occur more than once, in first-repeat order: ids a request
        # must not repeat, such as two tool results for one call
        seen, twice = set(), []
        for v in values or ():
            if v is None or not isinstance(v, (str, int, float)):
                continue
            if v in seen and v not in twice:
                twice.append(v)
            seen.add(v)
        return twice


CUSTOM_FUNCTIONS = frozenset(
    name[len("_func_"):] for name in vars(Functions)
    if name.startswith("_func_") and not hasattr(jf.Functions, name)  # to_string: a faster builtin
)
# Functions whose value changes between calls: never folded into constants.
VOLATILE = frozenset({"new_id", "now"})


# The last lists merge_turns merged: [(the list, MUTATIONS then, what it made, the index in the
# list at which each turn made began)], most recent last. A conversation a turn later begins with
# the same items: the turns made of them, but the one its last item went into, are taken whole.
_MERGED: list = []
_MERGED_KEEP = 8  # conversations served in turn
_MERGED_RUN = 8   # items from which a list is compared with them


def merge_turns(messages):
    """Consecutive turns of one role as one (their content blocks in order, a string as a text
    block), empty turns left out, a user turn's tool results first. A turn that needs none of
    that is the very object it was (what an `each` kept of an earlier turn stays kept, and is
    written from its kept text, program.SHARED); one to change is copied first."""
    if not messages:
        return messages
    gen = MUTATIONS[0]
    out, starts, first = [], [], 0
    if len(messages) >= _MERGED_RUN:
        for before, was, made, began in reversed(_MERGED):
            n = len(before)
            if was == gen and n <= len(messages) and messages[0] is before[0] and messages[:n] == before:
                j = bisect.bisect_right(began, n - 1) - 1  # the turn the last of them went into
                if j > 0:
                    out, starts, first = made[:j], began[:j], began[j]
                break
    done = len(out)
    own = set()  # ids of the turns in `out` made here, which may be changed in place
    for i in range(first, len(messages)):
        m = messages[i]
        content = m.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}] if content else []
        elif type(content) is not list:
            content = list(content or ())
        if not content:
            continue  # an empty turn must not keep its neighbours apart
        if len(out) > done and out[-1]["role"] == m["role"]:
            last = out[-1]
            if id(last) not in own:
                last = out[-1] = {**last, "content": list(last["content"])}
                own.add(id(last))
            last["content"].extend(content)
            continue
        starts.append(i)
        if content is m.get("content"):
            out.append(m)
        else:
            out.append({**m, "content": content})
            own.add(id(out[-1]))
    for i in range(done, len(out)):
        m = out[i]
        if m["role"] != "user":
            continue
        other = False
        for b in m["content"]:
            if b.get("type") != "tool_result":
                other = True
            elif other:  # a tool result after another block: the results go first
                blocks = m["content"]
                out[i] = {**m, "content": [b for b in blocks if b.get("type") == "tool_result"]
                          + [b for b in blocks if b.get("type") != "tool_result"]}
                break
    if len(messages) >= _MERGED_RUN:
        if len(_MERGED) >= _MERGED_KEEP:
            del _MERGED[0]
        _MERGED.append((list(messages), gen, out, starts))
    return out


def merge_tool_messages(messages):
    """Anthropic user turns become [tool messages..., user message]; drops empty user messages."""
    out = []
    for m in messages or ():
        if m is None:
            continue
        if isinstance(m, list):
            out.extend(x for x in m if x is not None)
        else:
            out.append(m)
    return [m for m in out if not (m.get("role") == "user" and m.get("content") in (None, [], ""))]


TRANSFORMS = {
    "merge_turns": merge_turns,
    "merge_tool_messages": merge_tool_messages,
}
