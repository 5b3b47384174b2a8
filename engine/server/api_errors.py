"""Errors in the caller's own API shape.

OpenAI: {"error": {"message", "type", "param", "code"}} (all four keys always present).
Anthropic: {"type": "error", "error": {"type", "message"}}."""
from __future__ import annotations

import json

from aiohttp import web

from .. import error_types

# status -> error type, per client API: the one table the error specs also read (mappings/errors.yaml)
_TYPES = error_types.shipped()
_ANTHROPIC_TYPES = _TYPES.types("anthropic")


class ApiError(Exception):
    """Raised anywhere in a handler; rendered in the caller's API shape by app.guarded."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers or {}


def openai_body(status, message, param=None, code=None, type=None) -> dict:
    return {"error": {"message": message, "type": type or _TYPES.type_of("openai", status),
                      "param": param, "code": code}}


def anthropic_body(status, message, type=None) -> dict:
    return {"type": "error", "error": {"type": type or _TYPES.type_of("anthropic", status),
                                       "message": message}}


def render(api: str, err: ApiError, request_id: str | None = None) -> web.Response:
    if api == "anthropic":
        atype = err.type if err.type in _ANTHROPIC_TYPES else None
        msg = f"{err.param}: {err.message}" if err.param and not err.message.startswith(err.param) else err.message
        body = anthropic_body(err.status, msg, atype)
        if request_id:
            body["request_id"] = request_id
    else:
        body = openai_body(err.status, err.message, err.param, err.code, err.type)
    return web.Response(status=err.status, text=json.dumps(body), content_type="application/json",
                        headers=err.headers)


def api_of(path: str) -> str:
    """Which client API a path belongs to, for error shapes."""
    path = "/" + path.lstrip("/")
    return "anthropic" if path.startswith(("/v1/messages", "/anthropic/", "/messages")) else "openai"


def install_http_error_shapes():
    """Requests aiohttp's HTTP parser refuses (a header over 8 KiB, an unknown method, a body
    encoding it cannot decode) never reach a handler; aiohttp answers them in text/plain. This
    re-renders those answers in the caller's API shape, keeping aiohttp's status and reason."""
    from aiohttp import web_protocol

    original = web_protocol.RequestHandler.handle_error
    if getattr(original, "_engine_shaped", False):
        return

    def handle_error(self, request, status=500, exc=None, message=None):
        resp = original(self, request, status, exc, message)
        reason = getattr(exc, "message", None) or (str(exc) if exc is not None else message) or "request refused"
        reason = " ".join(str(reason).split())[:300]
        etype = "invalid_request_error" if resp.status < 500 else "api_error"
        # aiohttp gives these requests no path, so the caller's API is unknown: this body is both
        # an Anthropic error ({type: error, error: {type, message}}) and an OpenAI one
        # ({error: {message, type, param, code}}), and each SDK reads its own part
        body = {"type": "error", "error": {"type": etype, "message": reason, "param": None, "code": None}}
        shaped = web.Response(status=resp.status, text=json.dumps(body), content_type="application/json")
        shaped.force_close()
        return shaped

    handle_error._engine_shaped = True
    web_protocol.RequestHandler.handle_error = handle_error
