"""From a model reference (a path, an http(s):// URL, or none for the default model) to a ready `Model` and its
tokenizer."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netboot.assemble import assemble
from netboot.errors import IntegrityError, NetbootError, note, shown
from netboot.formats import ModelFile, open_model
from netboot.model.transformer import Model
from netboot.planner.plan import Plan, RunLimits
from netboot.planner.plan import plan as make_plan
from netboot.planner.resources import Resources
from netboot.sources.urls import is_url


@dataclass
class LoadedModel:
    file: ModelFile
    model: Model
    plan: Plan
    source: Any = None  # where streamed weights are read from

    def explain(self) -> str:
        """Where each layer's weights come from, and the memory accounting."""
        from netboot.planner.explain import explain

        return explain(self.plan, self.file, self.source)

    @property
    def tokenizer(self):
        return self.file.tokenizer


def resolve(ref: str | Path | None, **network: Any) -> Path:
    """The local path of a model: the default model, a path as given, or a URL fetched into the cache."""
    if ref is None or str(ref) == "default":
        from netboot.default_model import default_model_path

        return default_model_path()
    if is_url(ref) or network.get("fallbacks"):
        from netboot.formats.layout import ModelLayout
        from netboot.remote.fetch import FetchOptions, fetch_model

        return fetch_model(ref, None, FetchOptions(**{**network, "no_disk": False}), layout=ModelLayout()).path
    return Path(ref)


def open_ref(ref: str | Path | None, tokenizer: str | Path | None = None, **network: Any) -> ModelFile:
    """Open a model by path or URL. `network` are `netboot.remote.fetch.FetchOptions` fields (cache_dir, sha256,
    connections, timeout, retries, progress, no_disk, fallbacks); they matter only for URLs and fallbacks."""
    if ref is None or not (is_url(ref) or is_url(tokenizer) or network.get("fallbacks")):
        return open_model(resolve(ref), tokenizer)
    from netboot.formats.layout import ModelLayout
    from netboot.remote.fetch import FetchOptions, fetch_model

    fetched = fetch_model(ref, tokenizer, FetchOptions(**network), layout=ModelLayout())
    try:
        file = open_model(fetched.path, fetched.tokenizer)
        if fetched.scratch is not None and file.tokenizer_loader is not None:
            file.tokenizer  # noqa: B018 - read its files before their names in /dev/shm go
    except BaseException:
        fetched.close_memory()
        raise
    finally:
        fetched.release()
    if fetched.memory:
        weakref.finalize(file, fetched.close_memory)  # the memfds live as long as the model
    return file


def load(ref: str | Path | None = None, tokenizer: str | Path | None = None, *, max_memory: int | None = None,
         positions: int | Callable[[ModelFile], int] = 512, prefetch: int = 1, batched: bool = False,
         cluster: str | None = None, stages: int | str | None = None, stage_timeout: float | None = None,
         **network: Any) -> LoadedModel:
    """Open a model without copying its weights: every tensor stays a view of the file (or of the memory a
    `no_disk=True` boot received it into). `ref` may be an http(s):// URL; see `open_ref` for `network`.

    With `max_memory` (bytes of peak RSS), weights that do not fit are streamed from the file as the forward pass
    needs them (`netboot.placement.streamed`), for runs of up to `positions` tokens (or `positions(file)`), reading
    `prefetch` layers ahead; `batched` loads the kernels of batched steps there too (a serving engine: they hold
    8 MB more; resident, they are always loaded).

    With `cluster` (a Ray head's HOST:PORT, or `auto`), the layers run as `stages` stages (a count, or pinned
    ranges: `netboot.cluster.pins`) on the cluster's nodes (`netboot.cluster`), each loading its range from `ref`
    there; this process keeps the embedding and output. A stage silent for `stage_timeout` s is replaced."""
    if cluster is not None:
        return _load_cluster(ref, tokenizer, cluster, stages, stage_timeout, positions, network)
    if max_memory is None:
        from netboot.memory import paused_gc

        file = open_ref(ref, tokenizer, **network)
        with paused_gc():
            from netboot.backends.cpu.warm import warm  # imports numba

            warm()
            limits = RunLimits(positions if isinstance(positions, int) else 512, prefetch)
            plan = make_plan(file, Resources(), limits)
            return LoadedModel(file, assemble(plan.stage, file), plan)
    return _load_streamed(ref, tokenizer, max_memory, positions, prefetch, batched, network)


