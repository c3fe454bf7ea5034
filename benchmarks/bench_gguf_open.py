"""Opening a GGUF: netboot's reader vs the `gguf` package's GGUFReader, in one run, each in a fresh process.

    python benchmarks/bench_gguf_open.py [--model PATH] [--runs 5]

Prints median open time and RSS growth for each, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

WORKER = """
import json, sys, time, psutil
import numpy, gguf
from netboot.formats.gguf import read_gguf
p = psutil.Process(); before = p.memory_info().rss
start = time.perf_counter()
if sys.argv[1] == "netboot":
    meta, tensors, _ = read_gguf(sys.argv[2])
else:
    r = gguf.GGUFReader(sys.argv[2])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rss_growth_mb": (p.memory_info().rss - before) / 1e6}))
"""


def measure(reader: str, model: str) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, reader, model], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.model is None:
        from netboot.default_model import default_model_path

        args.model = str(default_model_path())
    results: dict[str, list[dict]] = {"netboot": [], "gguf.GGUFReader": []}
    for _ in range(args.runs):
        for reader in results:
            results[reader].append(measure("netboot" if reader == "netboot" else "gguf", args.model))
    med = {r: {k: statistics.median(x[k] for x in v) for k in ("seconds", "rss_growth_mb")} for r, v in results.items()}
    print(f"model: {args.model}; medians of {args.runs} runs, page cache warm")
    print("| reader          | open s | RSS growth MB |")
    print("|-----------------|-------:|--------------:|")
    for reader, m in med.items():
        print(f"| {reader:<15} | {m['seconds']:6.3f} | {m['rss_growth_mb']:13.1f} |")
    ours, peer = med["netboot"], med["gguf.GGUFReader"]
    print(f"netboot / gguf: open time {ours['seconds'] / peer['seconds']:.3f}x, "
          f"RSS growth {ours['rss_growth_mb'] / peer['rss_growth_mb']:.3f}x")


if __name__ == "__main__":
    main()
