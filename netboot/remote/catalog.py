"""A model server's catalog: `GET {origin}/models` -> {"models": [entry, ...]}, entry = {"name", "url", "format",
"architecture", "n_layers", "size", "sha256", "files": [{"path", "url", "size", "sha256", "etag"}], "tokenizer",
"layers", "globals"}. netboot's own server has one; nginx or `python -m http.server` do not (then the URL alone
says what to fetch, and nothing but --sha256 pins the bytes)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from netboot.sources.digests import SPAN_DIGESTS
from netboot.sources.urls import origin

if TYPE_CHECKING:
    import httpx

_lock = threading.Lock()
_catalogs: dict[str, list[dict] | None] = {}  # origin -> entries (None: the server has no catalog)


@dataclass
class CatalogFile:
    url: str
    path: str
    size: int | None
    sha256: str | None


@dataclass
class CatalogModel:
    url: str
    files: list[CatalogFile]
    main: CatalogFile | None  # the file the URL names (None for a directory URL)
    tokenizer: CatalogFile | str | None


def _key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return unquote(parts.path), parts.query


def fetch_catalog(client: httpx.Client, url: str) -> list[dict] | None:
    """The origin's catalog entries, asked once per process and origin; None when there is none (any answer but a
    200 with the JSON shape above) or the server could not be asked."""
    import httpx

    org = origin(url)
    with _lock:
        if org in _catalogs:
            return _catalogs[org]
    try:
        # Half the patience of a file request: a server that does not answer at all is found out by that one.
        wait = client.timeout.read
        response = client.get(org + "/models", headers={"Accept": "application/json"},
                              timeout=httpx.Timeout(wait / 2) if wait else client.timeout)
    except httpx.HTTPError:
        return None  # not remembered: the file request will say what is wrong
    entries = None
    if response.status_code == 200:
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            entries = [e for e in data["models"] if isinstance(e, dict)]
    with _lock:
        _catalogs[org] = entries
    return entries


def _list(value: object) -> list:
    """A catalog field that should be a list: anything else counts as absent (a server's JSON is not trusted)."""
    return value if isinstance(value, list) else []


def _size(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _sha256(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    return None


def _file(base: str, f: dict) -> CatalogFile | None:
    if not isinstance(f, dict) or not isinstance(f.get("url"), str) or not f["url"]:
        return None
    url = urljoin(base, f["url"])
    path = f.get("path")
    return CatalogFile(url, path if isinstance(path, str) and path else unquote(urlsplit(url).path.rsplit("/", 1)[-1]),
                       _size(f.get("size")), _sha256(f.get("sha256")))


def find(entries: list[dict] | None, url: str) -> CatalogModel | None:
    """The catalog's model for `url`: the entry whose url it is, or the entry one of whose files it is."""
    if not entries:
        return None
    base = origin(url) + "/models"
    want = _key(url)
    for by_file in (False, True):
        for e in entries:
            files = [f for f in (_file(base, f) for f in _list(e.get("files"))) if f is not None]
            eurl = urljoin(base, e["url"] if isinstance(e.get("url"), str) else "")
            main = None
            if not by_file:
                if not e.get("url") or _key(eurl) != want:
                    continue
                main = next((f for f in files if _key(f.url) == want), None)
                if main is None and not want[0].endswith("/"):
                    if not files:  # an entry without a file list: the URL is the file
                        files = [CatalogFile(eurl, eurl.rsplit("/", 1)[-1], _size(e.get("size")),
                                             _sha256(e.get("sha256")))]
                    main = files[0] if len(files) == 1 else None
            else:
                main = next((f for f in files if _key(f.url) == want), None)
                if main is None:
                    continue
            tok = e.get("tokenizer")
            tokenizer = None
            if isinstance(tok, str) and tok:
                tok_url = urljoin(base, tok)
                tokenizer = next((f for f in files if _key(f.url) == _key(tok_url)), None) or _lookup_file(
                    entries, base, tok_url) or tok_url
            return CatalogModel(eurl, files, main, tokenizer)
    return None


def _lookup_file(entries: list[dict], base: str, url: str) -> CatalogFile | None:
    for e in entries:
        for f in _list(e.get("files")):
            cf = _file(base, f)
            if cf is not None and _key(cf.url) == _key(url):
                return cf
    return None


def file_sha256(entries: list[dict] | None, url: str) -> str | None:
    """The sha256 the catalog gives for the file at `url` (as a model's file, or as the model itself), or None."""
    model = find(entries, url)
    if model is None or model.main is None:
        return None
    return model.main.sha256


def span_hashes(entries: list[dict] | None, url: str) -> dict[tuple[int, int], tuple[str, str]]:
    """(digest name, hex) by byte span [start, end) of the file at `url`: its layers' and its global tensors', as the
    catalog publishes them, with the first of SPAN_DIGESTS it gives. Empty when the server has no catalog or does
    not list the file."""
    if not entries:
        return {}
    base = origin(url) + "/models"
    want = _key(url)
    for e in entries:
        for f in _list(e.get("files")):
            cf = _file(base, f)
            if cf is None or _key(cf.url) != want:
                continue
            spans = {}
            for r in _list(e.get("layers")) + _list(e.get("globals")):
                if not isinstance(r, dict) or r.get("file") != cf.path or _size(r.get("start")) is None \
                        or _size(r.get("end")) is None:
                    continue
                for name, new in SPAN_DIGESTS.items():
                    digest = r.get(name)
                    if isinstance(digest, str) and len(digest) == 2 * new().digest_size:
                        spans[(int(r["start"]), int(r["end"]))] = (name, digest.lower())
                        break
            return spans
    return {}
