"""The runtime validators (jsonschema-rs, engine/schemas.is_valid) agree with jsonschema exactly.

A validator that said "valid" where jsonschema finds an error would let a bad body reach the
upstream; one that said "invalid" on a valid body would cost jsonschema's time and then answer
nothing (first_error would find no error to report). Both are checked on every recorded and
hand-written instance, on generated valid bodies of every schema, on mutations of them, and on
each keyword's edge cases (integers beyond 64 bits included)."""
from __future__ import annotations

import jsonschema
import jsonschema_rs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from engine import schemas
from tests.support.schema_gen import from_schema, iter_nodes, tree_mutation
from tests.test_schemas import _all_instances, _plain

REQUESTS = ["openai/chat.request", "openai/responses.request", "anthropic/messages.request",
            "anthropic/count_tokens.request", "openai/responses.submit_tool_outputs"]


def _depth(value, limit=90) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def test_every_recorded_and_hand_written_instance_agrees():
    checked = valid = 0
    for schema_id, instance in _all_instances():
        expected = _plain(schema_id).is_valid(instance)
        assert schemas.is_valid(schema_id)(instance) is expected, (schema_id, instance)
        checked += 1
        valid += expected
    assert checked > 700 and 0 < valid < checked


@pytest.mark.parametrize("schema_id", schemas.schema_ids())
def test_generated_instances_agree(schema_id):
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        value = data.draw(from_schema(schema_id, max_depth=4), label="drawn")
        # the generator aims at valid bodies but does not follow anyOf/oneOf: compare, not assume
        assert schemas.is_valid(schema_id)(value) is _plain(schema_id).is_valid(value), value
        _, new = data.draw(tree_mutation(value), label="mutated")
        assume(_depth(new) <= 90 and not any(type(n).__name__ == "RawJSON" for n in iter_nodes(new)))
        assert schemas.is_valid(schema_id)(new) is _plain(schema_id).is_valid(new), new
    check()


@pytest.mark.parametrize("schema_id", REQUESTS)
def test_first_error_reports_through_jsonschema(schema_id):
    issue = schemas.first_error(schema_id, [])
    assert issue is not None and issue.message


def _compiled(schema, extra: dict | None = None):
    """(jsonschema-rs is_valid, jsonschema is_valid) for `schema`, other documents by id beside it."""
    resources = [("main", Resource.from_contents(schema, default_specification=DRAFT202012))]
    resources += [(k, Resource.from_contents(v, default_specification=DRAFT202012))
                  for k, v in (extra or {}).items()]
    registry = Registry().with_resources(resources).crawl()
    v = jsonschema.Draft202012Validator(registry.contents("main"), registry=registry)
    base = "file:///test/"
    rs_registry = jsonschema_rs.Registry([(base + k, d) for k, d in (extra or {}).items()]) if extra else None
    return schemas.rs_validator(schema, rs_registry, base + "main").is_valid, v.is_valid


CASES = [
    ({"const": 1}, [1, 1.0, True, "1", None]),
    ({"const": False}, [False, 0, None, 0.0]),
    ({"const": {"a": [1, True]}}, [{"a": [1, True]}, {"a": [True, 1]}, {"a": [1.0, True]}, {"a": [1, 1]}]),
    ({"enum": ["a", 1, None, [True]]}, ["a", 1, 1.0, True, None, [True], [1], "b", False]),
    ({"enum": ["x", "y"]}, ["x", "z", 1, None]),
    ({"type": "integer"}, [1, 1.0, 1.5, True, "1", 10**40]),
    ({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, [0, 0.5, 1, -1, True, "0.5"]),
    ({"type": ["string", "null"], "minLength": 2, "maxLength": 3}, ["ab", "a", "abcd", None, 5, "💥💥"]),
    ({"pattern": "^a+$"}, ["aa", "ab", 5]),
    ({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2, "uniqueItems": True},
     [["a"], [], ["a", "b", "c"], ["a", "a"], [1], "x"]),
    ({"uniqueItems": True}, [[1, True], [1, 1.0], [{"a": 1}, {"a": 1}], [[1], [True]]]),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
      "additionalProperties": False}, [{"a": "x"}, {}, {"a": 1}, {"a": "x", "b": 1}, [], "a"]),
    ({"patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
     [{"x-a": 1}, {"x-a": "1"}, {"b": "s"}, {"b": 1}]),
    ({"propertyNames": {"maxLength": 2}, "minProperties": 1, "maxProperties": 2},
     [{"ab": 1}, {"abc": 1}, {}, {"a": 1, "b": 2, "c": 3}]),
    ({"if": {"properties": {"type": {"const": "a"}}}, "then": {"required": ["x"]}, "else": {"required": ["y"]}},
     [{"type": "a", "x": 1}, {"type": "a"}, {"type": "b", "y": 1}, {"type": "b"}, {}, 3]),
    ({"oneOf": [{"type": "integer"}, {"minimum": 2}]}, [1, 3, 2.5, "x"]),
    ({"anyOf": [{"type": "integer"}, {"type": "null"}], "not": {"const": 0}}, [1, None, 0, "x"]),
    ({"allOf": [{"minimum": 1}, {"maximum": 3}]}, [0, 2, 4]),
    # allOf entries dispatching on one key become a table lookup: same answers, objects or not
    ({"allOf": [
        {"if": {"required": ["role"], "properties": {"role": {"const": "a"}}}, "then": {"required": ["x"]}},
        {"if": {"required": ["role"], "properties": {"role": {"const": "b"}}}, "then": {"required": ["y"]}},
        {"if": {"required": ["role"], "properties": {"role": {"const": "b"}}}, "then": {"maxProperties": 2}},
        {"if": {"required": ["kind"], "properties": {"kind": {"const": "k"}}}, "then": {"required": ["z"]}},
        {"minProperties": 1}]},
     [{"role": "a", "x": 1}, {"role": "a"}, {"role": "b", "y": 1}, {"role": "b", "y": 1, "q": 2}, {"role": "b"},
      {"role": "c"}, {"role": 5}, {"role": None}, {"kind": "k"}, {"kind": "k", "z": 1}, {}, "a", 3, None]),
    ({"allOf": [{"if": {"required": ["t"], "properties": {"t": {"const": "a"}}}, "then": {"type": "object"}},
                {"if": {"required": ["t"], "properties": {"t": {"const": "b"}}}, "then": {"type": "string"}}]},
     [{"t": "a"}, {"t": "b"}, "s", 5, [], {"t": "c"}]),
    (True, [1, None]),
    (False, [1, None]),
    # keywords not compiled here go to jsonschema, subschema by subschema
    ({"type": "object", "properties": {"l": {"contains": {"const": 1}, "minContains": 2}}},
     [{"l": [1, 1]}, {"l": [1]}, {"l": []}, {}]),
    ({"prefixItems": [{"type": "string"}], "items": False}, [["a"], ["a", 1], [1], []]),
    ({"dependentRequired": {"a": ["b"]}}, [{"a": 1, "b": 2}, {"a": 1}, {}]),
    # more names than an if/elif chain takes: a table of the subschemas' functions
    ({"type": "object", "properties": {f"p{i}": {"type": "integer", "maximum": i} for i in range(10)},
      "additionalProperties": {"type": "string"}},
     [{"p3": 3}, {"p3": 4}, {"p9": 9, "z": "s"}, {"z": 1}, {"p0": True}, {}]),
    ({"allOf": [{"if": {"required": ["t"], "properties": {"t": {"const": f"v{i}"}}},
                 "then": {"required": [f"f{i}"]}} for i in range(10)]},
     [{"t": "v7", "f7": 1}, {"t": "v7", "f6": 1}, {"t": "v0", "f0": 0}, {"t": "v0"}, {"t": "w"}, "s", [1]]),
]


