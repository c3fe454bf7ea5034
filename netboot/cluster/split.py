"""Contiguous layer ranges in proportion to what each node can hold: a pure function, tested without a cluster."""

from __future__ import annotations

from collections.abc import Sequence


def split_layers(layer_bytes: Sequence[int], capacities: Sequence[int]) -> list[range]:
    """One non-empty range of consecutive layers per capacity, in order, together covering every layer: the cut
    after each range falls at the layer boundary nearest to that range's share of the bytes (capacity / total)."""
    n, stages = len(layer_bytes), len(capacities)
    if stages == 0 or stages > n:
        raise ValueError(f"cannot split {n} layers into {stages} stages")
    if any(c <= 0 for c in capacities):
        raise ValueError("every node's capacity must be positive")
    total, whole = sum(layer_bytes), sum(capacities)
    ends = [0] * (n + 1)  # ends[i]: bytes of layers [0, i)
    for i, b in enumerate(layer_bytes):
        ends[i + 1] = ends[i] + b
    cuts, share = [0], 0
    for k in range(stages - 1):
        share += capacities[k]
        target = total * share / whole
        # Leave at least one layer to this stage and to each one after it.
        lo, hi = cuts[-1] + 1, n - (stages - 1 - k)
        cuts.append(min(range(lo, hi + 1), key=lambda i: (abs(ends[i] - target), i)))
    cuts.append(n)
    return [range(a, b) for a, b in zip(cuts, cuts[1:], strict=False)]
