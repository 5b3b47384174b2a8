"""Hostile input (issue 6): property-based tests of every endpoint of the running gateway.

Requests are drawn from the wire-format JSON Schemas (tests/support/schema_gen.py), from the
recorded client captures (tests/fixtures/clients/*.json) and from small hand-made requests, then
mutated: a node of the wrong type, numbers out of range, odd strings (lone surrogates, NULs),
deep nesting (50 .. 5000 levels), unknown fields, huge strings (1-5 MB), bodies over the size
limit, invalid UTF-8, random bytes, empty bodies, JSON that is not an object, duplicate keys,
NaN/Infinity literals, wrong content types and encodings, hostile headers and response ids.

Whatever comes in, every answer must:
  * not be a 5xx: the fake upstreams never fail here, so no 5xx is upstream-caused;
  * arrive in full (streams read to their end) within ANSWER_TIMEOUT seconds;
  * when >= 400, be JSON in the caller's error shape: OpenAI
    {"error": {"message", "type", "param", "code"}} on the OpenAI paths, Anthropic
    {"type": "error", "error": {"type", "message"}} on the /messages paths;
and the gateway must still answer GET /health afterwards.

Examples are derandomized (the same ones every run, so CI is stable); set HOSTILE_EXPLORE=1 for
fresh random ones and HOSTILE_EXAMPLES=<factor> for more of them when hunting bugs.
"""
from __future__ import annotations

import functools
import gzip
import http.client
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import strategies as st
from support.fake_upstream import (
    anthropic_message,
    anthropic_tool_stream,
    callable_reply,
    json_reply,
    openai_chat_completion,
    openai_chat_stream,
    sse_reply,
)
from support.schema_gen import (
    ShortBytes,
    ShortDict,
    encode,
    from_schema,
    get_at,
    mutated,
    nested,
    paths_of,
    set_at,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "clients"
ANSWER_TIMEOUT = 10.0  # seconds for a whole answer, streams included
MAX_BODY = 20 * 1024 * 1024  # the default max_body_bytes

_FACTOR = float(os.environ.get("HOSTILE_EXAMPLES", "1"))
BASE = settings(
    deadline=None,
    database=None,
    derandomize=not os.environ.get("HOSTILE_EXPLORE"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
    print_blob=True,
)


def examples(n: int) -> settings:
    return settings(BASE, max_examples=max(1, int(n * _FACTOR)))


# ------------------------------------------------------------------------------ endpoints

MODELS = ["claude-sonnet-4-5", "gpt-4o"]  # anthropic / openai routes


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    api: str            # error shape: "openai" | "anthropic"
    schema: str | None  # request schema id


POSTS = [
    Endpoint("chat", "/v1/chat/completions", "openai", "openai/chat.request"),
    Endpoint("responses", "/v1/responses", "openai", "openai/responses.request"),
    Endpoint("messages", "/v1/messages", "anthropic", "anthropic/messages.request"),
    Endpoint("count_tokens", "/v1/messages/count_tokens", "anthropic", "anthropic/count_tokens.request"),
    Endpoint("anthropic_messages", "/anthropic/v1/messages", "anthropic", "anthropic/messages.request"),
]
SUBMIT = Endpoint("submit", "/v1/responses/{id}/submit_tool_outputs", "openai", None)
ALL_POSTS = POSTS + [SUBMIT]


def _captures() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in sorted(FIXTURES.glob("*.json")):
        doc = json.loads(f.read_text())
        out.setdefault(doc["path"], []).append(doc["body"])
    return out


CAPTURES = _captures()

HANDMADE = {
    "chat": [
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
        {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
         "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 50, "temperature": 0.5},
        {"model": "gpt-4o", "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"x\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "20C"}],
         "tools": [{"type": "function", "function": {"name": "w", "parameters": {
             "type": "object", "properties": {"c": {"type": "string"}}}}}], "tool_choice": "auto"},
    ],
    "responses": [
        {"model": "gpt-4o", "input": "Hi"},
        {"model": "gpt-4o", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
         "instructions": "Be brief.", "stream": True, "max_output_tokens": 64, "store": False},
        {"model": "gpt-4o", "input": [
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "20C"}],
         "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
         "reasoning": {"effort": "low", "summary": "auto"}},
    ],
    "messages": [
        {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]},
        {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True, "system": "Be brief.",
         "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]},
        {"model": "claude-sonnet-4-5", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024},
         "messages": [
             {"role": "user", "content": "Weather?"},
             {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "20C"}]}],
         "tools": [{"name": "w", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"}},
    ],
    "count_tokens": [
        {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}]},
        {"model": "claude-sonnet-4-5", "system": [{"type": "text", "text": "x"}],
         "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
         "tools": [{"name": "w", "input_schema": {"type": "object"}}]},
    ],
    "submit": [
        {"tool_outputs": [{"tool_call_id": "toolu_hostile", "output": "20C"}]},
        {"tool_outputs": [{"call_id": "toolu_hostile", "output": {"temp": 20}}], "stream": True},
        {"tool_outputs": [{"tool_call_id": "toolu_hostile", "output": "20C"}], "stream": False},
    ],
}


