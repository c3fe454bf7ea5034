"""A whole model from a URL: the files it needs, each from the cache or the network, verified; fallbacks when the
source fails; or (no_disk) every file straight into memory.

Which files a model needs is its format's knowledge, not this module's: the server's catalog lists them, or else the
caller's `Layout` (the formats layer's `ModelLayout`) names them, asked again as the files it depends on arrive.

    fetched = fetch_model("http://host:8080/stories15M.bin", options=FetchOptions(cache_dir=...), layout=ModelLayout())
    open_model(fetched.path, fetched.tokenizer)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from netboot.errors import IntegrityError, NetbootError, RemoteError, note, shown
from netboot.remote import catalog as catalog_mod
from netboot.remote.cache import Cache
from netboot.remote.download import Transfer
from netboot.remote.http import make_client
from netboot.remote.progress import Progress
from netboot.remote.sinks import MemorySink
from netboot.sources.net import Settings, resolve_token
from netboot.sources.urls import (
    check_url,
    dir_url,
    file_name,
    is_dir_url,
    is_url,
    local_dir,
    relative_to,
    safe_relpath,
    sibling,
)

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class Layout(Protocol):
    """Which files a model needs beside the one its URL names (implemented by the formats layer). Names are
    relative to the URL's directory; each comes with whether it may be absent from the server."""

    def companions(self, url: str, got: Mapping[str, str | None], tokenizer: bool) -> Iterable[tuple[str, bool]]:
        """All the files needed as far as `got` tells (name -> local path of each file fetched so far, None when
        optional and absent; the file `url` names under `file_name(url)`). `tokenizer`: one is given separately."""
        ...

    def tokenizer_companions(self, name: str) -> Iterable[tuple[str, bool]]:
        """The files a tokenizer file called `name` needs beside it."""
        ...

    def opens_by_content(self, path: str) -> bool:
        """Whether the model file at `path`, alone, opens under any name (a memfd's /proc path)."""
        ...


@dataclass
class FetchOptions:
    """cache_dir: the cache root (default `netboot.paths.cache_dir()`); sha256: the model file's expected
    digest; connections: parallel ranged connections per file; timeout: seconds to connect, and the longest wait for
    data; min_rate: bytes/s below which a transfer is stalled; retries: retries of a failed transfer (with
    backoff); progress: "auto" | "on" | "off"; no_disk: fetch into memory, write nothing; fallbacks: paths or URLs
    tried in order when the source fails; token: sent as `Authorization: Bearer TOKEN` (default $NETBOOT_TOKEN)."""

    cache_dir: str | Path | None = None
    sha256: str | None = None
    connections: int = 4
    timeout: float = 10.0
    min_rate: float = 1000.0
    retries: int = 3
    progress: str = "auto"
    no_disk: bool = False
    fallbacks: Sequence[str] = ()
    token: str | None = None

    def __post_init__(self):
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise NetbootError(f"--sha256 must be 64 hex digits, not {self.sha256!r}")
        self.settings()  # checks --timeout, --min-rate, --retries, --connections
        if self.progress not in ("auto", "on", "off"):
            raise NetbootError(f"progress must be auto, on or off, not {self.progress!r}")
        self.fallbacks = tuple(self.fallbacks or ())

    def settings(self) -> Settings:
        return Settings(timeout=self.timeout, min_rate=self.min_rate, retries=self.retries,
                        connections=self.connections,
                        token=resolve_token(self.token))


