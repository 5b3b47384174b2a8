"""Passthrough: requests whose model is served by the provider of the client's own API are
forwarded untouched (body bytes, query string, anthropic-* headers) with the gateway's key, and
the answer comes back byte for byte, streamed."""
from __future__ import annotations

import json
import re

import aiohttp
import anthropic
import openai
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from conftest import UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY, gateway_env
from engine import config as config_mod
from engine.catalog import Catalog
from engine.server import passthrough
from engine.server.app import create_app
from support.fake_upstream import error_reply, fixture, json_reply, sse_reply
from support.gateway import free_port

pytestmark = [pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning"),
              # app.py's plain-string app/request keys, when the app runs in this process
              pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")]

# odd spacing and key order: any re-encoding by the gateway would show
MESSAGES_BODY = (b'{"model":  "claude-sonnet-4-5", "stream": true, "max_tokens": 64,\n'
                 b' "messages": [{"role": "user", "content": "hi \\u00e9"}], "x_unknown": {"keep": [1, 2]}}')
CHAT_BODY = (b'{"model": "gpt-4o",  "stream": true, "stream_options": {"include_usage": true},'
             b' "messages": [{"role": "user", "content": "hi"}], "x_unknown": 1}')


async def post(url, data: bytes, headers, skip_auto_headers=()):
    async with aiohttp.ClientSession(skip_auto_headers=skip_auto_headers) as s:
        async with s.post(url, data=data, headers=headers, auto_decompress=False) as r:
            return r.status, r.headers, await r.read()


@pytest.fixture
def anthropic_up(fake_anthropic_session):
    return fake_anthropic_session


@pytest.fixture
def openai_up(fake_openai_session):
    return fake_openai_session


# ---------------------------------------------------------------- Anthropic


async def test_anthropic_stream_bytes_headers_and_query_untouched(gateway, anthropic_up):
    recorded = fixture("anthropic-text-cache-usage-ping.sse")
    anthropic_up.enqueue(sse_reply(recorded, chunk_size=13, headers={"anthropic-ratelimit-requests-remaining": "99"}))
    headers = CIMultiDict([("content-type", "application/json"), ("x-api-key", "client-key"),
                           ("anthropic-version", "2023-06-01"),
                           ("anthropic-beta", "interleaved-thinking-2025-05-14"),
                           ("anthropic-beta", "context-1m-2025-08-07"),
                           ("user-agent", "claude-cli/2.1.197"), ("x-app", "cli")])
    status, rheaders, body = await post(gateway.url + "/v1/messages?beta=true&x=a%2Cb", MESSAGES_BODY, headers)
    assert status == 200 and body == recorded
    assert rheaders["content-type"].startswith("text/event-stream")
    assert rheaders["anthropic-ratelimit-requests-remaining"] == "99" and rheaders["request-id"]
    # the gateway's id as on every answer, and Anthropic's under the name every upstream's has
    assert rheaders["x-upstream-request-id"] == rheaders["request-id"]
    assert rheaders["x-request-id"].startswith("req_") and rheaders["x-request-id"] != rheaders["request-id"]
    sent = anthropic_up.last
    assert (sent.path, sent.query_string) == ("/v1/messages", "beta=true&x=a,b")
    assert sent.body == MESSAGES_BODY
    assert sent.headers["x-api-key"] == UPSTREAM_ANTHROPIC_KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers.getall("anthropic-beta") == ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]
    assert sent.headers["user-agent"] == "claude-cli/2.1.197" and sent.headers["x-app"] == "cli"


async def test_anthropic_prefix_and_default_version(gateway, anthropic_up):
    anthropic_up.enqueue(json_reply(fixture("anthropic-message-text.json")))
    status, _, body = await post(gateway.url + "/anthropic/v1/messages",
                                 MESSAGES_BODY.replace(b'"stream": true', b'"stream": false'),
                                 {"content-type": "application/json", "authorization": "Bearer client-token"})
    assert status == 200 and body == fixture("anthropic-message-text.json")
    sent = anthropic_up.last
    assert sent.path == "/v1/messages" and sent.query_string == ""
    assert sent.headers["anthropic-version"] == "2023-06-01"  # the configured one: the client sent none
    assert sent.headers["x-api-key"] == UPSTREAM_ANTHROPIC_KEY and "authorization" not in sent.headers