def _seed_list(ep: Endpoint) -> list[dict]:
    name = "messages" if ep.name == "anthropic_messages" else ep.name
    seeds = list(HANDMADE[name])
    if ep.name == "count_tokens":
        # a Messages capture minus what count_tokens does not take
        seeds += [{k: v for k, v in b.items() if k in ("model", "messages", "system", "tools", "thinking")}
                  for b in CAPTURES.get("/v1/messages", [])]
    elif ep.name != "submit":
        seeds += CAPTURES.get(ep.path.removeprefix("/anthropic"), [])
    return seeds


def models() -> st.SearchStrategy[str]:
    """Mostly the two routed models (translated or passed through, depending on the endpoint),
    sometimes one no route matches."""
    return st.one_of(st.sampled_from(MODELS), st.sampled_from(MODELS), st.sampled_from(MODELS),
                     st.sampled_from(["nope-1", "claude", "gpt", "o3-x\u00e9", " gpt-4o"]))


def seeds(ep: Endpoint, generated: bool = True) -> st.SearchStrategy[dict]:
    """Valid requests for the endpoint: captures, hand-made ones and, with `generated`, schema
    draws; the model replaced by one of MODELS (or an unrouted one)."""
    options = [st.sampled_from(_seed_list(ep))]
    if generated and ep.schema:
        options.append(from_schema(ep.schema))
    elif generated and ep is SUBMIT:
        options.append(submit_bodies())
    return _with_model(st.one_of(*options), ep is not SUBMIT)


@st.composite
def _with_model(draw, bodies: st.SearchStrategy, set_model: bool):
    body = draw(bodies)
    return ShortDict({**body, "model": draw(models())} if set_model else body)


def submit_bodies() -> st.SearchStrategy[dict]:
    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
    output = st.one_of(st.text(max_size=40), st.dictionaries(st.text(max_size=5), scalar, max_size=3),
                       st.lists(scalar, max_size=3), st.none())
    call_id = st.one_of(st.just("toolu_hostile"), st.text(max_size=12))
    item = st.one_of(
        st.fixed_dictionaries({"tool_call_id": call_id, "output": output}),
        st.fixed_dictionaries({"call_id": call_id, "output": output}),
        st.fixed_dictionaries({}, optional={"tool_call_id": call_id, "call_id": call_id, "output": output}))
    return st.fixed_dictionaries({"tool_outputs": st.lists(item, max_size=4)},
                                 optional={"stream": st.one_of(st.booleans(), st.none())})


# ------------------------------------------------------------------------------ HTTP


@dataclass(repr=False)
class Answer:
    method: str
    path: str
    status: int
    headers: dict
    body: bytes
    elapsed: float

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def __repr__(self) -> str:
        return f"Answer({self.method} {_short(self.path)} -> {self.status}, {self.body[:200]!r})"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def send(gw, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         content_type: str | None = "application/json") -> Answer:
    """One request on a fresh connection; the whole answer (a stream to its end) within
    ANSWER_TIMEOUT, else the test fails naming the request."""
    hdrs = {}
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=ANSWER_TIMEOUT)
    start = time.monotonic()
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in hdrs.items():
            conn.putheader(k, v)
        if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in hdrs):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body:
            try:
                conn.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered (413) before reading all of it: read that answer
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.monotonic() - start
        return Answer(method, path, resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, elapsed)
    except TimeoutError:
        pytest.fail(f"HANG: {method} {_short(path)}: no complete answer within {ANSWER_TIMEOUT:g}s")
    except (http.client.HTTPException, ConnectionError) as e:
        pytest.fail(f"CONNECTION: {method} {_short(path)}: the gateway broke the connection: {type(e).__name__}: {e}")
    finally:
        conn.close()


