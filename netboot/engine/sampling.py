"""Choosing the next token from logits, in llama.cpp's default order:
penalties (repetition, presence, frequency) -> top-k -> top-p -> min-p -> temperature -> draw (greedy when
temperature is 0). `log_probabilities` gives the model's own log-probabilities of a step (before any of that)."""

from __future__ import annotations

import math
import numbers
from collections import deque
from dataclasses import dataclass

import numpy as np

from netboot.errors import NetbootError

SEED_MAX = 2**32 - 1
LOOKBACK_MAX = 1 << 20  # the repetition penalty's window: more only costs memory


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40  # 0: off
    top_p: float = 0.95  # 1.0: off
    min_p: float = 0.05  # 0.0: off
    repeat_penalty: float = 1.0  # 1.0: off
    repeat_last_n: int = 64
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from each token seen in the last repeat_last_n
    frequency_penalty: float = 0.0  # OpenAI's: subtracted for each time a token was seen there
    seed: int | None = None

    def __post_init__(self) -> None:
        _need("temperature", self.temperature, 0)
        _need("top_k", self.top_k, 0, whole=True)
        _need("top_p", self.top_p, 0, 1, above=True)
        _need("min_p", self.min_p, 0, 1)
        _need("repeat_penalty", self.repeat_penalty, 0, above=True)
        _need("repeat_last_n", self.repeat_last_n, 0, LOOKBACK_MAX, whole=True)
        _need("presence_penalty", self.presence_penalty, -2, 2)
        _need("frequency_penalty", self.frequency_penalty, -2, 2)
        if self.seed is not None:
            _need("seed", self.seed, 0, SEED_MAX, whole=True)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def _need(field: str, value: object, low: float, high: float | None = None, *, above: bool = False,
          whole: bool = False) -> None:
    """Raise NetbootError naming the field unless `value` is a finite number (whole when asked) at least `low`
    (more than `low` when `above`) and at most `high`."""
    kind = numbers.Integral if whole else numbers.Real
    ok = (isinstance(value, kind) and math.isfinite(value) and (value > low if above else value >= low)
          and (high is None or value <= high))
    if not ok:
        bounds = f"{'>' if above else '>='} {low}" if high is None else f"in {'(' if above else '['}{low}, {high}]"
        raise NetbootError(f"SamplingParams.{field} must be a {'whole' if whole else 'finite'} number {bounds} "
                           f"(got {value!r})")


class Sampler:
    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self.recent: deque[int] = deque(maxlen=max(params.repeat_last_n, 0))

    def accept(self, token: int) -> None:
        """Record a token of the context (prompt or generated) for the repetition penalty."""
        if self.recent.maxlen:
            self.recent.append(token)

    def sample(self, logits: np.ndarray) -> int:
        p = self.params
        logits = np.asarray(logits, dtype=np.float32)
        if self.recent and (p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty):
            seen, counts = np.unique(np.fromiter(self.recent, dtype=np.int64), return_counts=True)
            if p.repeat_penalty != 1.0:
                logits = apply_repeat_penalty(logits, seen, p.repeat_penalty)
            if p.presence_penalty or p.frequency_penalty:
                logits = logits.copy()
                logits[seen] -= np.float32(p.presence_penalty) + counts * np.float32(p.frequency_penalty)
        if p.greedy:
            return int(np.argmax(logits))
        ids, vals = top_k(logits, p.top_k)
        probs = softmax(vals)
        keep = top_p_count(probs, p.top_p)
        ids, vals = ids[:keep], vals[:keep]
        if p.min_p > 0:
            probs = softmax(vals)
            mask = probs >= p.min_p * probs[0]
            ids, vals = ids[mask], vals[mask]
        # Relative to the best and in float64: a tiny temperature then gives -inf (probability 0), never inf - inf.
        with np.errstate(over="ignore"):
            probs = softmax((vals.astype(np.float64) - vals[0]) / p.temperature)
        return int(ids[self.rng.choice(len(ids), p=probs)])


def log_probabilities(logits: np.ndarray, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of `token` under the softmax of `logits`, and the `top` most likely (id, log-prob)."""
    logits = np.asarray(logits, dtype=np.float64)
    peak = logits.max()
    lse = peak + np.log(np.exp(logits - peak).sum())
    ids, vals = top_k(logits, top) if top > 0 else (np.zeros(0, np.int64), np.zeros(0))
    return float(logits[token] - lse), [(int(i), float(v - lse)) for i, v in zip(ids, vals, strict=True)]


def apply_repeat_penalty(logits: np.ndarray, tokens: np.ndarray, penalty: float) -> np.ndarray:
    """Make recently seen tokens less likely: divide positive logits by the penalty, multiply negative ones."""
    out = logits.copy()
    seen = out[tokens]
    out[tokens] = np.where(seen > 0, seen / penalty, seen * penalty)
    return out


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (ids, logits), best first; k <= 0 keeps every token."""
    if 0 < k < logits.size:
        ids = np.argpartition(-logits, k - 1)[:k]
    else:
        ids = np.arange(logits.size)
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    return ids, logits[ids]


def top_p_count(sorted_probs: np.ndarray, top_p: float) -> int:
    """How many of the best tokens make up at least top_p of the probability mass."""
    if top_p >= 1.0:
        return sorted_probs.size
    cumulative = np.cumsum(sorted_probs / sorted_probs.sum())
    return int(np.searchsorted(cumulative, top_p) + 1)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
