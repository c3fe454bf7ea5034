"""Cluster benchmark: the default model's layers as 2 and 3 stages on a Ray cluster of loopback nodes, against the
same model in one process, and the raw-TCP floor of a hop, in one run on one machine.

    pip install -e ".[test]"          # includes the cluster extra (Ray)
    python benchmarks/bench_cluster.py --tokens 32 --runs 3

Starts its own cluster (a head that only coordinates and 3 worker nodes, each its own `ray start` process on
127.0.0.2, token authentication on, health checks tuned as the README says) and prints, with the CPU it ran on:
- which mechanism moves a hidden state fastest through 3 trivial actors: the direct path (the stages' own
  connections), chained actor calls, a Ray compiled graph;
- per-token decode time (greedy, median of --runs) for 1 stage in-process and 2 and 3 stages on Ray, over the
  direct path and over actor calls, and the overhead per stage ((t_k - t_1) / k: each stage adds a hop) against the
  round trip of the same 2.5 KB hidden state over a raw loopback TCP connection between two processes;
- aggregate tok/s of 4 concurrent sessions through the engine, in-process and on 2 stages;
- failover: 2 stages, the node of the last stage killed (SIGKILL to its raylet and workers) mid-generation: time from
  the kill to the next token, of which loading the range elsewhere and replaying its caches; the text is checked
  identical to the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from multiprocessing import Process
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' loopback Ray cluster
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_info import cpu_description, netboot_commit  # noqa: E402
from support.ray_nodes import LocalCluster  # noqa: E402

PROMPT = "The three most important inventions of the twentieth century were"
SESSION_PROMPTS = ["Once upon a time", "The capital of France is", "In the beginning", "My favourite recipe is"]


def _echo(port_holder, ready) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port_holder.value = srv.getsockname()[1]
    ready.set()
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(1 << 16)
        if not data:
            return
        conn.sendall(data)


def tcp_round_trip(size: int = 640 * 4, n: int = 2000) -> float:
    """Median seconds for `size` bytes to go to another process over loopback TCP and back."""
    import multiprocessing as mp

    holder, ready = mp.Value("i", 0), mp.Event()
    proc = Process(target=_echo, args=(holder, ready), daemon=True)
    proc.start()
    ready.wait(10)
    s = socket.create_connection(("127.0.0.1", holder.value))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload, times = b"x" * size, []
    for _ in range(n):
        t = time.perf_counter()
        s.sendall(payload)
        got = 0
        while got < size:
            got += len(s.recv(size - got))
        times.append(time.perf_counter() - t)
    s.close()
    proc.join(5)
    return statistics.median(times)


class Echo:
    def f(self, h):
        return h


def _echo_stage():
    """A StageWorker whose layers are none: it hands on what it gets, over the same direct path as real stages."""
    from netboot.cluster.stage import StageWorker

    class EchoStage(StageWorker):
        def _run(self, h, batch):
            return h

    return EchoStage


def mechanisms(cluster: LocalCluster, hops: int = 3, n: int = 200) -> dict[str, float]:
    """Median ms to pass a 2.5 KB hidden state from the driver through `hops` trivial actors, one per node, and
    back: the direct path (the stages' own connections, what the pipeline uses), chained actor calls (its
    fallback) and a Ray compiled graph (channels between the actors, set up once)."""
    import numpy as np
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from netboot.cluster.direct import DirectPath

    def pinned(cls, node):
        return ray.remote(cls).options(num_cpus=0, max_concurrency=2,
                                       scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, False))

    h = np.zeros((1, 640), np.float32)
    out: dict[str, float] = {}
    stages = [pinned(_echo_stage(), node).remote() for node in cluster.nodes[:hops]]
    path = DirectPath(stages, 60.0)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        path.receive(path.send(h, [["bench", 0, 1]]), 10.0)
        times.append(time.perf_counter() - t)
    out["direct path"] = 1000 * statistics.median(times)
    path.close()
    actors = [pinned(Echo, node).remote() for node in cluster.nodes[:hops]]
    times = []
    for _ in range(n):
        t, ref = time.perf_counter(), h
        for a in actors:
            ref = a.f.remote(ref)
        ray.get(ref)
        times.append(time.perf_counter() - t)
    out["actor calls"] = 1000 * statistics.median(times)
    try:
        from ray.dag import InputNode

        with InputNode() as inp:
            dag = inp
            for a in actors:
                dag = a.f.bind(dag)
        compiled = dag.experimental_compile()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            ray.get(compiled.execute(h))
            times.append(time.perf_counter() - t)
        out["compiled graph"] = 1000 * statistics.median(times)
        compiled.teardown()
    except Exception as e:  # noqa: BLE001 - reported, not hidden: the figure is then missing
        print(f"compiled graph: could not run here: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return out  # the actors stay until the cluster stops: killing them under a failed graph floods stderr


def decode_ms(model, tokenizer, tokens: int, runs: int) -> tuple[float, str]:
    from netboot.engine.generate import Generation
    from netboot.engine.sampling import SamplingParams

    per_token, text = [], ""
    for _ in range(runs):
        gen = Generation(model, tokenizer, tokenizer.encode(PROMPT), max_tokens=tokens,
                         params=SamplingParams(temperature=0))
        text = gen.text()
        per_token.append(gen.stats.decode_seconds / max(1, gen.stats.generated_tokens - 1))
    return 1000 * statistics.median(per_token), text


def split_of_a_step(pipeline, tokenizer, tokens: int) -> tuple[float, float]:
    """Ms per step the driver waits for the stages, and of it the stages' compute (their own timers): the rest
    is the hops (and any wait between them)."""
    import ray

    from netboot.engine.generate import Generation
    from netboot.engine.sampling import SamplingParams

    def busy() -> float:
        return sum(r["busy"] for r in ray.get([s.actor.ready.remote() for s in pipeline.stages]))

    gen = Generation(pipeline, tokenizer, tokenizer.encode(PROMPT), max_tokens=2,
                     params=SamplingParams(temperature=0))
    gen.text()  # the prompt, outside the figures
    waited, computed = pipeline.stepped, busy()
    gen = Generation(pipeline, tokenizer, [2], max_tokens=tokens, params=SamplingParams(temperature=0))
    gen.text()
    steps = gen.stats.generated_tokens
    return 1000 * (pipeline.stepped - waited) / steps, 1000 * (busy() - computed) / steps


def sessions_tps(model, tokenizer, tokens: int) -> float:
    from netboot.engine.requests import Request
    from netboot.engine.sampling import SamplingParams
    from netboot.engine.scheduler import Engine

    with Engine(model, tokenizer, parallel=4, context=512) as engine:
        start = time.perf_counter()
        handles = [engine.submit(Request(tokenizer.encode(p), tokens, SamplingParams(temperature=0)))
                   for p in SESSION_PROMPTS]
        total = sum(h.text()[1].completion_tokens for h in handles)
        return total / (time.perf_counter() - start)


def failover(cluster: LocalCluster, loaded, tokens: int, expected: str) -> dict:
    from netboot.engine.generate import Generation
    from netboot.engine.sampling import SamplingParams

    model, tok = loaded.model, loaded.tokenizer
    gen = Generation(model, tok, tok.encode(PROMPT), max_tokens=tokens, params=SamplingParams(temperature=0))
    stamps: list[float] = []
    pieces: list[str] = []
    victim = cluster.node(model.stages[-1].node.id[:8])

    def killer() -> None:
        while len(stamps) < tokens // 3:
            time.sleep(0.001)
        stamps.append(-time.perf_counter())  # the kill, marked negative
        victim.kill()

    threading.Thread(target=killer, daemon=True).start()
    for piece in gen.stream():
        pieces.append(piece)
        stamps.append(time.perf_counter())
    kill_at = -next(t for t in stamps if t < 0)
    after = min(t for t in stamps if t > kill_at)
    r = model.recoveries[-1]
    return {"to_next_token": after - kill_at, "load": r.load, "replay": r.replay, "positions": r.positions,
            "identical": "".join(pieces) == expected}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"{cpu_description()}; netboot {netboot_commit()}")
    rtt = tcp_round_trip()
    cluster = LocalCluster().start(workers=3)
    try:
        import netboot
        from netboot.loader import load

        for name, ms in mechanisms(cluster).items():
            print(f"driver -> 3 actors (one per node) -> driver, {name}: {ms:.2f} ms, {ms / 3:.2f} ms per actor")

        local = netboot.load()
        t1, expected = decode_ms(local.model, local.tokenizer, args.tokens, args.runs)
        rows = [("1 stage, in-process", t1, None, True)]
        splits: list[tuple[str, float, float, float]] = []
        staged = {}
        for k in (2, 3):
            staged[k] = load(None, cluster=cluster.address, stages=k)
            import ray

            ray.get([s.actor.ready.remote() for s in staged[k].model.standby])  # its kernels loaded: no overlap
            for transport, name in (("direct", "direct path"), ("ray", "Ray actor calls")):
                staged[k].model.transport = transport
                tk, text = decode_ms(staged[k].model, staged[k].tokenizer, args.tokens, args.runs)
                rows.append((f"{k} stages, {name}", tk, (tk - t1) / k, text == expected))
                waited, computed = split_of_a_step(staged[k].model, staged[k].tokenizer, args.tokens)
                splits.append((f"{k} stages, {name}", waited, computed, (waited - computed) / (k + 1)))
            staged[k].model.transport = "direct"
        print(f"\nraw loopback TCP round trip of a 2.5 KB hidden state: {1000 * rtt:.3f} ms")
        print("| placement | ms/token | overhead per stage boundary | vs raw TCP | greedy text identical |")
        print("|---|---:|---:|---:|---|")
        for name, ms, hop, same in rows:
            extra = f"{hop:.2f} ms | {hop / (1000 * rtt):.0f}x" if hop is not None else "- | -"
            print(f"| {name} | {ms:.2f} | {extra} | {same} |")
        print("\nOne decode step as the driver waits for it: the stages' compute (their own timers) and the rest, the")
        print(f"hops (k stages: k + 1 of them) and the waits between them; means over {args.tokens} steps.")
        print("| placement | driver waits, ms/step | stages compute | hops | per hop |")
        print("|---|---:|---:|---:|---:|")
        for name, waited, computed, hop in splits:
            print(f"| {name} | {waited:.2f} | {computed:.2f} | {waited - computed:.2f} | {hop:.2f} |")
        local_tps = sessions_tps(local.model, local.tokenizer, args.tokens)
        ray_tps = sessions_tps(staged[2].model, staged[2].tokenizer, args.tokens)
        print(f"\n4 concurrent sessions, aggregate tok/s: in-process {local_tps:.1f}, 2 stages {ray_tps:.1f} "
              f"({ray_tps / local_tps:.2f}x)")
        f = failover(cluster, staged[2], args.tokens, expected)
        print(f"\nfailover (2 stages, last stage's node killed after {args.tokens // 3} tokens): next token "
              f"{f['to_next_token']:.2f} s after the kill; of it, loading the range elsewhere {f['load']:.2f} s and "
              f"replaying {f['positions']} positions {f['replay']:.2f} s; text identical: {f['identical']}")
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