def check_error_shape(api: str, ans: Answer, what: str = "") -> None:
    where = f"{ans.method} {_short(ans.path)} -> {ans.status} ({what})"
    assert ans.content_type.startswith("application/json"), \
        f"SHAPE: {where}: error content-type {ans.content_type!r}, body {ans.body[:300]!r}"
    try:
        body = json.loads(ans.body)
    except ValueError:
        pytest.fail(f"SHAPE: {where}: error body is not JSON: {ans.body[:300]!r}")
    if api == "anthropic":
        ok = (isinstance(body, dict) and body.get("type") == "error" and isinstance(body.get("error"), dict)
              and isinstance(body["error"].get("type"), str) and isinstance(body["error"].get("message"), str))
        assert ok, f"SHAPE: {where}: not an Anthropic error {{type:error, error:{{type, message}}}}: {body!r:.400}"
    else:
        err = body.get("error") if isinstance(body, dict) else None
        ok = (isinstance(err, dict) and {"message", "type", "param", "code"} <= set(err)
              and isinstance(err["message"], str) and isinstance(err["type"], str))
        assert ok, f"SHAPE: {where}: not an OpenAI error {{error:{{message, type, param, code}}}}: {body!r:.400}"


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes):
    """RFC 8259 JSON: UTF-8 without lone surrogates, no NaN / Infinity (what JSON.parse,
    Go and serde accept); ValueError otherwise."""
    text = data.decode("utf-8")  # strict: a lone surrogate encoded in bytes fails here
    return json.loads(text, parse_constant=_no_constant)


def _strict_problem(data: bytes) -> str | None:
    try:
        strict_json(data)
    except ValueError as e:
        return str(e)[:200]
    return None


def check_strict_body(ans: Answer, where: str) -> None:
    """A JSON body, or every `data:` payload of an event stream, is strict JSON."""
    if ans.content_type.startswith("text/event-stream"):
        payloads = [line[5:].strip() for line in ans.body.split(b"\n") if line.startswith(b"data:")]
    elif ans.content_type.startswith("application/json"):
        payloads = [ans.body]
    else:
        return
    for payload in payloads:
        if payload and payload != b"[DONE]":
            problem = _strict_problem(payload)
            if problem:
                pytest.fail(f"NOT-JSON: {where}: the gateway sent its client invalid JSON ({problem}): "
                            f"{payload[:300]!r}")


def check(ans: Answer, api: str, what: str = "") -> Answer:
    """The properties every answer has, whatever was sent."""
    where = f"{ans.method} {_short(ans.path)} -> {ans.status} ({what})"
    assert ans.status < 500, f"5XX: {where}: {ans.body[:500]!r}"
    assert ans.elapsed < ANSWER_TIMEOUT, f"SLOW: {where} took {ans.elapsed:.1f}s"
    if ans.status >= 400:
        check_error_shape(api, ans, what)
    check_strict_body(ans, where)
    return ans


def check_alive(gw) -> None:
    ans = send(gw, "GET", "/health", content_type=None)
    assert ans.status == 200, f"DOWN: /health answered {ans.status} after the request: {ans.body[:200]!r}"


UPSTREAMS: list = []  # the two session fakes, set by the autouse fixture below


def check_upstream_bodies(seen: list[int], client_body: bytes, where: str) -> None:
    """A body the gateway wrote itself (translated, so not the client's bytes) is strict JSON:
    what it forwards untouched is the client's business, what it encodes is its own."""
    for fake, before in zip(UPSTREAMS, seen):
        for rec in fake.requests[before:]:
            problem = _strict_problem(rec.body) if rec.body and rec.body != client_body else None
            if problem:
                pytest.fail(f"NOT-JSON-UPSTREAM: {where}: the gateway sent {rec.path} invalid JSON ({problem}): "
                            f"{rec.body[:300]!r}")


def post(gw, ep: Endpoint, body: bytes, what: str, path: str | None = None, **kw) -> Answer:
    if currently_in_test_context():
        note(f"{ep.name}: {what}; body[:300]={body[:300]!r}")
    seen = [len(fake.requests) for fake in UPSTREAMS]
    ans = send(gw, "POST", path or ep.path, body, **kw)
    check(ans, ep.api, what)
    check_upstream_bodies(seen, body, f"POST {_short(path or ep.path)} ({what})")
    check_alive(gw)
    return ans


dumps = encode


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def _upstreams(fake_anthropic_session, fake_openai_session):
    UPSTREAMS[:] = [fake_anthropic_session, fake_openai_session]
    yield
    UPSTREAMS.clear()


