"""The API key: `Authorization: Bearer KEY`, compared in constant time. /health, /metrics and the chat page at /
are open (the page asks for the key and sends it with its API calls); everything else needs the key."""

from __future__ import annotations

import hmac

from aiohttp import web

from netboot.api.errors import ApiError

OPEN = frozenset({"/", "/health", "/metrics"})


class ApiKey:
    def __init__(self, key: str | None):
        self.expected = f"Bearer {key}".encode() if key else None

    def check(self, request: web.Request) -> None:
        """Raise a 401 unless the request may go on."""
        if self.expected is None or request.path in OPEN:
            return
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self.expected):
            what = "no API key was given" if not given else "the API key is wrong"
            raise ApiError(401, f"{what}: send 'Authorization: Bearer KEY' with the key the server was started with "
                                "(--api-key or $NETBOOT_API_KEY)", code="invalid_api_key",
                           headers={"WWW-Authenticate": 'Bearer realm="netboot"'})
