"""The Ray cluster as netboot sees it: reaching it, and its live nodes that can hold a stage."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from netboot.errors import NetbootError, note
from netboot.sizes import parse_size


class ClusterError(NetbootError):
    """The cluster cannot be reached, refused us, or cannot hold (any longer) a range of the model's layers."""


# A node's own --max-memory: `ray start ... --labels netboot-max-memory=2GB`. A stage there keeps its peak RSS
# under it, streaming the layers that do not fit.
BUDGET_LABEL = "netboot-max-memory"


@dataclass(frozen=True)
class Node:
    id: str
    address: str
    memory: int  # bytes Ray lets tasks and actors use there
    cpus: float
    budget: int | None = None  # the node's BUDGET_LABEL, in bytes

    @property
    def short(self) -> str:
        return self.id[:8]

    @property
    def capacity(self) -> int:
        """What a stage there may hold: the node's own budget, else what Ray lets its actors use."""
        return self.budget if self.budget is not None else self.memory


def connect(address: str) -> None:
    """Join the Ray cluster at ADDRESS (host:port of its head, `auto`, or RAY_ADDRESS when ADDRESS is `auto`) as
    this program's driver; with token authentication on, RAY_AUTH_MODE=token and RAY_AUTH_TOKEN come from the
    environment, as for Ray's own CLI."""
    if address == "auto" and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
    if address != "auto":
        _check_reachable(address)
    # Ray tries a head that does not let it in once a second, 20 times by default; its head answered already.
    os.environ.setdefault("RAY_NUM_REDIS_GET_RETRIES", "5")
    try:
        import ray
    except ImportError as e:
        raise ClusterError("--cluster needs Ray: pip install 'llm-netboot[cluster]'") from e

    if ray.is_initialized():
        return
    refused = f"the Ray cluster at {address} refused this program's token: set RAY_AUTH_MODE=token and the " \
              "cluster's RAY_AUTH_TOKEN"
    with _native_stderr() as said:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
        except ray.exceptions.AuthenticationError as e:
            raise ClusterError(refused) from e
        except (ConnectionError, RuntimeError, ValueError) as e:
            if "InvalidAuthToken" in said():
                raise ClusterError(refused) from e
            raise ClusterError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}") from e
    _errors_to_stderr()


def _errors_to_stderr() -> None:
    """Ray's driver prints the cluster's error reports (a raylet that died, with its last 20 log lines) to stdout,
    where they would land in the generated text: each becomes one line on stderr. A private hook of Ray's, so
    where it is missing nothing changes."""
    import ray._private.worker as driver

    original = getattr(driver, "print_to_stdstream", None)
    if original is None or getattr(original, "_netboot", False):
        return

    def to_stderr(data: dict, ignore_prefix: bool = False) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix=ignore_prefix)
            return
        text = " ".join(line.strip() for line in data.get("lines", []) if line.strip())
        note(f"ray reports: {text.split(' Possible reasons')[0][:160]}")

    to_stderr._netboot = True  # type: ignore[attr-defined]
    driver.print_to_stdstream = to_stderr


@contextmanager
def _native_stderr() -> Iterator:
    """What Ray's C++ core writes to file descriptor 2 while joining (a warning a second while it retries), kept
    from the terminal and handed to the caller as `said()`: the reason goes into one line of our own."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _check_reachable(address: str) -> None:
    """Fail in seconds, with the address named, where ray.init would retry for a minute."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--cluster {address!r}: expected HOST:PORT of the Ray head (or 'auto')")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ClusterError(f"no Ray cluster answers at {address}: {e.strerror or e}") from e


def live_nodes() -> list[Node]:
    """Nodes that are alive and have CPUs (a head started with --num-cpus 0 coordinates only), the largest
    capacity first."""
    import ray

    nodes = []
    for n in ray.nodes():
        res = n.get("Resources", {})
        if n.get("Alive") and res.get("CPU", 0) > 0:
            address = n.get("NodeManagerAddress", "?")
            nodes.append(Node(n["NodeID"], address, int(res.get("memory", 0)), float(res["CPU"]),
                              _budget(n.get("Labels") or {}, n["NodeID"], address)))
    return sorted(nodes, key=lambda n: (-n.capacity, n.id))


def driver_node() -> str:
    """The id of the node this program is attached to (its machine's raylet)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def room_for_layers(nodes: list[Node], driver: str, table_bytes: int) -> list[int]:
    """What each node can give a stage's layers: its capacity, less the embedding and output table on the node
    where the driver (which keeps them) runs; at least 1 byte, so that every node can still take a layer."""
    return [max(n.capacity - (table_bytes if n.id == driver else 0), 1) for n in nodes]


def _budget(labels: dict, node_id: str, address: str) -> int | None:
    text = labels.get(BUDGET_LABEL)
    if text is None:
        return None
    try:
        return parse_size(text)
    except NetbootError:
        raise ClusterError(f"node {node_id[:8]} ({address}): its label {BUDGET_LABEL}={text!r} is not a size "
                           "(e.g. 500MB, 2GB)") from None