@pytest.fixture
def stored_id(gateway, fake_anthropic_session):
    """A stored Responses response (translated to Anthropic) that stopped for tool call
    `toolu_hostile`: what submit_tool_outputs continues."""
    fake_anthropic_session.enqueue(json_reply(anthropic_message(
        [{"type": "tool_use", "id": "toolu_hostile", "name": "get_weather", "input": {"city": "Lima"}}],
        stop_reason="tool_use")))
    body = {"model": "claude-sonnet-4-5", "input": "Weather in Lima?",
            "tools": [{"type": "function", "name": "get_weather",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}
    ans = send(gateway, "POST", "/v1/responses", dumps(body))
    assert ans.status == 200, ans.body[:500]
    rid = json.loads(ans.body)["id"]
    assert any(i.get("type") == "function_call" for i in json.loads(ans.body)["output"])
    return rid


def _first_tool_name(body) -> str:
    """The name of the first tool the upstream was offered (Messages or Chat shape), else 'shell'."""
    tools = body.get("tools") if isinstance(body, dict) else None
    tool = tools[0] if isinstance(tools, list) and tools and isinstance(tools[0], dict) else {}
    fn = tool.get("function")
    name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
    return name if isinstance(name, str) and name else "shell"


def _tool_call_reply(rec):
    """An upstream that answers with a call of the first tool it was offered (the answer
    translation reads the client's tool definitions, hostile ones included), stream or not."""
    name = _first_tool_name(rec.json)
    args = {"command": "ls", "cmd": "ls", "x": [1, {"y": None}]}
    path = rec.path.rstrip("/")
    if path.endswith("/messages"):
        if rec.stream:
            return sse_reply(anthropic_tool_stream([("toolu_hostile1", name, args)], text="Let me look."))
        return json_reply(anthropic_message([{"type": "text", "text": "Let me look."},
                                             {"type": "tool_use", "id": "toolu_hostile1", "name": name,
                                              "input": args}], stop_reason="tool_use"))
    if path.endswith("/chat/completions"):
        if rec.stream:
            return sse_reply(openai_chat_stream(None, tool_calls=[("call_hostile1", name, args)]))
        return json_reply(openai_chat_completion(None, tool_calls=[("call_hostile1", name, args)]))
    return None  # the default answer


class upstream_replies:
    """`with upstream_replies(kind):` the fakes answer every request with text (their default)
    or with a tool call, for the duration of one example."""

    def __init__(self, kind: str):
        self.kind = kind

    def __enter__(self):
        if self.kind == "tool_call":
            for fake in UPSTREAMS:
                fake.set_default(callable_reply(_tool_call_reply))

    def __exit__(self, *exc):
        for fake in UPSTREAMS:
            fake.set_default(None)


REPLY_KINDS = st.sampled_from(["text", "tool_call"])


def _path_for(ep: Endpoint, rid: str | None) -> str:
    return ep.path.format(id=rid) if ep is SUBMIT else ep.path


# ------------------------------------------------------------------------------ properties

EP_IDS = [ep.name for ep in ALL_POSTS]


@pytest.mark.parametrize("ep", ALL_POSTS, ids=EP_IDS)
def test_valid_requests_are_answered_without_5xx(gateway, ep, stored_id):
    """Schema-valid requests (drawn from the schema, captures, hand-made), streams included."""

    @examples(60)
    @given(body=seeds(ep), reply=REPLY_KINDS)
    def prop(body, reply):
        with upstream_replies(reply):
            ans = post(gateway, ep, dumps(body), f"valid request, upstream answers with {reply}",
                       path=_path_for(ep, stored_id))
        if ans.status == 200 and body.get("stream") is True and ep.name != "count_tokens":
            assert ans.content_type.startswith("text/event-stream"), (ans.content_type, ans.body[:300])

    prop()


@pytest.mark.parametrize("ep", ALL_POSTS, ids=EP_IDS)
def test_mutated_requests_get_an_answer_in_the_callers_shape(gateway, ep, stored_id):
    """Valid requests with one or two nodes mutated, or their bytes mangled."""

    @examples(120)
    @given(data=st.data())
    def prop(data):
        body = data.draw(seeds(ep, generated=data.draw(st.booleans())), label="seed")
        what, raw = data.draw(mutated(body), label="mutation")
        reply = data.draw(REPLY_KINDS, label="upstream reply")
        with upstream_replies(reply):
            post(gateway, ep, raw, f"{what}; upstream answers with {reply}", path=_path_for(ep, stored_id))

    prop()


NON_OBJECTS = [b"", b" ", b"null", b"true", b"0", b"-1", b"1e999", b"NaN", b"\"x\"", b"[]", b"[{}]",
               b"{}", b"{", b"}", b"{\"model\":", b"{\"model\": \"gpt-4o\"", b"\x00", b"\xff\xfe",
               b"\xef\xbb\xbf", b"\xef\xbb\xbf{}", b"[" * 100_000, b"{\"a\":" * 100_000,
               b"{\"model\": \"claude-sonnet-4-5\"}", b"{\"model\": \"gpt-4o\"}",
               b"{\"model\": null}", b"{\"model\": 1}", b"{\"model\": [\"gpt-4o\"]}", b"{\"model\": \"\"}"]
CONTENT_TYPES = ["application/json", None, "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=zz", "application/json; charset=latin-1",
                 "application/json; charset=utf-16", "application/octet-stream", "*/*", "\u00e9/\u00e9",
                 "application/json; boundary=" + "x" * 4000]


@pytest.mark.parametrize("ep", ALL_POSTS, ids=EP_IDS)
def test_random_bytes_and_non_objects(gateway, ep, stored_id):
    """Random bytes, empty bodies, JSON that is not an object, unclosed JSON, under any content type."""

    @examples(60)
    @given(raw=st.one_of(st.sampled_from(NON_OBJECTS), st.binary(max_size=2000),
                         st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))).map(ShortBytes),
           content_type=st.sampled_from(CONTENT_TYPES))
    def prop(raw, content_type):
        post(gateway, ep, raw, f"raw bytes, content-type {content_type!r}",
             path=_path_for(ep, stored_id), content_type=content_type)

    prop()


