"""Server-sent events as OpenAI streams them: `data: JSON` blocks, ending with `data: [DONE]`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class EventStream:
    """A streaming response. A write to a client that has gone raises ConnectionError."""

    def __init__(self, request: web.Request):
        self.request = request
        self.response = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})  # a proxy in front must not hold the events back

    async def open(self) -> None:
        await self.response.prepare(self.request)

    async def send(self, data: dict[str, Any]) -> None:
        await self.response.write(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    async def done(self) -> None:
        await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()