async def test_anthropic_client_version_wins(gateway, anthropic_up):
    anthropic_up.enqueue(json_reply({"ok": True}))
    await post(gateway.url + "/v1/messages", MESSAGES_BODY,
               {"content-type": "application/json", "anthropic-version": "2099-01-01"})
    assert anthropic_up.last.headers.getall("anthropic-version") == ["2099-01-01"]


async def test_anthropic_upstream_error_passes_through_untouched(gateway, anthropic_up):
    err = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},"request_id":"req_1"}'
    anthropic_up.enqueue(json_reply(err, status=429, headers={"retry-after": "3"}))
    status, headers, body = await post(gateway.url + "/v1/messages", MESSAGES_BODY,
                                       {"content-type": "application/json"})
    assert (status, body, headers["retry-after"]) == (429, err, "3")
    assert headers["x-upstream-request-id"] == headers["request-id"] and headers["x-request-id"].startswith("req_")


async def test_anthropic_count_tokens_passthrough(gateway, anthropic_up):
    body = b'{"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}'
    for path in ("/v1/messages/count_tokens", "/anthropic/v1/messages/count_tokens"):
        status, _, out = await post(gateway.url + path + "?beta=true", body, {"content-type": "application/json",
                                                                             "anthropic-beta": "token-counting"})
        assert status == 200 and json.loads(out) == {"input_tokens": 12}
        sent = anthropic_up.last
        assert (sent.path, sent.query_string, sent.body) == ("/v1/messages/count_tokens", "beta=true", body)
        assert sent.headers["anthropic-beta"] == "token-counting"


async def test_compressed_answers_only_when_the_client_asked(gateway, anthropic_up):
    anthropic_up.enqueue(json_reply({"ok": 1}), json_reply({"ok": 2}))
    await post(gateway.url + "/v1/messages", MESSAGES_BODY, {"accept-encoding": "gzip"})
    assert anthropic_up.last.headers["accept-encoding"] == "gzip"
    await post(gateway.url + "/v1/messages", MESSAGES_BODY, {}, skip_auto_headers=("Accept-Encoding",))
    assert "accept-encoding" not in anthropic_up.last.headers


def test_anthropic_sdk_stream_through_passthrough(gateway, anthropic_up):
    anthropic_up.enqueue(sse_reply(fixture("anthropic-text-then-tool-use.sse"), chunk_size=17))
    client = anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0, timeout=20)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100,
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"] and final.stop_reason == "tool_use"
    assert anthropic_up.last.json["model"] == "claude-sonnet-4-5"


def test_alias_to_another_anthropic_model_rewrites_only_the_model(make_gateway, fake_anthropic):
    gw = make_gateway({"TOKLIGENCE_MODEL_ALIASES": "claude-old=>claude-sonnet-4-5"})
    fake_anthropic.enqueue(json_reply(json.loads(fixture("anthropic-message-text.json"))))
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0, timeout=20)
    client.messages.create(model="claude-old", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    sent = fake_anthropic.last.json
    assert sent["model"] == "claude-sonnet-4-5" and sent["messages"] == [{"role": "user", "content": "x"}]


def test_unreachable_anthropic_upstream_is_a_502_in_anthropic_shape(make_gateway):
    gw = make_gateway({"TOKLIGENCE_ANTHROPIC_BASE_URL": f"http://127.0.0.1:{free_port()}"})
    client = anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0, timeout=20)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502 and info.value.body["type"] == "error"
    assert "could not reach" in info.value.body["error"]["message"]


