"""Engine benchmark: netboot vs llama.cpp (llama-cpp-python) on the default model, in one run, same machine.

    pip install -e ".[demo]" llama-cpp-python
    python benchmarks/bench_engine.py --runs 3 --threads 2

Each measurement runs in a fresh child process (so peak RSS is that engine's own): load time, prefill tok/s on a
100-token prompt, decode tok/s over 128 greedy tokens (end-of-sequence ignored, so both decode the same count), and
peak RSS. Prints the medians and each ratio netboot / llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

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
    import numpy as np

    import netboot

    start = time.perf_counter()
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
    import numpy as np
    from llama_cpp import Llama

    start = time.perf_counter()
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


def run_worker(engine: str, model_path: str, ids: list[int], n_decode: int, threads: int) -> dict:
    # As `netboot run --threads N` sets them (llama.cpp takes its thread count from the call).
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", engine, "--model", model_path, "--threads", str(threads),
           "--decode", str(n_decode), "--ids", json.dumps(ids)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{engine} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="GGUF model (default: the packaged Gemma 3 270M)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--decode", type=int, default=128)
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

    if args.model is None:
        from netboot.default_model import default_model_path

        args.model = str(default_model_path())
    ids = prompt_ids(args.model, args.prompt_tokens)
    results: dict[str, list[dict]] = {"netboot": [], "llama.cpp": []}
    for run in range(args.runs):
        for engine in results:  # alternate engines so drift in machine load hits both alike
            r = run_worker(engine, args.model, ids, args.decode, args.threads)
            results[engine].append(r)
            print(f"run {run + 1} {engine:<9}: load {r['load_s']:.2f} s, prefill {len(ids) / r['prefill_s']:.1f} "
                  f"tok/s, decode {args.decode / r['decode_s']:.2f} tok/s, peak RSS {r['peak_rss_mb']:.0f} MB",
                  file=sys.stderr)

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


if __name__ == "__main__":
    main()