@pytest.mark.parametrize("ep", ALL_POSTS, ids=EP_IDS)
def test_huge_strings(gateway, ep, stored_id):
    """A string node of the request replaced by 1-5 MB of text (within the 20 MB limit)."""

    @examples(4)
    @given(data=st.data())
    def prop(data):
        body = data.draw(seeds(ep, generated=False), label="seed")
        paths = [p for p in paths_of(body) if isinstance(get_at(body, p), str)] or [("huge",)]
        path = data.draw(st.sampled_from(paths), label="path")
        size = data.draw(st.sampled_from([1, 3, 5]), label="MB") * 1024 * 1024
        char = data.draw(st.sampled_from(["a", "\u00e9", "\U0001F600", "\\", "\""]), label="char")
        text = (char * (size // len(char.encode())))
        post(gateway, ep, dumps(set_at(body, path, text)), f"{'/'.join(map(str, path))}: {size >> 20} MB of {char!r}",
             path=_path_for(ep, stored_id))

    prop()


@pytest.mark.parametrize("ep", ALL_POSTS, ids=EP_IDS)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(gateway, ep, stored_id, chunked):
    body = HANDMADE["messages" if "messages" in ep.name else ep.name][0]
    raw = dumps({**body, "pad": "a" * (MAX_BODY + 1024)})
    headers = {}
    if chunked:
        # the same bytes without a Content-Length: the limit must hold on what is read
        step = 1 << 20
        raw = b"".join(b"%x\r\n%s\r\n" % (len(raw[i:i + step]), raw[i:i + step])
                       for i in range(0, len(raw), step)) + b"0\r\n\r\n"
        headers["Transfer-Encoding"] = "chunked"
    ans = send(gateway, "POST", _path_for(ep, stored_id), raw, headers=headers)
    check(ans, ep.api, "body over max_body_bytes")
    assert ans.status == 413, (ans.status, ans.body[:300])
    check_alive(gateway)


LONE_SURROGATES = ["\ud800", "\udcff", "a\ud83d", "\ude00b"]


@pytest.mark.parametrize("ep", POSTS, ids=[ep.name for ep in POSTS])
@pytest.mark.parametrize("model", MODELS)
def test_lone_surrogate_escapes(gateway, ep, model):
    """A JSON string holding a lone UTF-16 surrogate as a \\uXXXX escape (valid JSON, seen from
    buggy clients and cut-off emoji): the gateway cannot re-encode it as UTF-8, so it must
    refuse it with a 400 (or pass it through untouched), never fail with a 500."""
    body = HANDMADE["messages" if "messages" in ep.name else ep.name][0]
    for s in LONE_SURROGATES:
        if ep.name == "responses":
            bad = {**body, "model": model, "input": s}
        else:
            bad = {**body, "model": model, "messages": [{"role": "user", "content": s}]}
        raw = encode(bad, ensure_ascii=True)
        assert b"\\ud" in raw
        post(gateway, ep, raw, f"lone surrogate {s!r} in the text, {model}")


NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"]


@pytest.mark.parametrize("ep", POSTS, ids=[ep.name for ep in POSTS])
@pytest.mark.parametrize("model", MODELS)
def test_nan_and_infinity_literals(gateway, ep, model):
    """NaN / Infinity literals (and numbers that overflow to infinity) are not JSON; Python's
    json accepts them, and they pass `minimum`/`maximum` (NaN compares false to everything).
    Refused with a 400, or passed through untouched; never echoed to the client nor written
    into a body the gateway encodes for the upstream."""
    body = HANDMADE["messages" if "messages" in ep.name else ep.name][0]
    body = {**body, "model": model}
    numeric = "top_p" if ep.name != "count_tokens" else None
    tools = {"chat": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "default": 0}}}],
             "responses": [{"type": "function", "name": "f", "parameters": {"type": "object", "default": 0}}]
             }.get(ep.name, [{"name": "f", "input_schema": {"type": "object", "default": 0}}])
    for lit in NON_FINITE:
        cases = [("tool schema default", {**body, "tools": tools}, b'"default": 0', b'"default": ' + lit)]
        if numeric:
            cases.append((numeric, {**body, numeric: 0.5}, b'"top_p": 0.5', b'"top_p": ' + lit))
        for what, value, old, new in cases:
            raw = dumps(value).replace(old, new)
            assert new in raw
            post(gateway, ep, raw, f"{lit.decode()} as {what}, {model}")


