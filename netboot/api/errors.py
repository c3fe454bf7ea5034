"""OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`, and the exception that carries it."""

from __future__ import annotations

import json
import math

from aiohttp import web

from netboot.errors import CapacityError, ContextLimitError, NetbootError

# OpenAI's error types by status
TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
         405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_exceeded",
         500: "server_error", 503: "service_unavailable"}


class ApiError(Exception):
    """A request answered with an error object: `status`, a message for people, the field at fault (`param`) and
    OpenAI's machine-readable `code` where it has one."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=json.dumps(self.body()).encode(),
                            content_type="application/json", headers=self.headers)


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 naming the field at fault."""
    return ApiError(400, message, param=param, code=code)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def from_engine(error: NetbootError, param: str | None = None) -> ApiError:
    """What the engine refused, as the client sees it: a request it can never run (400), or one it cannot take
    now (429, with when to try again)."""
    if isinstance(error, CapacityError):
        return ApiError(429, str(error), code="rate_limit_exceeded", headers=retry_after(error.retry_after))
    if isinstance(error, ContextLimitError):
        return bad(str(error), param, "context_length_exceeded")
    return bad(str(error), param)
