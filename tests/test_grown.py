"""Filters, projections and flattenings over a conversation that grows by a turn with every request
reuse what they made of it a request before (engine/grown.py): what is reused, and that the
answer is always the one JMESPath's own interpreter gives for the list as it is now."""
from __future__ import annotations

import copy

import jmespath
import pytest

from engine import grown, program
from engine.expr import compile_expr
from engine.functions import Functions

OPTIONS = jmespath.Options(custom_functions=Functions())


SHARED: list = []


@pytest.fixture(autouse=True)
def fresh():
    grown.clear()
    yield
    grown.clear()
    for x in SHARED:
        program.unshare_item(x)
    SHARED.clear()


def kept(x: dict) -> dict:
    """x as the history memo keeps a conversation's item: a shared item."""
    program.share_item(x, program.MUTATIONS[0])
    SHARED.append(x)
    return x


def turn(i: int, share: bool = True) -> dict:
    if i % 3 == 2:
        t = {"role": "tool", "tool_call_id": f"call_{i // 3}", "content": f"output {i}"}
    else:
        t = {"role": "user" if i % 3 == 0 else "assistant",
             "content": [{"type": "text", "text": f"turn {i}"},
                         *([{"type": "input_audio", "input_audio": {"data": "x"}}] if i == 7 else []),
                         *([{"type": "text", "text": "marked", "cache_control": {"type": "ephemeral"}}]
                           if i % 5 == 0 else [])]}
    return kept(t) if share else t


def rewrite(message: dict) -> dict:
    if type(message["content"]) is str:
        return dict(message, content=message["content"] + " (rewritten)")
    marked = {"type": "text", "text": "moved", "cache_control": {"type": "ephemeral"}}
    return dict(message, content=[*message["content"], marked])


# the shapes of the shipped specs' checks and vars over a whole conversation
EXPRESSIONS = [
    "src.messages[].content[] | [?type=='input_audio']",
    "length(src.messages[].content[] | [?is_object(@) && cache_control]) || `0`",
    "duplicates(src.messages[?role=='tool'].tool_call_id)",
    "src.messages[?role=='assistant'] | [-1]",
    "[src.messages[].content[], src.messages[].content[].content[]][] | [?type != `null`]",
    "src.messages[].role",
    "src.messages[]",
    # the shipped vars written turn by turn (messages-to-chat's all_blocks, the Responses parts)
    "src.messages[].[content[], content[].content[]][][] | [?type != `null`]",
    "src.messages[].[(role=='user') && content || `[]`, (role=='tool') && content || `[]`][][] "
    "| [?is_object(@)] || `[]`",
    # a projection of a path (the shipped item_types, block_types, part_types) and chat's parts
    "src.messages[*].role",
    "src.messages[*].content[0].type",
    "src.messages[?!is_string(content)].content[]",
]


class Spy:
    """A list-homomorphic fn (a filter) that records the lengths of the lists it is given."""

    def __init__(self):
        self.calls = []

    def __call__(self, items):
        self.calls.append(len(items))
        return [x for x in items if x["role"] == "tool"]


def test_a_grown_list_costs_its_new_items_only():
    convo = [turn(i) for i in range(12)]
    spy = Spy()
    first = grown.grown(1, convo, spy)
    longer = convo + [turn(12), turn(13), turn(14)]
    again = grown.grown(1, longer, spy)
    assert spy.calls == [12, 3]
    assert again == spy.__class__()(longer)
    # the part made before is the same objects, in a new list
    assert again[:len(first)] == first and all(a is b for a, b in zip(again, first))
    assert again is not first


def test_the_same_list_again_is_not_mapped_again():
    convo = [turn(i) for i in range(10)]
    spy = Spy()
    a = grown.grown(1, convo, spy)
    b = grown.grown(1, list(convo), spy)
    assert spy.calls == [10]
    assert a == b and a is not b


def test_a_rewritten_last_item_is_mapped_again_with_the_new_ones():
    convo = [turn(i) for i in range(12)]  # its last item (11) is a tool message
    spy = Spy()
    grown.grown(1, convo, spy)
    rewritten = convo[:-1] + [dict(convo[-1], content="rewritten")] + [turn(12)]
    made = grown.grown(1, rewritten, spy)
    # the old last item once (where its output began), the rewritten one and the new one
    assert spy.calls == [12, 1, 2]
    assert made == Spy()(rewritten)
    assert made[-1]["content"] == "rewritten"


def test_another_conversation_or_an_edited_middle_is_mapped_whole():
    convo = [turn(i) for i in range(10)]
    spy = Spy()
    grown.grown(1, convo, spy)
    other = [turn(i) for i in range(10)]  # equal values, other objects: another first item
    assert grown.grown(1, other, spy) == Spy()(other)
    edited = convo[:3] + [turn(99)] + convo[4:] + [turn(10)]
    assert grown.grown(1, edited, spy) == Spy()(edited)
    assert spy.calls == [10, 10, 11]


