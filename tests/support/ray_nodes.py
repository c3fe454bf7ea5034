"""A real Ray cluster on the loopback interface (127.0.0.2, see HOST) for the tests: a head (no CPUs: it only
coordinates) and worker nodes, each a `ray start --block` process in its own session, with its own ports, token
authentication on and health checks tuned so that a dead node is declared dead within about 2 s. A node is killed
as a crashed machine would die: its `ray start`, raylet and every worker under it, SIGKILL at once. Nothing is
stopped by name (`ray stop` would kill every Ray process on the machine): only the processes started here, by
PID."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
# Loopback, but not 127.0.0.1: Ray replaces 127.0.0.1 (and "localhost") in node and head addresses with the
# machine's outward-facing address, which would take the cluster's traffic off the loopback interface.
HOST = "127.0.0.2"
HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
          "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "500"}
PORTS_PER_NODE = 100  # 10 for the node's services, 90 for its workers


def _free_block(size: int) -> int:
    """A base port under Linux's ephemeral range (32768-) whose next `size` ports are free now."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - size, 100)
        if all(_free(p) for p in range(base, base + size)):
            return base
    raise RuntimeError("no free block of ports for a Ray cluster")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


@dataclass
class Node:
    process: subprocess.Popen
    node_id: str = ""

    def kill(self) -> None:
        """SIGKILL to the node's `ray start`, its raylet and every process under them, at once."""
        try:
            root = psutil.Process(self.process.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for p in family:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # its session: anything that left the tree
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=10)


@dataclass
class LocalCluster:
    max_nodes: int = 6
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    nodes: list[Node] = field(default_factory=list)
    head: Node | None = None

    def __post_init__(self) -> None:
        self.base = _free_block(PORTS_PER_NODE * (self.max_nodes + 1))
        self.port = self.base + 1  # the GCS
        self.temp = tempfile.mkdtemp(prefix="nbray-", dir="/tmp")  # short: Ray puts unix sockets under it
        if "ray" in sys.modules:
            raise RuntimeError("Ray reads its token once, when imported: start the LocalCluster before importing it")
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token})  # for this driver
        self.env = {**os.environ, **HEALTH, "RAY_USAGE_STATS_ENABLED": "0"}
        self._started = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _ports(self) -> list[str]:
        p = self.base + PORTS_PER_NODE * self._started + 2
        self._started += 1
        if self._started > self.max_nodes + 1:
            raise RuntimeError("more nodes than this cluster reserved ports for")
        return ["--node-ip-address", HOST, "--disable-usage-stats", "--block",
                "--object-manager-port", str(p), "--node-manager-port", str(p + 1),
                "--dashboard-agent-listen-port", str(p + 2), "--dashboard-agent-grpc-port", str(p + 3),
                "--runtime-env-agent-port", str(p + 4), "--metrics-export-port", str(p + 5),
                "--min-worker-port", str(p + 8), "--max-worker-port", str(p + PORTS_PER_NODE - 3)]

    def _spawn(self, args: list[str], name: str) -> Node:
        log = open(Path(self.temp) / f"{name}.log", "wb")  # noqa: SIM115 - the process writes it until killed
        proc = subprocess.Popen([RAY, "start", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        return Node(proc)

    def start(self, workers: int) -> LocalCluster:
        ports = self._ports()
        self.head = self._spawn(["--head", "--port", str(self.port), "--num-cpus", "0", "--include-dashboard",
                                 "false", "--ray-client-server-port", str(self.base), "--temp-dir", self.temp,
                                 *ports], "head")
        deadline = time.monotonic() + 90
        while not _listening(self.port):
            self._check_alive(self.head, "head")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start: see {self.temp}/head.log")
            time.sleep(0.2)
        self.connect()
        for _ in range(workers):
            self.add_node()
        return self

    def connect(self) -> None:
        """This test process joins as a driver (token from the environment, as for any Ray program)."""
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, logging_level="ERROR", configure_logging=False)

    def add_node(self, cpus: int = 1, labels: dict[str, str] | None = None) -> Node:
        """One more worker node (with these node labels), started after the last has registered (nodes started
        at once collide on the names of their sockets)."""
        import ray

        known = {n["NodeID"] for n in ray.nodes()}
        extra = ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())] if labels else []
        node = self._spawn(["--address", self.address, "--num-cpus", str(cpus), *extra, *self._ports()],
                           f"node{len(self.nodes)}")
        deadline = time.monotonic() + 90
        while True:
            new = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] not in known]
            if new:
                node.node_id = new[0]
                break
            self._check_alive(node, f"node{len(self.nodes)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"a Ray node did not register: see {self.temp}")
            time.sleep(0.2)
        self.nodes.append(node)
        return node

    def node(self, node_id_prefix: str) -> Node:
        return next(n for n in self.nodes if n.node_id.startswith(node_id_prefix))

    def _check_alive(self, node: Node, name: str) -> None:
        if node.process.poll() is not None:
            tail = (Path(self.temp) / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"ray start ({name}) exited {node.process.returncode}:\n{tail}")

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for node in [*self.nodes, *([self.head] if self.head else [])]:
            node.kill()
        shutil.rmtree(self.temp, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return True
    except OSError:
        return False
