"""A job's requests in the engine, and the two ways to answer them: one JSON reply when all are done, or a stream
of chunks as tokens come. Whatever way the answer ends (done, the client gone, the handler cancelled, an error),
every request still in the engine is cancelled then, so its slot frees at the engine's next step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from netboot.api.errors import ApiError, from_engine
from netboot.api.replies import Reply, Vocabulary, chunk, logprobs_of, usage_chunk, whole
from netboot.api.schema import Job
from netboot.api.sse import EventStream
from netboot.engine.requests import Delta, Event, Finished, Handle
from netboot.errors import NetbootError


class Run:
    """`async with Run(engine, job) as run: async for index, event in run: ...`"""

    def __init__(self, engine: Any, job: Job):
        self.engine = engine
        self.job = job
        self.handles: list[Handle] = []
        self.tasks: list[asyncio.Task] = []
        self.events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

    async def __aenter__(self) -> Run:
        loop = asyncio.get_running_loop()
        try:
            for request in self.job.requests:
                self.handles.append(self.engine.submit(request, loop))
        except NetbootError as e:
            self.cancel()
            raise from_engine(e, self.job.prompt_field) from None
        self.tasks = [asyncio.create_task(self._pump(i, h)) for i, h in enumerate(self.handles)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()
        for task in self.tasks:
            task.cancel()

    async def _pump(self, index: int, handle: Handle) -> None:
        async for event in handle:
            self.events.put_nowait((index, event))

    async def __aiter__(self) -> AsyncIterator[tuple[int, Event]]:
        left = len(self.handles)
        while left:
            index, event = await self.events.get()
            left -= isinstance(event, Finished)
            yield index, event


def failure(finished: Finished) -> ApiError | None:
    """A reply the engine did not complete, as an error."""
    if finished.reason == "error":
        return ApiError(500, f"generation failed: {finished.detail}")
    if finished.reason == "cancelled":
        return ApiError(503, f"the request was cancelled: {finished.detail}", headers={"Retry-After": "5"})
    return None


async def answer_whole(run: Run, reply: Reply, vocab: Vocabulary) -> dict[str, Any]:
    async for i, event in run:
        if isinstance(event, Delta):
            reply.texts[i].append(event.text)
            reply.logprobs[i].extend(event.logprobs)
        else:
            reply.finished[i] = event
            error = failure(event)
            if error is not None:
                raise error
    return whole(reply, run.job.prompt_tokens, vocab if run.job.logprobs else None)


async def answer_stream(run: Run, reply: Reply, vocab: Vocabulary, stream: EventStream) -> None:
    job = run.job
    await stream.open()
    if reply.kind == "chat":
        for i in range(reply.n):
            await stream.send(chunk(reply, i, role=True, include_usage=job.include_usage))
    async for i, event in run:
        if isinstance(event, Delta):
            if event.text or (job.logprobs and event.logprobs):
                shown = logprobs_of(reply, vocab, i, event.logprobs) if job.logprobs else None
                await stream.send(chunk(reply, i, text=event.text, logprobs=shown, include_usage=job.include_usage))
            continue
        reply.finished[i] = event
        error = failure(event)
        if error is not None:  # mid-stream, the error object is the last event (as vLLM sends it)
            await stream.send(error.body())
            break
        await stream.send(chunk(reply, i, finish=event.reason, include_usage=job.include_usage))
    else:
        if job.include_usage:
            await stream.send(usage_chunk(reply, job.prompt_tokens))
    await stream.done()