@dataclass
class Fetched:
    """Local paths for a model: `path` (a file or a directory) and `tokenizer` (None: beside or inside the model).
    With no_disk, the files are memfds and `path` is /proc/<pid>/fd/N or a directory of symlinks to them in
    /dev/shm (RAM) that `release()` removes once the model is open."""

    path: Path
    tokenizer: Path | str | None
    source: str
    memory: list[MemorySink] = field(default_factory=list)
    scratch: Path | None = None

    def release(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def close_memory(self) -> None:
        for sink in self.memory:
            sink.close()
        self.memory = []


@dataclass
class _Spec:
    url: str
    rel: str  # local name, relative to the model's directory
    sha256: str | None = None
    size: int | None = None
    optional: bool = False  # absent on the server (404/410) is fine


def fetch_model(ref: str | Path, tokenizer: str | Path | None = None, options: FetchOptions | None = None, *,
                layout: Layout) -> Fetched:
    """Local paths for the model `ref` (a URL or a path), trying `options.fallbacks` in order when it fails.
    `layout` names the files a model needs beside the one its URL names, when no catalog lists them."""
    options = options or FetchOptions()
    sources = [str(ref), *options.fallbacks]
    failures: list[str] = []
    for source in sources:
        try:
            fetched = _fetch_source(source, tokenizer, options, layout)
        except NetbootError as exc:
            if len(sources) == 1:
                raise
            reason = exc.reason if isinstance(exc, RemoteError) and exc.url == source else str(exc)
            failures.append(f"{shown(source)} failed ({reason})")
            continue
        if failures:  # one line, once the fallback worked (when none does, the error says it all)
            note(f"{'; '.join(failures)}; using fallback {shown(source)}")
        return fetched
    raise NetbootError("; ".join(failures))


def _fetch_source(source: str, tokenizer: str | Path | None, options: FetchOptions, layout: Layout) -> Fetched:
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise NetbootError(f"model not found: {path}")
        tok = tokenizer
        if is_url(tokenizer):
            with _Remote(options, layout) as remote:
                tok = remote.tokenizer(str(tokenizer))
                return Fetched(path, tok, source, remote.memory, remote.scratch_dir())
        return Fetched(path, tok, source)
    check_url(source)
    with _Remote(options, layout) as remote:
        return remote.model(source, str(tokenizer) if tokenizer is not None else None)


_warned: set[str] = set()


def unverified(url: str) -> None:
    """Say, once per URL and process, that a model's bytes are used without a sha256 to check them against."""
    if url not in _warned:
        _warned.add(url)
        note(f"{shown(url)}: no catalog entry and no --sha256: booting unverified (nothing to check the bytes against)")


class _Remote:
    """One attempt at one URL source: a client, the cache (or memory), and what was fetched."""

    def __init__(self, options: FetchOptions, layout: Layout):
        self.options = options
        self.layout = layout
        self.settings = options.settings()
        self.cache = None if options.no_disk else Cache(options.cache_dir)
        self.client = make_client(self.settings)
        self.memory: list[MemorySink] = []
        self.got: dict[str, str] = {}  # rel -> memfd path (no_disk)
        self._scratch: Path | None = None

    def __enter__(self) -> _Remote:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.client.close()
        if exc is not None:
            for sink in self.memory:
                sink.close()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)

    # -- a model -------------------------------------------------------------------------------------------------

    def model(self, url: str, tokenizer: str | None) -> Fetched:
        try:
            return self._model(url, tokenizer)
        except RemoteError as exc:
            if exc.unreachable and self.cache is not None:
                cached = self.cache.cached_model(url)
                if cached is not None:
                    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(cached.get("last_used", 0)))
                    note(f"{shown(url)} unreachable ({exc.reason}); using the cached copy (last used {when})")
                    tok = self.cache.root / cached["tokenizer"] if cached.get("tokenizer") else tokenizer
                    return Fetched(self.cache.root / cached["path"], None if is_url(tok) else tok, url)
            raise

    def _model(self, url: str, tokenizer: str | None) -> Fetched:
        sha = self.options.sha256.lower() if self.options.sha256 else None
        if sha and is_dir_url(url):
            raise NetbootError(f"--sha256 names one file's bytes; {shown(url)} is a directory")
        model = catalog_mod.find(catalog_mod.fetch_catalog(self.client, url), url)
        done: list[_Spec] = []
        tok_path: Path | str | None = None
        if model is not None:
            local, main_rel = self._catalog_files(model, sha, done)
            tok_spec = self._catalog_tokenizer(model) if tokenizer is None else None
            if tok_spec is not None:
                tok_path = self._tokenizer_spec(tok_spec)
        else:
            local, main_rel = self._layout_files(url, sha, tokenizer is not None, done)
            if sha is None:
                unverified(url)
        if tokenizer is not None:
            tok_path = self.tokenizer(tokenizer) if is_url(tokenizer) else tokenizer
        return self._fetched(url, local, main_rel, tok_path, done)

    def _get(self, spec: _Spec, local: str, done: list[_Spec]) -> str | None:
        path = self.file(spec, f"{local}/{spec.rel}")
        if path is not None:
            done.append(spec)
        return path

    def _catalog_files(self, model: catalog_mod.CatalogModel, sha: str | None, done: list[_Spec]) -> tuple[str, str]:
        """The files the server's catalog lists for the model; its directory in the cache and its main file."""
        base = dir_url(model.url)
        local = local_dir(base)

        def rel(f) -> str:  # the name under the model's directory: from its URL, else the catalog's path
            return safe_relpath(relative_to(f.url, base) or f.path)

        for f in model.files:
            main = model.main is not None and f.url == model.main.url
            self._get(_Spec(f.url, rel(f), (sha if main else None) or f.sha256, f.size), local, done)
        return local, rel(model.main) if model.main is not None else ""

    def _catalog_tokenizer(self, model: catalog_mod.CatalogModel) -> _Spec | None:
        t = model.tokenizer
        if isinstance(t, str):
            return _Spec(t, file_name(t))
        if t is not None and not any(f.url == t.url for f in model.files):
            return _Spec(t.url, file_name(t.url), t.sha256, t.size)
        return None

    def _layout_files(self, url: str, sha: str | None, tokenizer: bool, done: list[_Spec]) -> tuple[str, str]:
        """The file `url` names, then what the layout says the model needs beside it, asked again until it names
        nothing new (what it needs may depend on what arrived). Its directory in the cache and its main file ("" for
        a directory)."""
        local = local_dir(url)
        main_rel = "" if is_dir_url(url) else file_name(url)
        got: dict[str, str | None] = {}
        if main_rel:
            got[main_rel] = self._get(_Spec(url, main_rel, sha), local, done)
        while pending := [(n, opt) for n, opt in self.layout.companions(url, got, tokenizer) if n not in got]:
            for name, optional in pending:
                got[name] = self._get(_Spec(sibling(url, name), safe_relpath(name), optional=optional), local, done)
        if not got:
            raise NetbootError(f"{shown(url)} is a directory, and no catalog or layout names its files")
        return local, main_rel

    def _fetched(self, url: str, local: str, main_rel: str, tok_path: Path | str | None,
                 done: list[_Spec]) -> Fetched:
        if self.cache is not None:
            path = self.cache.files / local / main_rel if main_rel else self.cache.files / local
            fetched_tok = tok_path is not None and str(tok_path).startswith(str(self.cache.root))
            self.cache.record_model(url, path, [s.url for s in done], Path(tok_path) if fetched_tok else None)
            return Fetched(path, tok_path, url)
        if (main_rel and len(self.got) == 1 and tok_path is None
                and self.layout.opens_by_content(self.got[main_rel])):
            return Fetched(Path(self.got[main_rel]), None, url, self.memory)  # /proc/<pid>/fd/N itself
        scratch = self.scratch_dir()
        path = scratch / main_rel if main_rel else scratch
        return Fetched(path, tok_path, url, self.memory, scratch)

    def tokenizer(self, url: str) -> Path | str:
        check_url(url)
        return self._tokenizer_spec(_Spec(url, file_name(url)))

    def _tokenizer_spec(self, spec: _Spec) -> Path | str:
        local = local_dir(spec.url)
        name = spec.rel
        if self.cache is None:
            spec.rel = f"tokenizer/{spec.rel}"
        path = self.file(spec, f"{local}/{spec.rel}")
        for companion, optional in self.layout.tokenizer_companions(name):
            rel = safe_relpath(f"tokenizer/{companion}" if self.cache is None else companion)
            self.file(_Spec(sibling(spec.url, companion), rel, optional=optional), f"{local}/{rel}")
        if self.cache is None:
            return self.scratch_dir() / spec.rel
        return path

    def scratch_dir(self) -> Path | None:
        """A directory of symlinks to the memfds, under the model's own file names (the readers go by names)."""
        if not self.got:
            return None
        if self._scratch is None:
            if not os.path.isdir("/dev/shm"):
                raise NetbootError("--no-disk needs /dev/shm (RAM) for a model of several files")
            self._scratch = Path(tempfile.mkdtemp(prefix="netboot-", dir="/dev/shm"))
        for rel, target in self.got.items():
            link = self._scratch / rel
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, link)
        return self._scratch

    # -- a file --------------------------------------------------------------------------------------------------

    def file(self, spec: _Spec, local: str) -> str | None:
        """The file at spec.url, locally (a path in the cache's files/ tree, or a memfd path). None when optional
        and absent."""
        if self.cache is None:
            return self._memory_file(spec)
        return self._disk_file(spec, self.cache.files / local)

    def _progress(self, spec: _Spec) -> Progress:
        return Progress(spec.rel.rsplit("/", 1)[-1], self.options.progress)

    def _memory_file(self, spec: _Spec) -> str | None:
        sink = MemorySink(spec.rel.rsplit("/", 1)[-1], spec.url)
        progress = self._progress(spec)
        try:
            Transfer(self.client, spec.url, sink, self.settings, progress, spec.size, spec.sha256).run()
        except BaseException as exc:
            progress.close(False)
            sink.close()
            if isinstance(exc, RemoteError) and spec.optional and exc.status in (404, 410):
                return None
            raise
        progress.close(True)
        self.memory.append(sink)
        self.got[spec.rel] = sink.path
        return sink.path

    def _disk_file(self, spec: _Spec, target: Path) -> str | None:
        cache = self.cache
        if spec.sha256 and cache.has_blob(spec.sha256, spec.size):
            return str(self._hit(spec, target, cache.entry(spec.url), spec.sha256))

        def waiting() -> None:
            if self._progress(spec).kind != "off":
                note(f"waiting for another netboot process downloading {shown(spec.url)}")

        with cache.download_lock(spec.url, waiting):
            entry = cache.entry(spec.url)
            if spec.sha256 and cache.has_blob(spec.sha256, spec.size):  # another process just fetched it
                return str(self._hit(spec, target, entry, spec.sha256))
            if entry is not None and spec.sha256 and entry["sha256"] != spec.sha256:
                entry = None  # the cached copy is not the version asked for
            cached = (entry.get("etag"), entry.get("last_modified"), entry["size"]) if entry else None
            sink = cache.part(spec.url)
            progress = self._progress(spec)
            try:
                outcome = Transfer(self.client, spec.url, sink, self.settings, progress, spec.size, spec.sha256,
                                   cached).run()
            except IntegrityError:
                progress.close(False)
                sink.remove()  # the bad bytes go
                raise
            except BaseException as exc:
                progress.close(False)
                sink.close()
                if isinstance(exc, RemoteError) and spec.optional and exc.status in (404, 410):
                    sink.remove()
                    return None
                raise
            progress.close(True)
            if outcome.not_modified:
                sink.remove()
                return str(self._hit(spec, target, entry, entry["sha256"], outcome.etag, outcome.last_modified))
            blob = cache.commit(sink, outcome)
            path = cache.materialize(blob, target)
            cache.record(spec.url, sha256=outcome.sha256, size=outcome.size, etag=outcome.etag,
                         last_modified=outcome.last_modified, name=spec.rel, path=path)
            return str(path)

    def _hit(self, spec: _Spec, target: Path, entry: dict | None, sha: str, etag: str | None = None,
             modified: str | None = None) -> Path:
        cache = self.cache
        path = cache.materialize(cache.blob(sha), target)
        same = entry is not None and entry.get("sha256") == sha
        cache.record(spec.url, sha256=sha, size=cache.blob(sha).stat().st_size,
                     etag=etag or (entry.get("etag") if same else None),
                     last_modified=modified or (entry.get("last_modified") if same else None), name=spec.rel,
                     path=path)
        return path


def pull(url: str, tokenizer: str | None = None, options: FetchOptions | None = None, *, layout: Layout) -> Fetched:
    """Fetch into the cache (never no_disk) and return the local paths; `layout` as for `fetch_model`."""
    options = options or FetchOptions()
    if options.no_disk:
        raise NetbootError("pull stores into the cache; --no-disk makes no sense with it")
    return fetch_model(url, tokenizer, options, layout=layout)


__all__ = ["FetchOptions", "Fetched", "Layout", "fetch_model", "pull", "dir_url"]
