"""The mutation fuzzer (tests/support/mutate.py) on a fixed seed and budget: the default model's header and small
models of every format, mutated; `netboot info` (and now and then `netboot run`) must exit 0, or exit 1 with one
short `netboot: error: ...` line: never a traceback, a signal, a hang or an error line quoting the file.

`scripts/fuzz.py --minutes N` runs a longer campaign with the same machinery.
"""

from __future__ import annotations

import pytest
from support.mutate import campaign, default_target, small_corpus, table

CASES = 420
SEED = 12


@pytest.mark.slow
def test_fuzz_every_format(tmp_path, default_model_path):
    targets = small_corpus(tmp_path / "small", SEED)
    targets.append(default_target(tmp_path, default_model_path))
    counts, bad = campaign(targets, SEED, cases=CASES, every_subprocess=12, every_run=60,
                           bad_folder=tmp_path / "bad")
    print("\n" + table(counts))
    assert sum(counts.values()) == CASES
    assert not bad, "\n".join(f"{r.label} {r.command}: {r.what}: {r.verdict}: {r.outcome.stderr[-600:]}" for r in bad)
    assert sum(n for (_, verdict), n in counts.items() if verdict == "error") > CASES // 4  # the mutations bite
