"""Score-driven merging of adjacent symbols, the BPE step shared by the SPM and llama2.c tokenizers."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any


def merge_pairs(
    syms: list[Any],
    ids: list[int | None],
    get: Callable[[Any], int | None],
    scores: Sequence[float],
    min_score: float | None,
) -> list[int]:
    """Merges adjacent symbols by score until no pair is a token.

    ``syms`` holds the initial symbols (str or bytes), ``ids`` their token ids where known. Repeatedly merges the
    adjacent pair whose concatenation ``get`` finds (its token id) with the highest score (ties: leftmost pair), only
    considering scores above ``min_score`` when it is given; a priority queue makes this O(n log n) rather than
    a rescan per merge, with the same result. Updates ``syms``/``ids`` in place (a symbol merged into its left
    neighbour becomes None) and returns the indices of the surviving symbols in order.
    """
    n = len(syms)
    if n < 2:
        return list(range(n))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap: list[tuple[float, int, int, int, int]] = []
    for i in range(n - 1):
        s = syms[i] + syms[i + 1]
        tid = get(s)
        if tid is not None:
            sc = scores[tid]
            if min_score is None or sc > min_score:
                heap.append((-sc, i, i + 1, len(s), tid))
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        _, left, right, size, tid = pop(heap)
        sl, sr = syms[left], syms[right]
        # stale entry: one side was merged away, or grew, since the pair was queued
        if sl is None or sr is None or len(sl) + len(sr) != size:
            continue
        merged = sl + sr
        syms[left] = merged
        syms[right] = None
        ids[left] = tid
        after = nxt[right]
        nxt[left] = after
        if after >= 0:
            prv[after] = left
        before = prv[left]
        if before >= 0:
            s = syms[before] + merged
            t = get(s)
            if t is not None:
                sc = scores[t]
                if min_score is None or sc > min_score:
                    push(heap, (-sc, before, left, len(s), t))
        if after >= 0:
            s = merged + syms[after]
            t = get(s)
            if t is not None:
                sc = scores[t]
                if min_score is None or sc > min_score:
                    push(heap, (-sc, left, after, len(s), t))
    return _survivors(nxt)


def _survivors(nxt: list[int]) -> list[int]:
    order = []
    i = 0
    while i != -1:
        order.append(i)
        i = nxt[i]
    return order