async def test_upstream_dropping_mid_body_ends_the_client_stream_abruptly(gateway, anthropic_up):
    recorded = fixture("anthropic-text.sse")
    anthropic_up.enqueue(sse_reply(recorded, drop_after=len(recorded) // 2))
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(gateway.url + "/v1/messages", MESSAGES_BODY, {"content-type": "application/json"})


# ---------------------------------------------------------------- OpenAI


async def test_openai_chat_stream_bytes_and_headers_untouched(gateway, openai_up):
    recorded = fixture("openai-chat-text-include-usage.sse")
    openai_up.enqueue(sse_reply(recorded, chunk_size=29))
    status, headers, body = await post(gateway.url + "/v1/chat/completions", CHAT_BODY, {
        "content-type": "application/json", "authorization": "Bearer client-key", "openai-project": "proj_1",
        "x-request-id": "rq-pass-1"})
    assert status == 200 and body == recorded
    # OpenAI's own id comes in the same header as the gateway's: it moves to x-upstream-request-id
    assert headers.getall("x-request-id") == ["rq-pass-1"]
    assert re.fullmatch(r"req_fake\d{6}", headers["x-upstream-request-id"])
    sent = openai_up.last
    assert sent.path == "/v1/chat/completions" and sent.body == CHAT_BODY
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"
    assert sent.headers["openai-project"] == "proj_1" and "x-api-key" not in sent.headers


def test_openai_sdk_through_chat_passthrough(gateway, openai_up):
    openai_up.enqueue(sse_reply(fixture("openai-chat-parallel-tool-calls.sse"), chunk_size=50))
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=20)
    with client.chat.completions.stream(model="gpt-4o", messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_completion()
    assert [c.function.name for c in final.choices[0].message.tool_calls] == ["GetWeatherArgs", "get_stock_price"]


@pytest.fixture
async def responses_app(fake_anthropic, fake_openai, tmp_path):
    """The gateway in-process with a route calling passthrough.responses_passthrough, as the
    Responses module does when a model is routed to OpenAI."""
    env = gateway_env(fake_anthropic, fake_openai, tmp_path)
    cfg = config_mod.load({}, env=env)
    app = create_app(cfg, Catalog.load())

    async def handler(request):
        raw = await request.read()
        body = json.loads(raw)
        return await passthrough.responses_passthrough(request, raw, body, body["model"])

    app.router.add_post("/test/responses", handler)
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


async def test_responses_passthrough_helper(responses_app, fake_openai):
    recorded = fixture("responses-text.sse")
    fake_openai.enqueue(sse_reply(recorded, chunk_size=100))
    raw = b'{"model": "gpt-4o", "stream": true, "input": "hi",  "store": false}'
    status, headers, body = await post(str(responses_app.make_url("/test/responses")) + "?x=1", raw,
                                       {"content-type": "application/json", "authorization": "Bearer client"})
    assert status == 200 and body == recorded
    sent = fake_openai.last
    assert (sent.path, sent.query_string, sent.body) == ("/v1/responses", "x=1", raw)
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"


async def test_responses_passthrough_error_and_alias_rewrite(responses_app, fake_openai):
    fake_openai.enqueue(error_reply(400, message="bad input"))
    raw = b'{"model": "gpt-4o", "input": "hi"}'
    handler_body = json.loads(raw)
    status, _, body = await post(str(responses_app.make_url("/test/responses")), raw,
                                 {"content-type": "application/json"})
    assert status == 400 and json.loads(body)["error"]["message"] == "bad input"
    assert passthrough.with_model(raw, handler_body, "gpt-4o") is raw
    assert json.loads(passthrough.with_model(raw, handler_body, "gpt-4.1"))["model"] == "gpt-4.1"


def test_chat_passthrough_sends_the_aliased_model_name(make_gateway, fake_openai):
    import json as _json
    import urllib.request as _rq
    gw = make_gateway({"TOKLIGENCE_MODEL_ALIASES": "team-default=>gpt-4o"})
    body = {"model": "team-default", "messages": [{"role": "user", "content": "hi"}]}
    req = _rq.Request(gw.url + "/v1/chat/completions", data=_json.dumps(body).encode(), method="POST",
                      headers={"content-type": "application/json"})
    assert _rq.urlopen(req, timeout=10).status == 200
    sent = fake_openai.last
    assert sent.path == "/v1/chat/completions" and sent.json["model"] == "gpt-4o"
    assert sent.json["messages"] == body["messages"]
