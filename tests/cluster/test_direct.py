"""The direct path's messages: a header and the hidden states' bytes, never a pickle; and its connections take only
peers that prove the secret (the stages themselves are exercised on a real cluster in test_pipeline.py)."""

from __future__ import annotations

import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from netboot.cluster.direct import ACK, INPUT, PathBroken, connect, pack, unpack


@given(st.integers(1, 8), st.integers(1, 64), st.integers(0, 2**31))
def test_a_step_goes_through_a_message_unchanged(rows, dim, step):
    h = np.random.default_rng(step).standard_normal((rows, dim)).astype(np.float32)
    batch = [["a" * 32, 7, rows]]
    header, got = unpack(pack(step, batch, h))
    assert header["step"] == step and header["batch"] == batch
    assert np.array_equal(got, h) and got.flags.writeable


def test_an_error_travels_without_hidden_states():
    header, got = unpack(pack(3, [["s", 0, 1]], np.zeros((1, 4), np.float32), "MissingContext: no session"))
    assert got is None and header == {"step": 3, "batch": [["s", 0, 1]], "error": "MissingContext: no session"}


def test_connect_needs_the_secret_and_the_stages_acknowledgement():
    listener = Listener(("127.0.0.1", 0), authkey=b"s" * 32)
    roles: list[bytes] = []

    def serve() -> None:
        for _ in range(2):
            try:
                conn = listener.accept()
            except AuthenticationError:
                continue
            roles.append(conn.recv_bytes())
            conn.send_bytes(ACK)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with pytest.raises((AuthenticationError, EOFError, ConnectionError)):
        Client(listener.address, authkey=b"x" * 32)
    conn = connect(listener.address, b"s" * 32, INPUT)
    thread.join(10)
    assert roles == [INPUT]
    conn.close()
    address = listener.address
    listener.close()
    with pytest.raises(PathBroken, match="cannot reach the stage"):
        connect(address, b"s" * 32, INPUT, timeout=2)
