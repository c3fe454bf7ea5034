"""The direct path of hidden states: driver -> stage 0 -> stage 1 -> ... -> driver, one message per step over
TCP connections between the stages themselves, where Ray's actor calls cost two calls through the driver per hop
(benchmarks/bench_cluster.py measures both). Ray still places, watches and replaces the stages and carries
everything else (loading, replay, liveness).

The connections are `multiprocessing.connection`'s: each is authenticated (an HMAC challenge) with a secret that
only Ray, itself token-authenticated, carried to the stages; a message is a JSON header (step, batch, shape or
error) and the hidden states' float32 bytes, never a pickle."""

from __future__ import annotations

import json
import os
import socket
import struct
from multiprocessing.connection import Client, Connection

import numpy as np

from netboot.cluster.nodes import ClusterError
from netboot.errors import NetbootError

ACK = b"ok"
INPUT, OUTPUT = b"in", b"out"  # what a connection is to the stage it reaches: its inputs, or where it sends outputs
_LENGTH = struct.Struct("<I")


class PathBroken(NetbootError):
    """A connection of the direct path closed or failed: a stage (or its node) went away."""


def pack(step: int, batch: list, h: np.ndarray | None, error: str | None = None) -> bytes:
    header = {"step": step, "batch": batch}
    if error is not None:
        header["error"] = error
    elif h is not None:
        header["shape"] = list(h.shape)
    head = json.dumps(header).encode()
    body = b"" if h is None or error is not None else np.ascontiguousarray(h, np.float32).tobytes()
    return _LENGTH.pack(len(head)) + head + body


def unpack(message: bytes) -> tuple[dict, np.ndarray | None]:
    (n,) = _LENGTH.unpack_from(message)
    header = json.loads(message[_LENGTH.size : _LENGTH.size + n])
    if "shape" not in header:
        return header, None
    # A copy the forward pass may write into (the message's bytes are read-only).
    h = np.frombuffer(bytearray(message[_LENGTH.size + n :]), np.float32).reshape(header["shape"])
    return header, h


def no_delay(conn: Connection) -> Connection:
    """Small messages leave at once (a message's length and body may go as two writes: Nagle would hold the
    second until the first is acknowledged)."""
    s = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    finally:
        s.close()
    return conn


def connect(address: tuple[str, int], secret: bytes, role: bytes, timeout: float = 10.0) -> Connection:
    """A connection to the stage listening at `address`, as `role`, once that stage has taken it in."""
    try:
        conn = no_delay(Client(tuple(address), authkey=secret))
        conn.send_bytes(role)
        if not conn.poll(timeout) or conn.recv_bytes() != ACK:
            conn.close()
            raise PathBroken(f"the stage at {address[0]}:{address[1]} did not take the connection")
    except (OSError, EOFError) as e:
        raise PathBroken(f"cannot reach the stage at {address[0]}:{address[1]}: {e}") from e
    return conn


class DirectPath:
    """The driver's ends of the path: it sends each step to the first stage and receives it from the last."""

    def __init__(self, actors: list, timeout: float):
        import ray

        self.secret = os.urandom(32)
        self.timeout = timeout
        self.addresses = ray.get([a.listen.remote(self.secret) for a in actors], timeout=timeout)
        ray.get([a.link.remote(self.addresses[i + 1]) for i, a in enumerate(actors[:-1])], timeout=timeout)
        self.first = connect(self.addresses[0], self.secret, INPUT, timeout)
        self.last = connect(self.addresses[-1], self.secret, OUTPUT, timeout)
        self.step = 0

    def replace(self, i: int, actors: list) -> None:
        """Stage i is a new actor: it listens, the hop before it sends to it, it sends to the hop after it."""
        import ray

        self.addresses[i] = ray.get(actors[i].listen.remote(self.secret), timeout=self.timeout)
        if i > 0:
            ray.get(actors[i - 1].link.remote(self.addresses[i]), timeout=self.timeout)
        else:
            self.first.close()
            self.first = connect(self.addresses[0], self.secret, INPUT, self.timeout)
        if i < len(actors) - 1:
            ray.get(actors[i].link.remote(self.addresses[i + 1]), timeout=self.timeout)
        else:
            self.last.close()
            self.last = connect(self.addresses[-1], self.secret, OUTPUT, self.timeout)

    def send(self, h: np.ndarray, batch: list) -> int:
        self.step += 1
        try:
            self.first.send_bytes(pack(self.step, batch, h))
        except OSError as e:
            raise PathBroken(f"the first stage's connection failed: {e}") from e
        return self.step

    def receive(self, step: int, wait: float) -> np.ndarray | None:
        """The last stage's output for `step`, or None if it has not come within `wait` seconds (a message of an
        earlier step, one a failover abandoned, is dropped)."""
        try:
            while self.last.poll(wait):
                header, out = unpack(self.last.recv_bytes())
                if header["step"] != step:
                    continue
                if "error" in header:
                    raise ClusterError(f"a stage failed: {header['error']}")
                return out
        except (OSError, EOFError) as e:
            raise PathBroken(f"the last stage's connection failed: {e}") from e
        return None

    def close(self) -> None:
        for conn in (self.first, self.last):
            conn.close()
