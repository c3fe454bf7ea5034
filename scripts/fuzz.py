"""A longer mutation-fuzzing campaign than the test's: `python scripts/fuzz.py --minutes N [--seed S]`.

Mutates the default model's header and small models of every format (tests/support/mutate.py), runs `netboot info`
(in this process, and in children with a timeout and a memory limit) and now and then `netboot run`, prints the
counts per target and outcome, and writes every bad case (traceback, signal, timeout, bad message) to --out, with
the mutated file and what came out, to reproduce it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.mutate import campaign, default_target, small_corpus, table  # noqa: E402

from netboot.default_model import default_model_path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-cases"), help="where bad cases are written")
    parser.add_argument("--every-subprocess", type=int, default=5, help="every Nth case runs in a child process")
    parser.add_argument("--every-run", type=int, default=25, help="every Nth case is `netboot run` (in a child)")
    parser.add_argument("--no-default", action="store_true", help="only the small synthetic models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="netboot-fuzz-") as tmp:
        targets = small_corpus(Path(tmp) / "small", args.seed)
        if not args.no_default:
            targets.append(default_target(Path(tmp), default_model_path()))
        counts, bad = campaign(targets, args.seed, seconds=60 * args.minutes, every_subprocess=args.every_subprocess,
                               every_run=args.every_run, bad_folder=args.out)
    print(table(counts))
    print(f"{sum(counts.values())} cases, {len(bad)} bad" + (f" (written to {args.out})" if bad else ""))
    for result in bad[:20]:
        last = result.outcome.stderr.strip().splitlines()[-1:] or [""]
        print(f"  {result.label} {result.command}: {result.what}: {result.verdict}: {last[0][:200]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