@pytest.mark.parametrize("schema,instances", CASES, ids=[str(c[0])[:60] for c in CASES])
def test_keyword_semantics_match_jsonschema(schema, instances):
    compiled, plain = _compiled(schema)
    outcomes = {True: 0, False: 0}
    for instance in instances:
        assert compiled(instance) is plain(instance), instance
        outcomes[plain(instance)] += 1
    if schema not in (True, False):
        assert outcomes[True] and outcomes[False], "each case holds a valid and an invalid instance"


def test_refs_across_documents_and_recursion():
    tree = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}},
                                             "leaf": {"$ref": "other#/$defs/leaf"}}}
    other = {"$defs": {"leaf": {"type": "string", "maxLength": 3}}}
    compiled, plain = _compiled(tree, {"other": other})
    for instance in [{"children": [{"children": [{"leaf": "abc"}]}]},
                     {"children": [{"children": [{"leaf": "abcd"}]}]},
                     {"children": [{"children": [5]}]}, {"leaf": 1}]:
        assert compiled(instance) is plain(instance), instance
    assert compiled({"children": [{"leaf": "ok"}]}) and not compiled({"children": [{"leaf": "long"}]})


def test_integers_beyond_64_bits_are_compared_exactly():
    compiled, plain = _compiled({"type": "object", "properties": {
        "n": {"type": "integer", "minimum": -(10**30), "maximum": 10**30}, "c": {"const": 2**64 + 1}}})
    for instance in [{"n": 10**30}, {"n": 10**30 + 1}, {"n": -(10**30) - 1}, {"n": 2**70}, {"c": 2**64 + 1},
                     {"c": 2**64}, {"c": float(2**64)}]:
        assert compiled(instance) is plain(instance), instance
    assert compiled({"n": 10**30}) and not compiled({"n": 10**30 + 1}) and not compiled({"c": 2**64})


def test_a_cycle_of_expressions_is_written_as_calls():
    # a -> b -> a, each an anyOf: writing them as expressions must stop (an instance that matches
    # neither leaf would recurse for jsonschema too, so only those that stop are compared)
    schema = {"$defs": {"a": {"anyOf": [{"type": "integer"}, {"$ref": "#/$defs/b"}]},
                        "b": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/a"}]}},
              "$ref": "#/$defs/a"}
    compiled, plain = _compiled(schema)
    for instance in [1, None, 10**30]:
        assert compiled(instance) is plain(instance) is True


def test_the_depth_check_agrees_with_a_walk_of_the_tree():
    from engine.server.translate import _depth
    for limit in (1, 2, 5, 100):
        check = schemas.within_depth(limit)
        for depth in range(1, limit + 3):
            for make in (lambda x: [x], lambda x: {"k": x}, lambda x: [1, {"a": "s", "b": x}]):
                value = {"leaf": None}
                for _ in range(depth - 1):
                    value = make(value)
                assert check(value) is (_depth(value, limit) <= limit), (limit, depth, value)
    assert schemas.within_depth(3)({"a": [1, "x", None, {"b": 10 ** 30}]})
    assert not schemas.within_depth(3)({"a": [1, [{"b": 2}]]})