SHELL_TOOLS = {"shell": "command", "shell_command": "command", "local_shell": "command", "exec_command": "cmd"}
ODD_PROPERTIES = [True, [], "x", 1, None, {"cmd": True, "command": True}, {"cmd": [], "command": []},
                  {"cmd": {"type": 1}, "command": {"type": ["array"]}}]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_shell_tools_with_malformed_parameters(gateway, fake_anthropic_session, stream):
    """Codex's shell tools (by name) get their command reshaped to the declared type of the
    field, read from the tool's `parameters.properties`; the schema leaves `parameters` free-form,
    so that may be anything. The model calls the tool; the answer is still whole and well formed."""
    for name, field in SHELL_TOOLS.items():
        for props in ODD_PROPERTIES:
            call = (f"toolu_{name}", name, {field: "ls -la"})
            if stream:
                fake_anthropic_session.enqueue(sse_reply(anthropic_tool_stream([call])))
            else:
                fake_anthropic_session.enqueue(json_reply(anthropic_message(
                    [{"type": "tool_use", "id": call[0], "name": name, "input": call[2]}], stop_reason="tool_use")))
            body = {"model": MODELS[0], "input": "list files", "stream": stream,
                    "tools": [{"type": "function", "name": name, "parameters": {"type": "object", "properties": props}}]}
            post(gateway, POSTS[1], dumps(body), f"shell tool {name!r}, parameters.properties={props!r}")
            fake_anthropic_session.reset()


DEPTHS = [50, 99, 100, 101, 5000]


@pytest.mark.parametrize("ep", ALL_POSTS, ids=EP_IDS)
@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_nesting(gateway, ep, stored_id, depth):
    """Arrays and objects nested `depth` levels deep in every place of the first seed (at most
    12 places), as a value the schema leaves open and as one it types."""
    body = _seed_list(ep)[-1 if ep is not SUBMIT else 0]
    body = {**body, "model": MODELS[0]} if ep is not SUBMIT else body
    places = paths_of(body)[1:13] + [("extra",)]
    for kind in ("list", "dict"):
        for path in places:
            what = f"{'/'.join(map(str, path))}: {kind} nested {depth} deep"
            post(gateway, ep, dumps(set_at(body, path, nested(depth, kind))), what, path=_path_for(ep, stored_id))


def test_deep_schema_recursion(gateway):
    """Nesting the schemas themselves recurse into (namespace tools hold tools), up to the
    depth limit: validated and translated, never a RecursionError."""
    for levels in (10, 24, 49, 60):
        tool = {"type": "function", "name": "leaf", "parameters": {"type": "object"}}
        for i in range(levels):
            tool = {"type": "namespace", "name": f"ns{i}", "tools": [tool]}
        for model in MODELS:
            body = {"model": model, "input": "x", "tools": [tool]}
            post(gateway, POSTS[1], dumps(body), f"namespace tools {levels} levels, {model}")
    # chat: content parts nested inside tool message content arrays are flat, but tool
    # parameters are free-form: a deep JSON Schema there
    schema = {"type": "object"}
    for _ in range(48):
        schema = {"type": "object", "properties": {"a": schema}}
    for model in MODELS:
        body = {"model": model, "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}
        post(gateway, POSTS[0], dumps(body), f"chat tool parameters 48 levels, {model}")
        body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                "tools": [{"name": "f", "input_schema": schema}]}
        post(gateway, POSTS[2], dumps(body), f"messages tool input_schema 48 levels, {model}")