def _load_cluster(ref, tokenizer, address: str, stages, stage_timeout: float | None, positions, network: dict):
    from netboot.cluster.connect import load_pipeline

    head = load(ref, tokenizer, **network)  # resident here: only the embedding and output pages are touched
    ref = None if ref is None or str(ref) == "default" else str(ref)
    if callable(positions):
        positions = positions(head.file)
    timeout = {} if stage_timeout is None else {"stage_timeout": stage_timeout}
    return load_pipeline(ref, head.file, head.model, address, stages, positions=positions, **timeout)


def _load_streamed(ref, tokenizer, max_memory: int, positions, prefetch: int, batched: bool,
                   network: dict) -> LoadedModel:
    from netboot import memory

    memory.lean_start()  # when numba is not loaded yet (the `run` command does this before importing the model)
    from netboot.backends.cpu.warm import warm

    # First: the peak while kernels load must not add to the header's and tokenizer's. Without the one-call decode
    # layer (see CpuBackend.fused_decode).
    compiled = warm(decode_layer=False, batched=batched)
    hashes: dict = {}
    if is_url(ref):
        source, file, hashes = open_remote(ref, tokenizer, network)
    else:
        from netboot.sources.file import FileSource

        file = open_ref(ref, tokenizer, **network)
        source = FileSource(file.path)
    if file.format != "gguf":
        raise NetbootError(f"{file.path}: --max-memory streams GGUF models only (this one is {file.format})")
    if file.tokenizer_loader is not None:
        file.tokenizer  # noqa: B018 - the tokenizer is part of what the process holds before weights
    if callable(positions):
        positions = positions(file)
    plan = make_plan(file, Resources.measure(max_memory, compiled), RunLimits(positions, prefetch))
    return LoadedModel(file, assemble(plan.stage, file, source, hashes), plan, source)


def open_remote(url: str, tokenizer, network: dict):
    """A remote GGUF for streaming (--max-memory, or a cluster stage that reads only its layers): its Range source
    (falling back as --fallback says), its header and the sha256 of its layers from the server's catalog."""
    from netboot.formats.gguf import open_gguf_header
    from netboot.remote.catalog import span_hashes
    from netboot.sources.fallback import FallbackSource
    from netboot.sources.net import Settings, resolve_token

    if tokenizer is not None:
        raise NetbootError("--tokenizer with a streamed URL is not supported: a GGUF carries its tokenizer")
    settings = Settings(timeout=float(network.get("timeout", 10.0)), retries=int(network.get("retries", 3)),
                        min_rate=float(network.get("min_rate", 1000.0)), token=resolve_token(network.get("token")))
    source = FallbackSource([url, *network.get("fallbacks", ())], settings)
    file = open_gguf_header(source)
    current = source.current
    if current.kind != "network":
        _check_local_sha256(current.name, network.get("sha256"))
        return source, file, {}
    entries = current.catalog()
    hashes = span_hashes(entries, current.name)
    _check_streamed_sha256(current.name, entries, bool(hashes), network.get("sha256"))
    if not hashes:
        note(f"{shown(current.name)}: the server publishes no digests of the layers (no netboot catalog): "
             "streaming unverified")
    return source, file, hashes


def _check_streamed_sha256(url: str, entries: list[dict] | None, spans: bool, sha256: str | None) -> None:
    """--sha256 when streaming: it must be the sha256 the server's catalog gives for the file, whose span digests
    (`spans`: published) then check every read; where no catalog gives both, nothing could prove the bytes are those
    of that sha256, so the run is refused."""
    from netboot.remote.catalog import file_sha256

    if sha256 is None:
        return
    want = sha256.lower()
    listed = file_sha256(entries, url)
    if listed is None or not spans:
        raise NetbootError(f"--sha256 cannot be checked while streaming {shown(url)}: the server publishes no "
                           "catalog with its sha256 and its layers' digests (netboot serve does); download it "
                           "instead (without --max-memory, or netboot pull URL)")
    if listed != want:
        raise IntegrityError(url, f"sha256 mismatch: --sha256 is {want}, the server's catalog says {listed}")


def _check_local_sha256(path: str, sha256: str | None) -> None:
    if sha256 is None:
        return
    import hashlib

    with open(path, "rb") as f:
        got = hashlib.file_digest(f, "sha256").hexdigest()
    if got != sha256.lower():
        raise IntegrityError(path, f"sha256 mismatch: expected {sha256.lower()}, got {got}")
