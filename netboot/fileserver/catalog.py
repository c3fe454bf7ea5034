"""What a model directory offers: its models and their files, with sha256 of every file, of every layer's byte span
and of every non-layer tensor, for `GET /models`.

Models found under the root (hidden files and directories, names starting with ".", are skipped):
- `*.gguf` (and a `.bin` that starts with the GGUF magic): one file;
- llama2.c `*.bin` (not `tokenizer.bin`): the checkpoint, plus `tokenizer.bin` beside it when there is one;
- a directory holding `config.json` and `*.safetensors`: its shards (those the index names, else every
  `*.safetensors`, in name order) and its `*.json` files (config, tokenizer, index, ...).
A file that does not open as a model, whatever the error, is not listed (it is still served as a plain file) and
never keeps the others from being listed; the reason is kept in `Catalog.problems`, which `GET /models` shows as
"problems": [{"path", "error"}].

Entry (the schema `netboot.remote.catalog` reads; URLs are absolute, built from the request's Host):
    {"name": path relative to the root without the model extension ("sub/tiny"; a SafeTensors directory's own
             relative path; the root itself is named after the root directory),
     "url": the model's URL (a SafeTensors directory's ends in "/"),
     "format": "gguf" | "llama2c" | "safetensors", "architecture": "llama" | "gemma3", "n_layers": int,
     "size": bytes of all its files, "sha256": of the main file (for SafeTensors: of the first shard),
     "files": [{"path": relative to the root, "url", "size", "sha256", "etag": the ETag the file is served with}],
              main file (or the shards, in order) first,
     "tokenizer": URL of tokenizer.bin / tokenizer.json, or null (GGUF carries its own),
     "layers": [{"layer", "file", "start", "end", "sha256" and "xxh3_128": of bytes [start, end) of that file,
                 "tensors": [{"name", "type", "start", "end"}]}],
     "globals": [{"name", "type", "file", "start", "end", "sha256", "xxh3_128"}]}   (token_embd, output_norm, ...)
Tensor names are GGUF's canonical names whatever the format. A layer's tensors all lie in one file for GGUF and
llama2.c; a SafeTensors checkpoint may split one layer over two shards: `layers` then holds one record per
(layer, file), in layer order, and [start, end) is the span of that layer's tensors within that file. For
SafeTensors, "type" and the byte ranges are those of the stored tensor (F32, F16 or BF16), also for the Gemma norm
weights that netboot turns into 1 + w when it loads them.

Spans carry two digests: sha256, and xxh3_128 (10x faster to check: a streaming client checks every span it reads on
every token; both come from this server, so they guard against corruption on the way, not against the server).
Digests are computed once (one pass over each file) and cached in ROOT/.netboot/hashes.json, keyed by relative path,
size and mtime_ns, or, when the root is not writable, in `netboot.paths.cache_dir()/server-hashes/`.
`Catalog.refresh()` re-stats every file on each call and re-describes only what changed, so a catalog is never
stale, and a file that changes while it is hashed is hashed again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from netboot.errors import NetbootError
from netboot.formats import is_gguf
from netboot.sources.digests import SPAN_DIGESTS

HASH_DIR = ".netboot"
HASH_FILE = "hashes.json"
HASH_VERSION = 2  # 2: spans carry sha256 and xxh3_128
CHUNK = 4 << 20


def etag(size: int, mtime_ns: int) -> str:
    """The strong ETag a file of this size and modification time is served with (and listed with)."""
    return f'"{size:x}-{mtime_ns:x}"'


def url_path(rel: str, directory: bool = False) -> str:
    """The URL path of a relative path ("" is the root)."""
    path = "/" + quote(rel, safe="/") if rel else ""
    return path + "/" if directory else path or "/"


def is_hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/") if part)


@dataclass(frozen=True)
class FileStat:
    rel: str
    size: int
    mtime_ns: int


@dataclass
class Candidate:
    """Something under the root that looks like a model, before it is opened."""

    name: str
    format: str  # "gguf", "llama2c" or "safetensors"
    main: str  # relative path of the model file, or of the SafeTensors directory ("" for the root)
    watched: tuple[FileStat, ...]  # every file whose change changes the entry
    tokenizer: str | None = None  # llama2.c: tokenizer.bin beside the checkpoint


@dataclass
class Catalog:
    root: Path
    entries: list[dict[str, Any]] = field(default_factory=list)  # URLs are paths: see render()
    problems: dict[str, str] = field(default_factory=dict)  # relative path -> why it is not listed

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        self.hashes = HashCache(self.root)
        self._lock = threading.Lock()
        self._described: dict[tuple, dict[str, Any] | str] = {}  # (format, main, watched) -> entry or error
        self._gguf: dict[FileStat, bool] = {}

    # -- scanning -----------------------------------------------------------------------------------------------

    def scan(self) -> list[Candidate]:
        """The model candidates under the root, by stat only (cheap: no file is read but a 4-byte magic)."""
        out: list[Candidate] = []
        root = str(self.root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            here = os.path.relpath(dirpath, root)
            here = "" if here == "." else here.replace(os.sep, "/")
            files: dict[str, FileStat] = {}
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel = f"{here}/{name}" if here else name
                st = self._stat_inside(rel)
                if st is not None:
                    files[name] = st
            shards = [n for n in files if n.endswith(".safetensors")]
            if "config.json" in files and shards:
                name = here or self.root.name
                out.append(Candidate(name, "safetensors", here, tuple(files.values())))
            for name, st in files.items():
                stem, ext = os.path.splitext(st.rel)
                if ext == ".gguf":
                    out.append(Candidate(stem, "gguf", st.rel, (st,)))
                elif ext == ".bin" and name != "tokenizer.bin":
                    if self._is_gguf(st):
                        out.append(Candidate(stem, "gguf", st.rel, (st,)))
                        continue
                    tok = files.get("tokenizer.bin")
                    out.append(Candidate(stem, "llama2c", st.rel, (st, tok) if tok else (st,),
                                         tok.rel if tok else None))
        # two models with one name (a.gguf and a.bin): both keep their extension
        counts: dict[str, int] = {}
        for c in out:
            counts[c.name] = counts.get(c.name, 0) + 1
        for c in out:
            if counts[c.name] > 1 and c.format != "safetensors":
                c.name = c.main
        return out

    def _stat_inside(self, rel: str) -> FileStat | None:
        """The stat of a regular file under the root that is not reached through a symlink leading out of the
        root (or to a hidden path inside it)."""
        path = os.path.join(self.root, rel)
        try:
            if os.path.islink(path):
                real = os.path.realpath(path)
                inside = os.path.relpath(real, self.root)
                if inside.startswith("..") or os.path.isabs(inside) or is_hidden(inside.replace(os.sep, "/")):
                    return None
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return FileStat(rel, st.st_size, st.st_mtime_ns)

    def _is_gguf(self, st: FileStat) -> bool:
        """Whether a `.bin` is really a GGUF file, read once per version of it."""
        if st not in self._gguf:
            self._gguf[st] = is_gguf(self.root / st.rel)
        return self._gguf[st]

    # -- describing -----------------------------------------------------------------------------------------------

    def refresh(self) -> list[dict[str, Any]]:
        """Re-stat everything; describe (open, hash) what is new or changed; return the entries (URL paths)."""
        with self._lock:
            entries, problems, keep = [], {}, {}
            for cand in self.scan():
                key = (cand.format, cand.main, cand.watched)
                described = self._described.get(key)
                if described is None:
                    described = self._describe(cand)
                keep[key] = described
                if isinstance(described, str):
                    problems[cand.main or "."] = described
                else:
                    described["name"] = cand.name
                    entries.append(described)
            self._described = keep
            if len(self._gguf) > 4 * len(keep) + 64:
                self._gguf.clear()
            self.entries, self.problems = entries, problems
            self.hashes.prune({f.rel for key in keep for f in key[2]})
            self.hashes.save()
            return entries

    def _describe(self, cand: Candidate) -> dict[str, Any] | str:
        for _ in range(3):
            try:
                entry = describe(self.root, cand, self.hashes)
            except NetbootError as e:
                return str(e)
            except (OSError, ValueError) as e:
                return f"{cand.main}: {e}"
            except Exception as e:  # noqa: BLE001 - a reader's bug on one hostile file must not spoil the others
                return f"{cand.main}: cannot be read as a {cand.format} model ({type(e).__name__}: {e})"
            # The bytes hashed must be those of the files as stat'ed: else a file changed meanwhile, hash again.
            now = tuple(self._stat_inside(f.rel) for f in cand.watched)
            if now == cand.watched:
                return entry
        return f"{cand.main}: the files kept changing while they were hashed"

    def render(self, base: str) -> list[dict[str, Any]]:
        """The entries with absolute URLs under `base` ("http://host:port")."""
        return [render_entry(e, base) for e in self.entries]

    def render_problems(self) -> list[dict[str, str]]:
        """What looks like a model but is not listed, and why: [{"path": relative path, "error"}]."""
        return [{"path": rel, "error": why} for rel, why in sorted(self.problems.items())]


def render_entry(entry: dict[str, Any], base: str) -> dict[str, Any]:
    out = copy.deepcopy(entry)
    out["url"] = base + out["url"]
    if out["tokenizer"]:
        out["tokenizer"] = base + out["tokenizer"]
    for f in out["files"]:
        f["url"] = base + f["url"]
    return out


def describe(root: Path, cand: Candidate, hashes: HashCache) -> dict[str, Any]:
    """The catalog entry of one model (URLs as paths), hashing what the cache does not hold."""
    from netboot.formats import open_model
    from netboot.formats.names import global_tensors, layer_byte_ranges

    stats = {f.rel: f for f in cand.watched}
    model = open_model(root / cand.main if cand.main else root)
    if cand.format == "safetensors":
        shards, locations = _safetensors_locations(root, cand.main, model, set(stats))
        jsons = [f.rel for f in cand.watched if f.rel.endswith(".json")]
        files = shards + jsons
        tok_rel = f"{cand.main}/tokenizer.json" if cand.main else "tokenizer.json"
        tokenizer = tok_rel if tok_rel in stats else None
    else:
        # tensor name -> (file, start, end, type): GGUF and llama2.c tensors lie in the one file
        locations = {t.name: (cand.main, t.offset, t.offset + t.nbytes, t.qtype.name) for t in model.tensors.values()}
        files = [cand.main] + ([cand.tokenizer] if cand.tokenizer else [])
        tokenizer = cand.tokenizer

    layers: list[dict[str, Any]] = []
    for layer in layer_byte_ranges(model):
        by_file: dict[str, list[dict[str, Any]]] = {}
        for t in layer["tensors"]:
            rel, start, end, qtype = locations[t["name"]]
            by_file.setdefault(rel, []).append({"name": t["name"], "type": qtype, "start": start, "end": end})
        for rel in sorted(by_file, key=files.index):
            tensors = sorted(by_file[rel], key=lambda t: t["start"])
            layers.append({"layer": layer["layer"], "file": rel, "start": min(t["start"] for t in tensors),
                           "end": max(t["end"] for t in tensors), "sha256": None, "xxh3_128": None,
                           "tensors": tensors})
    globals_ = []
    for name in sorted((t.name for t in global_tensors(model)), key=lambda n: locations[n][1:3]):
        rel, start, end, qtype = locations[name]
        globals_.append({"name": name, "type": qtype, "file": rel, "start": start, "end": end, "sha256": None,
                         "xxh3_128": None})

    spans: dict[str, set[tuple[int, int]]] = {rel: set() for rel in files}
    for r in layers + globals_:
        spans[r["file"]].add((r["start"], r["end"]))
    digests = {rel: hashes.digest(root, stats[rel], spans[rel]) for rel in files}
    for r in layers + globals_:
        r.update(digests[r["file"]][1][(r["start"], r["end"])])

    file_entries = [{"path": rel, "url": url_path(rel), "size": stats[rel].size, "sha256": digests[rel][0],
                     "etag": etag(stats[rel].size, stats[rel].mtime_ns)} for rel in files]
    return {
        "name": cand.name,
        "url": url_path(cand.main, directory=cand.format == "safetensors"),
        "format": cand.format,
        "architecture": model.config.arch,
        "n_layers": model.config.n_layers,
        "size": sum(f["size"] for f in file_entries),
        "sha256": file_entries[0]["sha256"],
        "files": file_entries,
        "tokenizer": url_path(tokenizer) if tokenizer else None,
        "layers": layers,
        "globals": globals_,
    }


def _safetensors_locations(root: Path, main: str, model, visible: set[str]):
    """The shards of a SafeTensors checkpoint (relative paths, in order) and, per canonical tensor name, (shard,
    start, end, stored dtype), from the shards' own headers (the loaded model holds 1 + w copies of Gemma's norms,
    whose size is not the stored one)."""
    from netboot.formats import safetensors as st

    family = "llama" if model.metadata.get("hf.architecture") in st.LLAMA_ARCHS else "gemma3"
    directory = root / main if main else root
    shards: list[str] = []
    out: dict[str, tuple[str, int, int, str]] = {}
    for shard in st.safetensors_files(directory):
        rel = f"{main}/{shard.name}" if main else shard.name
        if shard.parent != directory or rel not in visible:
            raise NetbootError(f"{directory}: shard {shard} is not a file of the model's directory")
        shards.append(rel)
        for name, (dtype, _shape, data, offset) in st.read_safetensors(shard).items():
            canonical = st._canonical_name(name, family)
            if canonical in model.tensors:
                out[canonical] = (rel, offset, offset + data.nbytes, dtype)
    missing = set(model.tensors) - set(out)
    if missing:
        raise NetbootError(f"{directory}: cannot place tensors {sorted(missing)[:3]} in the shards")
    return shards, out


# -- hashes ---------------------------------------------------------------------------------------------------------


def hash_file(path: Path, spans: set[tuple[int, int]] | None = None) -> tuple[str, dict[tuple[int, int], dict]]:
    """sha256 of the whole file, and each SPAN_DIGESTS of each [start, end) span, in one sequential pass."""
    ordered = sorted(spans or ())
    whole = hashlib.sha256()
    hashers = [_SpanHashers() for _ in ordered]
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    pos = 0
    first = 0  # spans before this index end before the current chunk
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            chunk = view[:n]
            whole.update(chunk)
            lo, hi = pos, pos + n
            while first < len(ordered) and ordered[first][1] <= lo:
                first += 1
            for i in range(first, len(ordered)):
                start, end = ordered[i]
                if start >= hi:
                    break
                if end > lo:
                    hashers[i].update(chunk[max(start, lo) - lo : min(end, hi) - lo])
            pos = hi
    if ordered and max(e for _, e in ordered) > pos:
        raise NetbootError(f"{path}: a tensor ends past the end of the file ({pos} bytes)")
    return whole.hexdigest(), {s: h.hexdigests() for s, h in zip(ordered, hashers, strict=True)}


class _SpanHashers:
    def __init__(self):
        self.hashers = {name: new() for name, new in SPAN_DIGESTS.items()}

    def update(self, data) -> None:
        for h in self.hashers.values():
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self.hashers.items()}


class HashCache:
    """{"version": 2, "files": {rel: {"size", "mtime_ns", "sha256", "ranges": {"START-END": {digest: hex}}}}}, in
    ROOT/.netboot/hashes.json, or in the netboot cache directory when the root is not writable."""

    def __init__(self, root: Path):
        self.root = root
        self.own = root / HASH_DIR / HASH_FILE
        from netboot.paths import cache_dir

        key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        self.fallback = cache_dir() / "server-hashes" / f"{key}.json"
        self.files: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self.location: Path | None = None  # where it was last saved
        for path in (self.own, self.fallback):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("version") == HASH_VERSION and isinstance(data.get("files"), dict):
                self.files = data["files"]
                break

    def digest(self, root: Path, st: FileStat, spans: set[tuple[int, int]]) -> tuple[str, dict[tuple[int, int], dict]]:
        record = self.files.get(st.rel)
        if not isinstance(record, dict) or record.get("size") != st.size or record.get("mtime_ns") != st.mtime_ns:
            record = None
        if record is not None:
            ranges = record.get("ranges") or {}
            try:
                have = {s: ranges[f"{s[0]}-{s[1]}"] for s in spans}
            except KeyError:
                have = None
            if have is not None and isinstance(record.get("sha256"), str):
                return record["sha256"], have
        whole, parts = hash_file(root / st.rel, spans)
        old = record.get("ranges", {}) if record else {}
        self.files[st.rel] = {"size": st.size, "mtime_ns": st.mtime_ns, "sha256": whole,
                              "ranges": {**old, **{f"{s}-{e}": h for (s, e), h in parts.items()}}}
        self.dirty = True
        return whole, parts

    def prune(self, keep: set[str]) -> None:
        for rel in [r for r in self.files if r not in keep]:
            del self.files[rel]
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        data = json.dumps({"version": HASH_VERSION, "files": self.files}, separators=(",", ":"))
        for path in (self.own, self.fallback):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hashes-", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w") as f:
                        f.write(data)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, path)
                except BaseException:
                    os.unlink(tmp)
                    raise
            except OSError:
                continue
            self.location, self.dirty = path, False
            return