HOSTILE_HEADERS = [
    {"x-request-id": "x" * 8000},
    {"x-request-id": "\u00e9\u00e8"},
    {"x-request-id": b"\xff\xfe\x80"},
    {"x-request-id": ""},
    {"x-request-id": " "},
    {"x-request-id": "a\tb"},
    {"anthropic-version": "\u00e9" * 10},
    {"anthropic-version": b"\xff"},
    {"anthropic-beta": ",,,," * 100},
    {"authorization": "Bearer " + "k" * 6000},
    {"authorization": b"Bearer \xff\xfe"},
    {"x-api-key": b"\xc3\x28"},
    {"accept": "text/event-stream"},
    {"accept": "application/xml"},
    {"accept-encoding": "gzip, br, zstd, deflate"},
    {"accept-encoding": "\u00e9"},
    {"content-encoding": "identity"},
    {"content-encoding": "x-unknown"},
    {"expect": "100-continue"},
    {"x-forwarded-for": "1.2.3.4, " * 500},
    {"connection": "upgrade", "upgrade": "websocket"},
]


@pytest.mark.parametrize("ep", ALL_POSTS, ids=EP_IDS)
def test_hostile_headers(gateway, ep, stored_id):
    """A valid request with odd, oversized or undecodable header values, wrong content encodings."""
    seeds_ = [s if ep is SUBMIT else {**s, "model": m} for s in _seed_list(ep)[:2] for m in MODELS]
    for headers in HOSTILE_HEADERS:
        for body in seeds_:
            post(gateway, ep, dumps(body), f"headers {headers!r:.80}", path=_path_for(ep, stored_id), headers=headers)


@functools.cache
def _gzip_bomb() -> bytes:
    """~65 KB of gzip that inflates to 64 MB (over three times max_body_bytes)."""
    return gzip.compress(b"{\"model\": \"" + b"a" * (64 * 1024 * 1024) + b"\"}", compresslevel=9)


@pytest.mark.parametrize("ep", ALL_POSTS, ids=EP_IDS)
def test_compressed_bodies(gateway, ep, stored_id):
    """Valid gzip/deflate bodies are read; a plain body labelled gzip or deflate, a corrupt one, a
    truncated one and a gzip bomb (far more than max_body_bytes once inflated) are 4xx in the
    caller's shape."""
    body = _seed_list(ep)[0]
    body = body if ep is SUBMIT else {**body, "model": MODELS[0]}
    raw = dumps(body)
    bomb = _gzip_bomb()
    cases = [
        ("gzip", gzip.compress(raw), False),
        ("deflate", zlib.compress(raw), False),
        ("gzip", bomb, True),
        ("gzip", raw, True),
        ("deflate", raw, True),
        ("gzip", gzip.compress(raw)[:-12], True),
        ("gzip", b"\x1f\x8b\x08\x00garbage", True),
        ("deflate", b"\x78\x9c garbage", True),
    ]
    for encoding, data, bad in cases:
        ans = post(gateway, ep, data, f"content-encoding {encoding}, {len(data)} bytes, bad={bad}",
                   path=_path_for(ep, stored_id), headers={"Content-Encoding": encoding})
        if bad:
            assert 400 <= ans.status < 500, (encoding, ans.status, ans.body[:300])


# ------------------------------------------------------------------------------ ids and GETs

ODD_IDS = ["messages", "v1/messages", "resp_messages", "x/messages", "%2Fmessages", "count_tokens",
           "resp_" + "a" * 2000, "..", "%2e%2e", "%00", "resp_%00x", "%ff%fe", "%ed%a0%80",
           "%C3%A9", "\u00e9", "\U0001F600", "null", "undefined", "resp_'; DROP TABLE responses;--",
           "resp_\" OR 1=1", "*", "%2A", "resp_x?y=1", "resp_x#frag", "+", "%20", "resp_hostile%0d%0ax:1",
           "resp_x;y", "resp_%25", "\\", "%5C"]


def _id_path(rid: str) -> str:
    # keep %XX sequences as written, percent-encode the rest (non-ASCII, spaces, ...)
    return quote(rid, safe="%/?#;=+*'\"!$&(),:@~")


@st.composite
def response_ids(draw):
    rid = draw(st.one_of(st.sampled_from(ODD_IDS), st.text(max_size=40)))
    return _id_path(rid) or "x"


def test_response_ids_get_and_delete(gateway):
    """GET and DELETE /v1/responses/{id} with odd ids: 404 (or 4xx) in the OpenAI shape, never
    another API's shape (an id containing 'messages' is still a Responses path)."""

    @examples(100)
    @given(rid=response_ids(), method=st.sampled_from(["GET", "DELETE"]))
    def prop(rid, method):
        path = f"/v1/responses/{rid}"
        note(f"{method} {path}")
        ans = send(gateway, method, path, content_type=None)
        check(ans, "openai", f"{method} odd response id")
        check_alive(gateway)

    prop()


