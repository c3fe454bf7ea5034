"""The file server's logs: one JSON access-log line per request, and aiohttp's own error reports kept to one line
for what a client caused."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError


class _OneLine(logging.Formatter):
    """aiohttp's own error reports: one line for what a client caused (a malformed request, a client gone), the
    whole traceback for anything else (a bug)."""

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, HttpProcessingError | ConnectionError):
            return f"netboot: {record.getMessage()}: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        return "netboot: " + super().format(record)


def server_logger(stream: TextIO) -> logging.Logger:
    logger = logging.getLogger("netboot.fileserver")
    if not logger.handlers:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(_OneLine())
        logger.addHandler(handler)
        logger.propagate = False
    return logger


class AccessLog(AbstractAccessLogger):
    """aiohttp's access-log hook, for the answers aiohttp gives itself (a malformed request: 400); the answers of
    ModelServer.handle are logged by it, with the bytes actually sent."""

    stream: TextIO = sys.stderr

    def log(self, request, response, time_taken: float) -> None:
        try:
            if request.get("netboot.logged"):
                return
        except Exception:  # noqa: BLE001 - a half-parsed request may not even be a mapping
            pass
        write_log(self.stream, peer(request), getattr(request, "method", "?"), raw_path(request),
                  response.status, response.body_length, time_taken, None)

    @property
    def enabled(self) -> bool:
        return True


def write_log(stream: TextIO, client: str | None, method: str, path: str, status: int, sent: int, duration: float,
              range_header: str | None, port: int | None = None) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
              "client": client, "port": port, "method": method, "path": path, "status": status, "bytes": sent,
              "duration": round(duration, 6), "range": range_header}
    try:
        stream.write(json.dumps(record) + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def peer(request) -> str | None:
    try:
        return request.remote
    except Exception:  # noqa: BLE001
        return None


def peer_port(request) -> int | None:
    try:
        peer = request.transport.get_extra_info("peername")
        return int(peer[1])
    except Exception:  # noqa: BLE001 - no transport (closed) or not an IP socket
        return None


def raw_path(request) -> str:
    try:
        return request.raw_path
    except Exception:  # noqa: BLE001
        return ""
