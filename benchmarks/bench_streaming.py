"""Layer streaming benchmark: decode time per token when weights stream, against the time their bytes take to
arrive, measured in the same run on the same machine.

    python benchmarks/bench_streaming.py --budget 160MB --tokens 16

For disk and for the network (`netboot serve` on loopback), each in a fresh child process under --max-memory:
streamed decode ms per token with prefetch on (the default) and off (AirLLM-style: read a layer, then compute it),
bytes streamed per token, and the bound those bytes set: bytes per token / throughput. Throughput is measured in
the same run two ways: by the peer (dd with direct reads for the disk, curl from the same server for the network)
and by netboot's own reader alone (one stream over the file in 2 MiB pieces, as streaming reads, no compute). Also
the fully resident decode speed, and each child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from processes import start_netboot_serve, stop

PROMPT = "The history of computing is a story of machines that grew smaller and faster"
MB = 10**6


def worker(model: str, budget: int | None, prefetch: int, tokens: int) -> dict:
    import numpy as np

    import netboot
    from netboot import memory

    loaded = netboot.load(model, max_memory=budget, positions=64, prefetch=prefetch)
    model_ = loaded.model
    ids = loaded.tokenizer.encode(PROMPT)
    cache = model_.new_cache()
    logits = model_.forward(ids, cache, 0)
    source = loaded.source
    before = source.bytes_read if source is not None else 0
    times = []
    pos = len(ids)
    for _ in range(tokens):
        start = time.perf_counter()
        logits = model_.forward([int(np.argmax(logits))], cache, pos)
        times.append(time.perf_counter() - start)
        pos += 1
    streamed = (source.bytes_read - before) / tokens if source is not None else 0
    return {"ms_per_token": 1000 * statistics.median(times), "bytes_per_token": streamed,
            "peak_rss": memory.peak_rss()}


def run_worker(model: str, budget: int | None, prefetch: int, tokens: int, threads: int) -> dict:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    if budget:
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # as `netboot run --max-memory` sets it
    cmd = [sys.executable, __file__, "--worker", model, "--worker-budget", str(budget or 0), "--prefetch",
           str(prefetch), "--tokens", str(tokens)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed ({model}, budget {budget}, prefetch {prefetch}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def reader_throughput(source, chunk: int, total: int) -> float:
    """Bytes/s of netboot's own reader over the model's first `total` bytes, read as streaming reads them: one
    stream (one Range request over HTTP) taken `chunk` at a time."""
    from netboot.sources.base import aligned_buffer

    buf = aligned_buffer(chunk)
    total = min(total, source.size) // chunk * chunk
    start = time.perf_counter()
    stream = source.stream(0, total)
    for _ in range(total // chunk):
        stream.read(chunk, buf)
    stream.close()
    return total / (time.perf_counter() - start)


def dd_throughput(path: str) -> float:
    out = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4M", "iflag=direct"], capture_output=True,
                         text=True, check=True)
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out.stderr)
    return int(m.group(1)) / float(m.group(2))


def curl_throughput(url: str) -> float:
    if shutil.which("curl") is None:
        raise SystemExit("curl is not installed (apt-get install curl): it is the network peer")
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
                         capture_output=True, text=True, check=True)
    size, seconds = out.stdout.split()
    return int(size) / float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="GGUF model (default: the packaged Gemma 3 270M)")
    parser.add_argument("--budget", default="160MB", help="--max-memory of the streamed runs")
    parser.add_argument("--tokens", type=int, default=16, help="decoded tokens per run (median per token)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement (medians are shown)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-budget", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefetch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.worker_budget or None, args.prefetch, args.tokens)))
        return

    from netboot.sizes import parse_size

    if args.model is None:
        from netboot.default_model import default_model_path

        args.model = str(default_model_path())
    budget = parse_size(args.budget)
    model = Path(args.model)
    server, origin = start_netboot_serve(model.parent)
    url = f"{origin}/{model.name}"
    try:
        from netboot.sources.file import FileSource
        from netboot.sources.http import HttpSource

        resident = run_worker(args.model, None, 1, args.tokens, args.threads)
        print(f"resident: {resident['ms_per_token']:.1f} ms/token, peak RSS {resident['peak_rss'] / MB:.0f} MB",
              file=sys.stderr)
        size = model.stat().st_size
        # Rounds: this machine's disk and CPU drift with its neighbours, so every figure is measured again in each
        # round, the throughputs right before the streamed runs they bound, and the medians are compared.
        samples: dict[tuple, list] = {}
        for _ in range(args.rounds):
            for kind, ref in (("disk", args.model), ("network", url)):
                if kind == "disk":
                    samples.setdefault(("peer", kind), []).append(dd_throughput(args.model))
                    samples.setdefault(("reader", kind), []).append(
                        reader_throughput(FileSource(args.model), 2 << 20, size))
                else:
                    samples.setdefault(("peer", kind), []).append(curl_throughput(url))
                    samples.setdefault(("reader", kind), []).append(reader_throughput(HttpSource(url), 2 << 20, size))
                for prefetch in (1, 0):
                    r = run_worker(ref, budget, prefetch, args.tokens, args.threads)
                    samples.setdefault((kind, prefetch), []).append(r)
                    print(f"{kind} prefetch {'on' if prefetch else 'off'}: {r['ms_per_token']:.1f} ms/token, "
                          f"{r['bytes_per_token'] / MB:.1f} MB/token, peak RSS {r['peak_rss'] / MB:.0f} MB",
                          file=sys.stderr)
        peers = {kind: statistics.median(samples[("peer", kind)]) for kind in ("disk", "network")}
        ours = {kind: statistics.median(samples[("reader", kind)]) for kind in ("disk", "network")}
        rows = []
        for kind in ("disk", "network"):
            for prefetch in (1, 0):
                runs = samples[(kind, prefetch)]
                r = {key: statistics.median(x[key] for x in runs) for key in runs[0]}
                rows.append((kind, "on" if prefetch else "off", r, 1000 * r["bytes_per_token"] / peers[kind],
                             1000 * r["bytes_per_token"] / ours[kind]))
    finally:
        stop(server)

    print(f"model: {args.model}; --max-memory {args.budget}; threads {args.threads}; {args.tokens} decoded tokens, "
          f"median per token, medians of {args.rounds} rounds; resident decode {resident['ms_per_token']:.1f} "
          "ms/token")
    print(f"throughput: disk {peers['disk'] / MB:.0f} MB/s (dd iflag=direct), {ours['disk'] / MB:.0f} MB/s "
          f"(netboot's reader); network {peers['network'] / MB:.0f} MB/s (curl from netboot serve), "
          f"{ours['network'] / MB:.0f} MB/s (netboot's reader)")
    print("| source  | prefetch | MB/token | ms/token | bound (peer) | ratio | bound (reader) | ratio | peak RSS MB |")
    print("|---------|----------|---------:|---------:|-------------:|------:|---------------:|------:|------------:|")
    for kind, pf, r, bp, bo in rows:
        ms = r["ms_per_token"]
        print(f"| {kind:<7} | {pf:<8} | {r['bytes_per_token'] / MB:8.1f} | {ms:8.1f} | {bp:12.1f} | {ms / bp:5.2f} | "
              f"{bo:14.1f} | {ms / bo:5.2f} | {r['peak_rss'] / MB:11.0f} |")


if __name__ == "__main__":
    main()
