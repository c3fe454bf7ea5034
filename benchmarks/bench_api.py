"""Serving benchmark: netboot's OpenAI-compatible API against llama-cpp-python's server, same model, same threads,
one run on one machine.

    pip install -e ".[test]" "llama-cpp-python[server]"
    python benchmarks/bench_api.py --threads 2 --tokens 48

For 1, 4 and 8 concurrent clients, each streaming one completion (a distinct prompt each, so no reply reuses
another's cache; greedy; `max_tokens` = --tokens): aggregate decode tok/s (completion tokens of all clients over the
wall time from the first request to the last token, prefill included), the p50/p95 time to first token, and each
client's decode tok/s (first token to last, as `netboot run --stats` counts it). Then one client and `netboot run
--stats` alone, in turns, three times: the one-client ratio. Servers: `netboot api`
(resident), `netboot api --max-memory 240MB --kv-memory 24MB` (the output table and some layers streamed from disk: a
step's reads are shared by the batch) and
`python -m llama_cpp.server`. Prints the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from processes import free_port, stop  # noqa: E402

PROMPT = ("Write a long story about a lighthouse keeper who finds a message in a bottle. Request {k}. "
          "The story begins on a stormy night when")
CLIENTS = (1, 4, 8)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until the server lists its models (llama-cpp-python's server has no /health)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{base} not ready after {timeout:.0f} s")


def start(cmd: list[str], port: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, proc)
    return proc, base


def stream_one(base: str, model: str, prompt: str, tokens: int, out: dict) -> None:
    """One streamed completion: when it was sent, when its first text came, when it ended, how many tokens."""
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    out["sent"] = time.perf_counter()
    pieces = 0
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                out["tokens"] = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if choice.get("text"):
                    pieces += 1
                    out.setdefault("first", time.perf_counter())
                    out["last"] = time.perf_counter()
    out["end"] = time.perf_counter()
    out.setdefault("tokens", pieces)  # a server without the usage chunk: one piece per token


def round_of(base: str, model: str, clients: int, tokens: int, offset: int) -> dict:
    results = [{} for _ in range(clients)]
    threads = [threading.Thread(target=stream_one, args=(base, model, PROMPT.format(k=offset + i), tokens, res))
               for i, res in enumerate(results)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any("end" not in r for r in results):
        raise SystemExit("a client got no complete reply")
    wall = max(r["end"] for r in results) - min(r["sent"] for r in results)
    ttft = [r["first"] - r["sent"] for r in results if "first" in r]
    # Each client's decode rate, from its first token to its last (not to the stream's end, which adds the closing
    # chunks and the connection's end): what `netboot run --stats` calls decode tok/s.
    decode = [(r["tokens"] - 1) / (r["last"] - r["first"]) for r in results
              if "first" in r and r["tokens"] > 1 and r["last"] > r["first"]]
    return {"tok_s": sum(r["tokens"] for r in results) / wall, "ttft": ttft, "decode": decode}


def measure(name: str, cmd: list[str], port: int, model: str, tokens: int, rounds: int,
            alone: dict | None = None) -> dict[int, dict]:
    """The table of `name` by client count; with `alone` (netboot run's model path and threads), also one client
    and `netboot run` taken in turns, into alone["pairs"]: this machine's speed drifts, so the two are compared
    close in time."""
    proc, base = start(cmd, port)
    table = {}
    try:
        stream_one(base, model, PROMPT.format(k=-1), 4, {})  # warm: first request's one-time costs
        offset = 0
        for clients in CLIENTS:
            runs = []
            for _ in range(rounds):
                runs.append(round_of(base, model, clients, tokens, offset))
                offset += clients
            ttft = sorted(t for r in runs for t in r["ttft"])
            table[clients] = {"tok_s": statistics.median(r["tok_s"] for r in runs),
                              "decode": statistics.median(d for r in runs for d in r["decode"]),
                              "p50": statistics.median(ttft), "p95": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))]}
            print(f"  {name:28s} {clients} clients: {table[clients]['tok_s']:6.1f} tok/s  ttft p50 "
                  f"{table[clients]['p50']:.2f} s p95 {table[clients]['p95']:.2f} s", flush=True)
        if alone is not None:
            for k in range(3):
                one = round_of(base, model, 1, tokens, 1000 + k)["decode"][0]
                ran = run_decode(alone["path"], alone["threads"], tokens, runs=1)[0]
                alone.setdefault("pairs", []).append((one, ran))
    finally:
        stop(proc)
    return table


def run_decode(model_path: str, threads: int, tokens: int, runs: int = 3) -> list[float]:
    """`netboot run`'s own decode tok/s on the same prompts (the one-client reference), `runs` times."""
    rates = []
    for k in range(runs):
        out = subprocess.run([sys.executable, "-m", "netboot", "run", model_path, "-p", PROMPT.format(k=k), "-n",
                              str(tokens), "--temperature", "0", "--threads", str(threads), "--stats"],
                             capture_output=True, text=True, check=True)
        rates.append(float(re.search(r"decode: \d+ tokens, ([\d.]+) tok/s", out.stderr).group(1)))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=48, help="max_tokens of each reply (default 48)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per client count; medians (default 2)")
    parser.add_argument("--skip-peer", action="store_true", help="netboot only")
    parser.add_argument("--budget", default="240MB",
                        help="--max-memory of the streamed server (default 240MB: the API process holds ~140 MB "
                             "before weights, ~15 MB more than netboot run)")
    args = parser.parse_args()
    from netboot.default_model import default_model_path

    path = str(default_model_path())
    model = Path(path).stem
    print(f"CPU: {cpu_name()} | threads {args.threads} | model {model} | {args.tokens} tokens per reply")
    netboot = [sys.executable, "-m", "netboot", "api", path, "--threads", str(args.threads), "--parallel", "8",
               "--ctx-size", "256"]
    results = {}
    port = free_port()
    alone = {"path": path, "threads": args.threads}
    results["netboot api"] = measure("netboot api", [*netboot, "--port", str(port)], port, model, args.tokens,
                                     args.rounds, alone)
    port = free_port()
    results["netboot api --max-memory"] = measure(
        f"netboot api --max-memory {args.budget}",
        [*netboot, "--max-memory", args.budget, "--kv-memory", "24MB", "--port", str(port)], port, model,
        args.tokens, args.rounds)
    if not args.skip_peer:
        port = free_port()
        peer = [sys.executable, "-m", "llama_cpp.server", "--model", path, "--n_threads", str(args.threads),
                "--n_ctx", "2048", "--port", str(port), "--host", "127.0.0.1"]
        results["llama-cpp-python server"] = measure("llama-cpp-python server", peer, port, model, args.tokens,
                                                     args.rounds)
    report(results, alone["pairs"], args.budget)


