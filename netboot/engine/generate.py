"""Generation: prefill the prompt in batches, then decode one token at a time, yielding text as it comes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from netboot.config import PREFILL_BATCH
from netboot.engine.sampling import Sampler, SamplingParams
from netboot.engine.stops import StopMatcher
from netboot.errors import FormatError
from netboot.model.transformer import Model


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    stop_reason: str = ""  # "eos", "stop", "length" or "context"

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tps(self) -> float:
        # The first generated token comes from the prefill's logits; the others each cost one decode step.
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0


@dataclass
class Generation:
    """One request: prompt ids in, text out through `stream()`; `tokens` and `stats` fill as it runs."""

    model: Model
    tokenizer: object
    prompt_ids: list[int]
    max_tokens: int = 128
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)

    def stream(self) -> Iterator[str]:
        stops = StopMatcher(self.stop)
        decoder = self.tokenizer.stream_decoder()
        for token in self._tokens():
            text = stops.push(decoder.push(token))
            if text:
                yield text
            if stops.hit:
                self.stats.stop_reason = "stop"
                return
        tail = stops.push(decoder.flush()) + stops.flush()
        if tail:
            yield tail

    def text(self) -> str:
        return "".join(self.stream())

    def _tokens(self) -> Iterator[int]:
        model, stats = self.model, self.stats
        sampler = Sampler(self.params)
        for t in self.prompt_ids:
            sampler.accept(t)
        cache = model.new_cache()
        context = model.config.context_length
        stats.prompt_tokens = len(self.prompt_ids)
        if stats.prompt_tokens >= context:
            stats.stop_reason = "context"
            return
        start = time.perf_counter()
        logits = self._prefill(cache)
        stats.prefill_seconds = time.perf_counter() - start
        pos = len(self.prompt_ids)
        start = time.perf_counter()
        try:
            while True:
                if len(self.tokens) >= self.max_tokens:
                    stats.stop_reason = "length"
                    return
                token = sampler.sample(logits)
                if self.tokenizer.is_eog(token):
                    stats.stop_reason = "eos"
                    return
                self.tokens.append(token)
                stats.generated_tokens = len(self.tokens)
                sampler.accept(token)
                yield token
                if pos >= context or len(self.tokens) >= self.max_tokens:
                    stats.stop_reason = "context" if pos >= context else "length"
                    return
                logits = self._forward([token], cache, pos)
                pos += 1
        finally:
            stats.decode_seconds = time.perf_counter() - start

    def _prefill(self, cache) -> np.ndarray:
        ids = self.prompt_ids
        for start in range(0, len(ids), PREFILL_BATCH):
            logits = self._forward(ids[start : start + PREFILL_BATCH], cache, start)
        return logits

    def _forward(self, ids: list[int], cache, pos: int) -> np.ndarray:
        """The model's logits after `ids` at `pos`, checked finite: corrupt weights end here as one clear error."""
        last = pos + len(ids) - 1
        try:
            logits = self.model.forward(ids, cache, pos)
        except (ZeroDivisionError, FloatingPointError) as e:  # a norm of NaN hidden states, in a compiled kernel
            where = f"positions {pos}-{last}" if last > pos else f"position {pos}"
            raise _not_finite(where, "NaN or inf activations") from e
        if not np.isfinite(logits).all():  # ~50 us for Gemma 3's 262144 logits: under 1% of a decode step
            raise _not_finite(f"position {last}", "NaN logits" if np.isnan(logits).any() else "infinite logits")
        return logits


def _not_finite(where: str, what: str) -> FormatError:
    return FormatError(f"the model produced {what} at {where}: its weights are likely corrupt")