def test_only_a_kept_conversation_or_what_was_made_of_one_is_kept():
    spy = Spy()
    loose = [turn(i, share=False) for i in range(10)]
    assert grown.grown(1, loose, spy) == Spy()(loose)
    assert grown._SITES == {}
    made = grown.grown(1, [turn(i) for i in range(12)], lambda xs: list(xs))
    # an operation over what another made of a kept conversation is kept too
    grown.grown(2, made, spy)
    assert set(grown._SITES) == {1, 2}


def test_a_conversation_the_history_memo_let_go_is_let_go_too():
    spy = Spy()
    convo = [turn(i) for i in range(10)]
    grown.grown(1, convo, spy)
    program.unshare_item(convo[0])
    grown.grown(1, convo + [turn(10)], spy)  # not used: mapped whole
    assert spy.calls == [10, 11]
    program.share_item(convo[0], program.MUTATIONS[0])
    made = grown.grown(3, convo + [turn(10)], lambda xs: list(xs))
    program.unshare_item(convo[0])
    grown.grown(2, made, spy)  # made of it: not kept either
    assert 2 not in grown._SITES
    grown.grown(1, [turn(i) for i in range(10)], spy)  # another conversation: the other goes
    assert id(convo[0]) not in grown._SITES[1] and len(grown._SITES[1]) == 1


def test_nothing_is_reused_once_a_value_may_have_changed_in_place():
    convo = [turn(i) for i in range(10)]
    spy = Spy()
    grown.grown(1, convo, spy)
    program.MUTATIONS[0] += 1
    grown.grown(1, convo + [turn(10)], spy)
    assert spy.calls == [10, 11]


def test_sessions_in_turn_keep_their_own_entries_up_to_the_bound():
    spy = Spy()
    sessions = [[turn(i) for i in range(10)] for _ in range(grown.SITE_ENTRIES + 1)]
    for s in sessions:
        grown.grown(1, s, spy)
    assert len(grown._SITES[1]) == grown.SITE_ENTRIES
    # the first session was let go, the second is still kept
    grown.grown(1, sessions[1] + [turn(10)], spy)
    grown.grown(1, sessions[0] + [turn(10)], spy)
    assert spy.calls[-2:] == [1, 11]


def test_short_lists_are_not_kept():
    fn, _ = compile_expr("src.messages[?role=='tool']")
    fn({"src": {"messages": [turn(i) for i in range(grown.RUN - 1)]}})
    assert grown._SITES == {}
    fn({"src": {"messages": [turn(i) for i in range(grown.RUN)]}})
    assert len(grown._SITES) == 1


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_expressions_over_a_growing_conversation_match_the_interpreter(text):
    fn, _ = compile_expr(text)
    convo = [turn(i) for i in range(9)]
    steps = []
    for i in range(9, 16):
        convo = convo + [turn(i)]
        steps.append(convo)
        # Claude Code's rewrite of its last message: same prefix, the last one changed (its
        # cache breakpoint moved)
        steps.append(convo[:-1] + [rewrite(convo[-1])])
    steps.append(steps[-1][:5] + steps[-1][6:])  # an item dropped from the middle
    steps.append(copy.deepcopy(steps[-1]))       # the same conversation, all new objects
    for messages in steps:
        scope = {"src": {"messages": messages}}
        assert fn(scope) == jmespath.search(text, scope, OPTIONS), len(messages)
    # every list operation of the expression was looked up, but the join of two lists (of two
    # items) and the filter over it (README: the join changes in its middle as the conversation
    # grows)
    sites = fn.code[0].count("_g_grown(")
    assert len(grown._SITES) == (sites - 2 if text.startswith("[src") else sites)


def test_a_volatile_function_is_not_reused():
    fn, _ = compile_expr("src.messages[].new_id('m_')")
    messages = [turn(i) for i in range(10)]
    a = fn({"src": {"messages": messages}})
    b = fn({"src": {"messages": messages + [turn(10)]}})
    assert len(set(a) | set(b)) == 21
    # the flattening before it is reused; the projection calling new_id is not
    assert fn.code[0].count("_g_grown") == 1  # the flattening's


def test_a_loop_items_lists_are_not_looked_up():
    from engine.expr import _Gen, _may_grow
    assert _may_grow(jmespath.compile("src.messages").parsed)
    assert _may_grow(jmespath.compile("vars.items[].content").parsed)
    assert not _may_grow(jmespath.compile("it.content").parsed)
    src = _Gen().gen(jmespath.compile("it.content[?type=='text']").parsed, "scope", True)
    assert "_g_grown" not in src
    # a projection of a path from `src` or `vars` is looked up as a filter of it is
    for text in ("vars.items[*].type", "src.messages[*].role", "vars.items[?type=='x']"):
        assert compile_expr(text)[0].code[0].count("_g_grown(") == 1, text