def report(results: dict, pairs: list[tuple[float, float]], budget: str) -> None:
    api, streamed = results["netboot api"], results["netboot api --max-memory"]
    ratios = [one / ran for one, ran in pairs]
    print("\none client through the API, then `netboot run` alone, in turns (decode tok/s): "
          + ", ".join(f"{one:.1f} / {ran:.1f}" for one, ran in pairs))
    print(f"one client's decode tok/s through the API / netboot run's: median {statistics.median(ratios):.2f}x "
          f"(each pair: {', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.95)")
    print(f"8 clients / 1 client (resident): {api[8]['tok_s'] / api[1]['tok_s']:.2f}x (goal >= 3)")
    print(f"8 clients / 1 client (--max-memory {budget}): {streamed[8]['tok_s'] / streamed[1]['tok_s']:.2f}x "
          "(goal >= 5)")
    peer = results.get("llama-cpp-python server")
    if peer:
        for clients in CLIENTS:
            ratio = api[clients]["tok_s"] / peer[clients]["tok_s"]
            print(f"{clients} clients, netboot / llama-cpp-python: {ratio:.2f}x aggregate tok/s; ttft p50 "
                  f"{api[clients]['p50']:.2f} s vs {peer[clients]['p50']:.2f} s")


if __name__ == "__main__":
    main()
