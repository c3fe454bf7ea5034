"""`netboot api`: an OpenAI-compatible HTTP server over the serving engine (aiohttp).

- ``app``: the aiohttp application: routes, the middleware that turns every failure into OpenAI's error object,
  the loading / ready life cycle
- ``schema`` (with ``fields``): a request body checked field by field and turned into engine ``Request``s
- ``generation``: submitting a job's n requests and reading their events (cancelled when the client goes away)
- ``replies``: OpenAI's response, chunk, usage and logprobs objects; ``sse``: server-sent events
- ``errors``: ``ApiError`` and the error object; ``auth``: the bearer key; ``metrics``: Prometheus text;
  ``log``: the JSON access log
- ``static/index.html``: the chat page served at ``/``
"""