def test_submit_to_odd_response_ids(gateway):
    @examples(60)
    @given(rid=response_ids(), body=seeds(SUBMIT))
    def prop(rid, body):
        path = f"/v1/responses/{rid}/submit_tool_outputs"
        post(gateway, SUBMIT, dumps(body), "odd response id", path=path)

    prop()


def test_get_and_delete_a_stored_response(gateway, stored_id):
    """A real id stays readable after all the above; deleting it twice is 200 then 404."""
    ans = check(send(gateway, "GET", f"/v1/responses/{stored_id}", content_type=None), "openai")
    assert ans.status == 200
    ans = check(send(gateway, "DELETE", f"/v1/responses/{stored_id}", content_type=None), "openai")
    assert ans.status == 200
    ans = check(send(gateway, "DELETE", f"/v1/responses/{stored_id}", content_type=None), "openai")
    assert ans.status == 404


GETS = ["/v1/models", "/health", "/metrics"]


@pytest.mark.parametrize("path", GETS)
def test_get_endpoints_with_hostile_queries_and_headers(gateway, path):
    @examples(40)
    @given(query=st.one_of(st.just(""), st.text(max_size=60).map(lambda t: "?" + quote(t, safe="=&")),
                           st.sampled_from(["?", "?&&&", "?a=" + "b" * 6000, "?%ff", "?%00", "?a[]=1&a[]=2",
                                            "?limit=-1", "?limit=99999999999999999999", "?after=%2e%2e"])),
           headers=st.sampled_from([{}] + HOSTILE_HEADERS))
    def prop(query, headers):
        note(f"GET {path}{query} {headers!r:.80}")
        ans = send(gateway, "GET", path + query, headers=headers, content_type=None)
        check(ans, "openai", "GET with hostile query/headers")
        if not headers.get("content-encoding") and len(query) < 4000:
            assert ans.status == 200, (ans.status, ans.body[:300])
        check_alive(gateway)

    prop()


METHODS = ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"]


@pytest.mark.parametrize("path,api", [(ep.path.format(id="resp_x"), ep.api) for ep in ALL_POSTS]
                         + [(p, "openai") for p in GETS] + [("/v1/responses/resp_x", "openai"),
                                                            ("/nope", "openai"), ("/v1/messages/nope", "anthropic"),
                                                            ("/", "openai"), ("//v1/messages", "anthropic"),
                                                            ("/v1/chat/completions/", "openai")])
def test_wrong_methods_and_paths(gateway, path, api):
    for method in METHODS + ["POST"]:
        ans = send(gateway, method, path, b"{}" if method not in ("GET", "HEAD") else None)
        assert ans.status < 500, (method, path, ans.status, ans.body[:300])
        if ans.status >= 400 and method != "HEAD":
            check_error_shape(api, ans, f"{method} {path}")
    check_alive(gateway)


PARSER_ERRORS = {
    "request line over 8 KB": ("POST", "/v1/chat/completions?" + "a" * 9000, {}),
    "request line over 8 KB (messages)": ("POST", "/v1/messages?" + "a" * 9000, {}),
    "response id over 8 KB": ("GET", "/v1/responses/resp_" + "a" * 9000, {}),
    "header over 8 KB": ("POST", "/v1/messages", {"x-request-id": "x" * 9000}),
    "unknown method": ("FOO", "/v1/chat/completions", {}),
    "unknown method (messages)": ("FOO", "/v1/messages", {}),
    "content-encoding br": ("POST", "/v1/messages", {"content-encoding": "br"}),
    "content-encoding zstd": ("POST", "/v1/chat/completions", {"content-encoding": "zstd"}),
    "content-encoding br on GET": ("GET", "/v1/models", {"content-encoding": "br"}),
}


@pytest.mark.parametrize("case", list(PARSER_ERRORS))
def test_http_parser_errors_are_in_the_callers_shape(gateway, case):
    """What aiohttp's HTTP parser refuses before any handler or middleware runs (an 8 KB request
    line or header, a method it does not know, a content encoding it cannot decode): a 4xx,
    the gateway keeps serving, and (the property that fails today) the body is still the
    caller's JSON error shape rather than aiohttp's text/plain message."""
    method, path, headers = PARSER_ERRORS[case]
    body = None if method == "GET" else b"{}"
    ans = send(gateway, method, path, body, headers=headers)
    assert 400 <= ans.status < 500, ans
    check_alive(gateway)
    check_error_shape("anthropic" if "/messages" in path else "openai", ans, case)
