"""Engine benchmark: netboot vs llama.cpp (llama-cpp-python) on the default model, in one run, same machine.

    pip install -e ".[demo]" llama-cpp-python
    python benchmarks/bench_engine.py --runs 5 --threads 2

Each measurement runs in a fresh child process (so peak RSS is that engine's own): load time (from importing the
engine, which loads its compiled code, to a model and tokenizer ready), prefill tok/s on a 100-token prompt,
decode tok/s over 128 greedy tokens (end-of-sequence ignored, so both decode the same count), and peak RSS.
Prints the CPU, the versions measured, the medians and each ratio netboot / llama.cpp.

Then, unless --no-contention, the same decode with one core kept busy by another process (`while True: pass`):
netboot at its default thread count (as `netboot run` without --threads), netboot with --threads 1 and 2, and
llama.cpp with 1 and 2 threads; the issue's goals: netboot's default at least the best llama.cpp (1.0x) and at
least 0.9x of the best of netboot's fixed counts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from importlib.metadata import version

from cpu_info import cpu_description, netboot_commit

DEFAULT = None  # a netboot case's thread count meaning: none given, netboot's default (as `netboot run` alone)

PROMPT = (
    "The history of computing is a story of machines that grew smaller and faster while the problems they solved "
    "grew larger. Early computers filled rooms, consumed enormous amounts of power, and were programmed by rewiring "
    "panels or feeding punched cards. The invention of the transistor, and later the integrated circuit, changed "
    "everything: suddenly thousands, then millions, then billions of switches could be placed on a single chip. "
    "Software followed the same path, from hand-written machine code to high-level languages and operating systems."
)


def prompt_ids(model_path: str, n: int) -> list[int]:
    from netboot.formats import open_model

    ids = open_model(model_path).tokenizer.encode(PROMPT)
    if len(ids) < n:
        raise SystemExit(f"benchmark prompt has only {len(ids)} tokens, {n} needed")
    return ids[:n]


def worker_netboot(model_path: str, ids: list[int], n_decode: int) -> dict:
    # NETBOOT_THREADS_FIXED=0 in the environment: no thread count given (netboot's threads adapt, as under
    # `netboot run`); NETBOOT_THREADS_FIXED=1: one given, as --threads N.
    start = time.perf_counter()  # load: from the import (numba and the cached kernels load inside netboot.load)
    import numpy as np

    import netboot

    loaded = netboot.load(model_path)
    loaded.tokenizer  # noqa: B018 - building the vocabulary is part of loading
    load = time.perf_counter() - start
    model = loaded.model
    cache = model.new_cache()
    start = time.perf_counter()
    logits = model.forward(ids, cache, 0)
    prefill = time.perf_counter() - start
    pos, token = len(ids), int(np.argmax(logits))
    start = time.perf_counter()
    for _ in range(n_decode):
        token = int(np.argmax(model.forward([token], cache, pos)))
        pos += 1
    decode = time.perf_counter() - start
    return {"load_s": load, "prefill_s": prefill, "decode_s": decode}


def worker_llama_cpp(model_path: str, ids: list[int], n_decode: int, threads: int) -> dict:
    start = time.perf_counter()  # load: from the import, which loads llama.cpp's libraries
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    load = time.perf_counter() - start
    start = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - start
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    start = time.perf_counter()
    for _ in range(n_decode):
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    decode = time.perf_counter() - start
    return {"load_s": load, "prefill_s": prefill, "decode_s": decode}


def run_worker(engine: str, model_path: str, ids: list[int], n_decode: int, threads: int | None) -> dict:
    """One measurement in a fresh process; threads DEFAULT (netboot only): none given, as `netboot run` alone."""
    env = dict(os.environ)
    # As netboot's CLI sets them: --threads N, else the available cores (llama.cpp takes its count from the call).
    env["NETBOOT_THREADS_FIXED"] = "0" if threads is DEFAULT else "1"
    if threads is DEFAULT:
        from netboot.cli import available_cores  # here, not at the top: the workers time netboot's import

        threads = available_cores()
    env.update(OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", engine, "--model", model_path, "--threads", str(threads),
           "--decode", str(n_decode), "--ids", json.dumps(ids)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{engine} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(run: int, label: str, r: dict, ids: list[int], n_decode: int) -> None:
    print(f"run {run + 1} {label:<20}: load {r['load_s']:.2f} s, prefill {len(ids) / r['prefill_s']:.1f} tok/s, "
          f"decode {n_decode / r['decode_s']:.2f} tok/s, peak RSS {r['peak_rss_mb']:.0f} MB", file=sys.stderr)


# The contention cases: (row label, engine, threads); alternating engines, as the uncontended runs do.
CONTENTION = [("netboot default", "netboot", DEFAULT), ("llama.cpp 1 thread", "llama.cpp", 1),
              ("netboot --threads 1", "netboot", 1), ("llama.cpp 2 threads", "llama.cpp", 2),
              ("netboot --threads 2", "netboot", 2)]


def contention(args: argparse.Namespace, ids: list[int]) -> None:
    """Decode tok/s of each CONTENTION case while a `while True: pass` process keeps one core busy."""
    decode: dict[str, list[float]] = {label: [] for label, _, _ in CONTENTION}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for run in range(args.runs):
            for label, engine, threads in CONTENTION:
                r = run_worker(engine, args.model, ids, args.decode, threads)
                decode[label].append(args.decode / r["decode_s"])
                report(run, label, r, ids, args.decode)
    finally:
        busy.kill()
        busy.wait()
    tok_s = {label: statistics.median(values) for label, values in decode.items()}
    print(f"\nunder contention (one core kept busy by another process): decode tok/s, medians of {args.runs} runs")
    print(f"| {'case':<20} | {'decode tok/s':>12} |")
    print(f"|{'-' * 22}|{'-' * 13}:|")
    for label in ("netboot default", "netboot --threads 1", "netboot --threads 2", "llama.cpp 1 thread",
                  "llama.cpp 2 threads"):
        print(f"| {label:<20} | {tok_s[label]:>12.2f} |")
    ours = tok_s["netboot default"]
    for name, peers, goal in (("best llama.cpp", ["llama.cpp 1 thread", "llama.cpp 2 threads"], 1.0),
                              ("best fixed netboot", ["netboot --threads 1", "netboot --threads 2"], 0.9)):
        best = max(peers, key=tok_s.__getitem__)
        ratio = ours / tok_s[best]
        print(f"netboot default / {name} ({best}): {ratio:.3f}x (goal >= {goal:.1f}x: "
              f"{'met' if ratio >= goal else 'missed'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="GGUF model (default: the packaged Gemma 3 270M)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--decode", type=int, default=128)
    parser.add_argument("--no-contention", action="store_true", help="skip the runs with one core kept busy")
    parser.add_argument("--worker", choices=["netboot", "llama.cpp"], help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import resource

        ids = json.loads(args.ids)
        if args.worker == "netboot":
            result = worker_netboot(args.model, ids, args.decode)
        else:
            result = worker_llama_cpp(args.model, ids, args.decode, args.threads)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` ends the busy process on a kill too
    print(cpu_description())
    print(f"netboot {netboot_commit()}; llama-cpp-python {version('llama-cpp-python')}", flush=True)
    if args.model is None:
        from netboot.default_model import default_model_path

        args.model = str(default_model_path())
    ids = prompt_ids(args.model, args.prompt_tokens)
    results: dict[str, list[dict]] = {"netboot": [], "llama.cpp": []}
    for run in range(args.runs):
        for engine in results:  # alternate engines so drift in machine load hits both alike
            r = run_worker(engine, args.model, ids, args.decode, args.threads)
            results[engine].append(r)
            report(run, engine, r, ids, args.decode)

    def median(engine: str, key: str) -> float:
        return statistics.median(r[key] for r in results[engine])

    rows = [
        ("prefill tok/s", lambda e: len(ids) / median(e, "prefill_s"), True),
        ("decode tok/s", lambda e: args.decode / median(e, "decode_s"), True),
        ("load s", lambda e: median(e, "load_s"), False),
        ("peak RSS MB", lambda e: median(e, "peak_rss_mb"), False),
    ]
    print(f"model: {args.model}; threads {args.threads}; prompt {len(ids)} tokens; decode {args.decode} tokens; "
          f"medians of {args.runs} runs")
    print(f"| {'metric':<14} | {'netboot':>10} | {'llama.cpp':>10} | {'netboot / llama.cpp':>19} |")
    print(f"|{'-' * 16}|{'-' * 11}:|{'-' * 11}:|{'-' * 20}:|")
    for name, value, _higher_is_better in rows:
        ours, peer = value("netboot"), value("llama.cpp")
        print(f"| {name:<14} | {ours:>10.2f} | {peer:>10.2f} | {ours / peer:>18.3f}x |")
    if not args.no_contention:
        contention(args, ids)


if __name__ == "__main__":
    main()
