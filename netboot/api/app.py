"""The aiohttp application of `netboot api`. It answers from the moment it listens: /health says 503 (and the
API 503 with Retry-After) until `ready()` hands it the loaded engine. One middleware authenticates, logs one JSON
line per request, counts it for /metrics, and turns every failure into OpenAI's error object: a bug is a 500 with
its traceback on stderr, never in the answer, and the server goes on."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from importlib import resources
from typing import Any, TextIO

from aiohttp import web

from netboot.api.auth import ApiKey
from netboot.api.errors import ApiError, bad
from netboot.api.fields import Body
from netboot.api.generation import Run, answer_stream, answer_whole
from netboot.api.log import LOGGED, write_log
from netboot.api.metrics import Metrics
from netboot.api.replies import Reply, Vocabulary
from netboot.api.schema import Job, Served, parse_chat, parse_completion
from netboot.api.sse import EventStream

MAX_BODY = 8 << 20  # bytes: a whole context of text is far less
TOKENS = "netboot.tokens"
STATUS = "netboot.status"
LOADING_RETRY = "2"


class ApiServer:
    def __init__(self, api_key: str | None = None, log: TextIO = sys.stderr):
        self.key = ApiKey(api_key)
        self.log = log
        self.metrics = Metrics()
        self.engine: Any | None = None
        self.served: Served | None = None
        self.vocab: Vocabulary | None = None
        self.created = int(time.time())

    def ready(self, engine: Any, name: str, tokenizer: Any, chat: Any) -> None:
        self.served = Served(name, tokenizer, chat, engine.context)
        self.vocab = Vocabulary(tokenizer)
        self.engine = engine

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=MAX_BODY)
        app.router.add_get("/", self.page)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/detokenize", self.detokenize)
        return app

    # ---- every request

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        request[LOGGED] = True
        started = time.monotonic()
        status = 500
        try:
            self.key.check(request)
            response = await handler(request)
            status = request.get(STATUS, response.status)
            return response
        except ApiError as e:
            status = e.status
            return e.response()
        except web.HTTPException as e:  # the router's 404 / 405, the body's 413
            error = _http_error(request, e)
            status = error.status
            return error.response()
        except (asyncio.CancelledError, ConnectionError):
            status = 499
            raise
        except Exception:  # noqa: BLE001 - a bug: reported here, answered as OpenAI's 500, and the server goes on
            traceback.print_exc(file=self.log)
            return ApiError(500, "internal server error (the server's log has the details)").response()
        finally:
            route = request.match_info.route.resource
            endpoint = route.canonical if route is not None else "other"
            self.metrics.count(endpoint, status)
            write_log(self.log, request, status, time.monotonic() - started, request.get(TOKENS))

    def _engine(self) -> tuple[Any, Served, Vocabulary]:
        if self.engine is None or self.served is None or self.vocab is None:
            raise ApiError(503, "the model is still loading: try again shortly", code="model_loading",
                           headers={"Retry-After": LOADING_RETRY})
        return self.engine, self.served, self.vocab

    # ---- open endpoints

    async def page(self, request: web.Request) -> web.Response:
        try:
            html = resources.files("netboot.api").joinpath("static", "index.html").read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ApiError(404, "the chat page is not installed (netboot/api/static/index.html)") from None
        return web.Response(body=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def health(self, request: web.Request) -> web.Response:
        if self.engine is None:
            return web.json_response({"status": "loading"}, status=503, headers={"Retry-After": LOADING_RETRY})
        return web.json_response({"status": "ok"})

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(self.engine), content_type="text/plain",
                            headers={"Cache-Control": "no-cache"})

    # ---- the API

    async def models(self, request: web.Request) -> web.Response:
        _, served, _ = self._engine()
        return web.json_response({"object": "list", "data": [self._model_object(served)]})

    async def model(self, request: web.Request) -> web.Response:
        _, served, _ = self._engine()
        if request.match_info["model"] != served.name:
            raise ApiError(404, f"the model '{request.match_info['model']}' does not exist: this server serves "
                                f"'{served.name}'", param="model", code="model_not_found")
        return web.json_response(self._model_object(served))

    def _model_object(self, served: Served) -> dict[str, Any]:
        return {"id": served.name, "object": "model", "created": self.created, "owned_by": "netboot",
                "max_model_len": served.context}

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        engine, served, vocab = self._engine()
        data = await _json_body(request)
        parse = parse_chat if kind == "chat" else parse_completion
        job: Job = await asyncio.to_thread(parse, data, served)  # tokenizing a long prompt takes a while
        reply = Reply(kind, served.name, len(job.requests))
        try:
            async with Run(engine, job) as run:
                if not job.stream:
                    return web.json_response(await answer_whole(run, reply, vocab))
                stream = EventStream(request)
                try:
                    await answer_stream(run, reply, vocab, stream)
                except ConnectionError:
                    request[STATUS] = 499  # the client went away; leaving the block cancels its requests
                except Exception:  # noqa: BLE001 - a bug once the stream has begun: it can only end the stream
                    if not stream.response.prepared:
                        raise
                    traceback.print_exc(file=self.log)
                    request[STATUS] = 500
                return stream.response
        finally:
            request[TOKENS] = (job.prompt_tokens, sum(f.completion_tokens for f in reply.finished if f))

    async def tokenize(self, request: web.Request) -> web.Response:
        _, served, _ = self._engine()
        body = Body(await _json_body(request))
        body.only({"content", "prompt", "add_special", "parse_special"}, {})
        field = "content" if body.has("content") or not body.has("prompt") else "prompt"
        text = body.string(field)
        if text is None:
            raise bad("missing required field 'content' (the text to tokenize)", "content")
        add = body.boolean("add_special")
        special = body.boolean("parse_special", True)
        tokens = await asyncio.to_thread(served.tokenizer.encode, text, None if add else False, special)
        return web.json_response({"tokens": tokens, "count": len(tokens), "max_model_len": served.context})

    async def detokenize(self, request: web.Request) -> web.Response:
        _, served, _ = self._engine()
        body = Body(await _json_body(request))
        body.only({"tokens"}, {})
        tokens = body.required("tokens")
        vocab = served.tokenizer.vocab_size
        if not isinstance(tokens, list) or not all(type(t) is int and 0 <= t < vocab for t in tokens):
            raise bad(f"'tokens' must be an array of token ids (integers 0..{vocab - 1})", "tokens")
        return web.json_response({"content": served.tokenizer.decode(tokens)})


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise bad(f"the request body is not valid JSON: {str(e)[:200]}") from None


def _http_error(request: web.Request, e: web.HTTPException) -> ApiError:
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        return ApiError(405, f"{request.method} is not allowed on {request.path} (allowed: {allowed})",
                        code="method_not_allowed", headers={"Allow": allowed})
    if isinstance(e, web.HTTPNotFound):
        return ApiError(404, f"no such endpoint: {request.method} {request.path}", code="not_found")
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        return ApiError(413, f"the request body is larger than {MAX_BODY >> 20} MiB", code="request_too_large")
    return ApiError(e.status, e.reason or "error")
