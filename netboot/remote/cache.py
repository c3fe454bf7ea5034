"""The local cache of fetched models, content-addressed.

    ROOT/blobs/<sha256>             every file fetched, by content, read-only
    ROOT/files/<host>_<port>/<path> the models as the formats need them (tokenizer.bin beside model.bin, a
                                    SafeTensors directory): hard links to the blobs (symlinks or copies where
                                    the filesystem has no hard links)
    ROOT/index.json                 URL -> sha256, size, ETag, Last-Modified, name, local path, fetched, last used
    ROOT/tmp/                       downloads in progress: <key>.part, its resume state <key>.part.json, <key>.lock

ROOT is `netboot.paths.cache_dir()` (~/.cache/netboot, or $NETBOOT_CACHE) unless --cache-dir says otherwise;
its `models/` (the packaged default model) is not this module's. A download lands in tmp/ and is renamed into
blobs/ only once complete and verified, so a crash never leaves a corrupt model where a boot would use it. The index
is rewritten whole (write then rename) under an flock; a download holds its own flock so that two processes never
fetch the same URL into the same cache at once (the second waits, then finds the first's result).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from netboot.errors import NetbootError, shown

if TYPE_CHECKING:  # the HTTP client is not imported by `netboot cache`
    from netboot.remote.download import Outcome
    from netboot.remote.sinks import FileSink

INDEX_VERSION = 1


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


class Cache:
    def __init__(self, root: str | Path | None = None):
        if root is None:
            from netboot.paths import cache_dir

            root = cache_dir()
        self.root = Path(root).expanduser()
        self.blobs = self.root / "blobs"
        self.tmp = self.root / "tmp"
        self.files = self.root / "files"
        self.index_path = self.root / "index.json"

    def ensure(self) -> None:
        try:
            for d in (self.blobs, self.tmp, self.files):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NetbootError(f"cannot create the cache in {self.root}: {e.strerror or e}") from None

    # -- the index -----------------------------------------------------------------------------------------------

    def read_index(self) -> dict:
        try:
            data = json.loads(self.index_path.read_text())
            if isinstance(data, dict) and data.get("version") == INDEX_VERSION:
                data.setdefault("files", {})
                data.setdefault("models", {})
                return data
        except (OSError, ValueError):
            pass
        return {"version": INDEX_VERSION, "files": {}, "models": {}}

    @contextlib.contextmanager
    def _flock(self, path: Path, blocking: bool = True):
        """An exclusive flock on `path` (created when missing). Yields False when not blocking and it is taken.
        A lock file unlinked by a prune while we waited is not a lock: then the new file is locked."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                except BlockingIOError:
                    yield False
                    return
                try:
                    same = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    yield True
                    return
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def editing(self):
        """The index, locked for a read-modify-write; written back when the block ends without an exception."""
        self.ensure()
        with self._flock(self.root / "index.lock"):
            index = self.read_index()
            yield index
            tmp = self.index_path.with_name(f".index.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
            os.replace(tmp, self.index_path)

    def entry(self, url: str) -> dict | None:
        """The index entry of `url` when its blob is present and whole."""
        entry = self.read_index()["files"].get(url)
        if entry and self.has_blob(entry.get("sha256", ""), entry.get("size")):
            return entry
        return None

    # -- blobs and downloads -------------------------------------------------------------------------------------

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256.lower()

    def has_blob(self, sha256: str | None, size: int | None = None) -> bool:
        if not sha256:
            return False
        try:
            st = self.blob(sha256).stat()
        except OSError:
            return False
        return size is None or st.st_size == size

    @contextlib.contextmanager
    def download_lock(self, url: str, on_wait=None):
        """Held while `url` is downloaded into this cache; `on_wait()` is called when another process has it."""
        self.ensure()
        path = self.tmp / f"{url_key(url)}.lock"
        with self._flock(path, blocking=False) as got:
            if got:
                yield
                return
        if on_wait is not None:
            on_wait()
        with self._flock(path):
            yield

    def part(self, url: str) -> FileSink:
        from netboot.remote.sinks import FileSink

        self.ensure()
        return FileSink(self.tmp / f"{url_key(url)}.part", url)

    def commit(self, sink: FileSink, outcome: Outcome) -> Path:
        """Move a verified download into blobs/ (read-only) and drop its resume state."""
        blob = self.blob(outcome.sha256)
        sink.close()
        if self.has_blob(outcome.sha256, outcome.size):
            sink.remove()
        else:
            os.chmod(sink.path, 0o444)
            os.replace(sink.path, blob)
            sink.remove()  # the state file
        return blob

    def materialize(self, blob: Path, target: Path) -> Path:
        """`target` becomes the blob under its own name: a hard link, else a symlink, else a copy; atomically."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if target.exists() and os.path.samefile(target, blob):
                return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            os.link(blob, tmp)
        except OSError:
            try:
                os.symlink(blob.resolve(), tmp)
            except OSError:
                shutil.copyfile(blob, tmp)
        os.replace(tmp, target)
        return target

    def record(self, url: str, *, sha256: str, size: int, etag: str | None, last_modified: str | None, name: str,
               path: Path) -> None:
        now = time.time()
        with self.editing() as index:
            old = index["files"].get(url) or {}
            index["files"][url] = {
                "sha256": sha256, "size": size, "etag": etag, "last_modified": last_modified, "name": name,
                "path": os.path.relpath(path, self.root), "fetched": old.get("fetched", now)
                if old.get("sha256") == sha256 else now, "last_used": now,
            }

    def record_model(self, url: str, path: Path, files: list[str], tokenizer: Path | None) -> None:
        with self.editing() as index:
            index["models"][url] = {
                "path": os.path.relpath(path, self.root), "files": files,
                "tokenizer": os.path.relpath(tokenizer, self.root) if tokenizer else None, "last_used": time.time(),
            }

    def cached_model(self, url: str) -> dict | None:
        """The index's record of a whole model fetched from `url`, when every file of it is still cached."""
        index = self.read_index()
        model = index["models"].get(url)
        if not model:
            return None
        for f in model.get("files", []):
            entry = index["files"].get(f)
            if not entry or not self.has_blob(entry.get("sha256"), entry.get("size")):
                return None
        return model

    # -- cache ls / rm / prune -----------------------------------------------------------------------------------

    def listing(self) -> list[dict]:
        rows = []
        for url, e in sorted(self.read_index()["files"].items()):
            rows.append({"url": url, **e, "present": self.has_blob(e.get("sha256"), e.get("size"))})
        return rows

    def remove(self, what: str) -> list[str]:
        """Forget a URL (a directory URL ending in "/" covers everything under it) or every URL whose sha256
        starts with a prefix; delete their local files and blobs no longer referenced. Returns the URLs."""
        with self.editing() as index:
            files = index["files"]
            if what in files or what in index["models"] or what.lower().startswith(("http://", "https://")):
                urls = [u for u in files if u == what or (what.endswith("/") and u.startswith(what))]
                model = index["models"].get(what)
                if model:
                    urls += [u for u in model.get("files", []) if u in files and u not in urls]
                if not urls:
                    raise NetbootError(f"not in the cache: {shown(what)}")
            else:
                prefix = what.lower()
                if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
                    raise NetbootError(f"not a URL or a sha256 prefix (4 or more hex digits): {what}")
                urls = [u for u, e in files.items() if e.get("sha256", "").startswith(prefix)]
                shas = {files[u]["sha256"] for u in urls}
                if not urls:
                    raise NetbootError(f"no cached file has a sha256 starting with {prefix}")
                if len(shas) > 1:
                    names = ", ".join(sorted(s[:12] for s in shas))
                    raise NetbootError(f"sha256 prefix {prefix} is ambiguous: {names}")
            self._drop(index, urls)
        self.collect(leftovers=False)
        return urls

    def _drop(self, index: dict, urls: list[str]) -> None:
        for url in urls:
            entry = index["files"].pop(url, None)
            if entry and entry.get("path"):
                self._unlink_local(self.root / entry["path"], self.blob(entry.get("sha256", "")))
        gone = set(urls)
        for murl in [m for m, rec in index["models"].items() if gone & set(rec.get("files", []))]:
            del index["models"][murl]

    def _unlink_local(self, path: Path, blob: Path) -> None:
        with contextlib.suppress(OSError):
            if path.is_symlink() or (path.exists() and (not blob.exists() or os.path.samefile(path, blob))):
                path.unlink()
            parent = path.parent
            while parent != self.files and self.files in parent.parents:
                parent.rmdir()  # only when empty (an OSError stops the walk)
                parent = parent.parent

    def prune(self, max_size: int | None = None, older_than_days: float | None = None) -> tuple[int, int]:
        """Drop entries last used more than `older_than_days` ago, then the least recently used until the blobs
        take at most `max_size` bytes; always: leftovers of interrupted downloads, unreferenced blobs and local
        files. Returns (files removed, bytes freed)."""
        self.ensure()
        with self.editing() as index:
            files = index["files"]
            if older_than_days is not None:
                cutoff = time.time() - older_than_days * 86400
                self._drop(index, [u for u, e in files.items() if e.get("last_used", 0) < cutoff])
            if max_size is not None:
                by_sha: dict[str, list[str]] = {}
                for u, e in files.items():
                    by_sha.setdefault(e.get("sha256", ""), []).append(u)
                sizes = {s: self._size(self.blob(s)) for s in by_sha}
                total = sum(sizes.values())
                order = sorted(by_sha, key=lambda s: max(files[u].get("last_used", 0) for u in by_sha[s]))
                for sha in order:
                    if total <= max_size:
                        break
                    self._drop(index, by_sha[sha])
                    total -= sizes[sha]
        return self.collect()

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def collect(self, leftovers: bool = True) -> tuple[int, int]:
        """Remove what nothing refers to: unreferenced blobs, stray local files and (`leftovers`) what interrupted
        downloads left: partial files whose download is not running (their lock is free)."""
        removed = freed = 0
        with self.editing() as index:
            for stray in self.root.glob(".index.*.tmp"):  # (writers hold the lock we hold)
                stray.unlink(missing_ok=True)
            shas = {e.get("sha256") for e in index["files"].values()}
            paths = {str(self.root / e["path"]) for e in index["files"].values() if e.get("path")}
            if self.blobs.is_dir():
                for blob in self.blobs.iterdir():
                    if blob.name not in shas:
                        freed += self._size(blob)
                        removed += 1
                        blob.unlink(missing_ok=True)
            if self.files.is_dir():
                for dirpath, dirnames, filenames in os.walk(self.files, topdown=False):
                    for name in filenames:
                        p = os.path.join(dirpath, name)
                        if p not in paths:
                            with contextlib.suppress(OSError):
                                os.unlink(p)
                    for name in dirnames:
                        with contextlib.suppress(OSError):
                            os.rmdir(os.path.join(dirpath, name))
            if leftovers and self.tmp.is_dir():
                for lock in self.tmp.glob("*.lock"):
                    key = lock.name[: -len(".lock")]
                    with self._flock(lock, blocking=False) as got:
                        if not got:
                            continue  # a download is running
                        for p in self.tmp.glob(f"{key}.*"):
                            if p != lock:
                                freed += self._size(p)
                                removed += 1
                                p.unlink(missing_ok=True)
                        lock.unlink(missing_ok=True)
                for p in self.tmp.iterdir():  # parts without a lock file, stray temporaries
                    if not (self.tmp / f"{p.name.split('.')[0]}.lock").exists():
                        freed += self._size(p)
                        removed += 1
                        p.unlink(missing_ok=True)
        return removed, freed
