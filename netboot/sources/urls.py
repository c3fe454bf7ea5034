"""What a model URL means: the files to fetch and the local names the format readers need.

- `.../model.gguf` (or any single file): that file.
- `.../model.bin` (llama2.c): the checkpoint, and `tokenizer.bin` beside it when the server has one.
- `.../model.safetensors`: that file, `config.json` beside it, `tokenizer.json` and `tokenizer_config.json` when
  present.
- `.../dir/` (a URL ending in "/"): a SafeTensors directory: config.json, tokenizer.json, tokenizer_config.json
  (optional), and model.safetensors or model.safetensors.index.json with the shards it names.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from netboot.errors import NetbootError


def is_url(ref: object) -> bool:
    return isinstance(ref, str) and ref.lower().startswith(("http://", "https://"))


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise NetbootError(f"not an http(s) URL: {url}")
    return url


def origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def is_dir_url(url: str) -> bool:
    return urlsplit(url).path.endswith("/")


def dir_url(url: str) -> str:
    """The directory a URL's file lies in (the URL itself when it ends in "/"), without query or fragment."""
    parts = urlsplit(url)
    path = parts.path if parts.path.endswith("/") else posixpath.dirname(parts.path).rstrip("/") + "/"
    return urlunsplit((parts.scheme, parts.netloc, path or "/", "", ""))


def file_name(url: str) -> str:
    """The last path segment, percent-decoded: the name the file keeps locally."""
    name = unquote(posixpath.basename(urlsplit(url).path))
    return safe_relpath(name) if name else "index"


def sibling(url: str, name: str) -> str:
    """The URL of `name` in the same directory as `url` (or inside it, for a directory URL)."""
    return urljoin(dir_url(url), name)


def relative_to(url: str, base: str) -> str | None:
    """`url`'s path relative to the directory URL `base`, when it lies under it."""
    u, b = urlsplit(url), urlsplit(base)
    if (u.scheme, u.netloc) != (b.scheme, b.netloc) or not u.path.startswith(b.path):
        return None
    rel = unquote(u.path[len(b.path):])
    return rel or None


def safe_relpath(path: str) -> str:
    """A relative POSIX path with no empty, "." or ".." segments (names from servers must not escape a directory)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or "\x00" in p for p in parts):
        raise NetbootError(f"unsafe file name from the server: {path!r}")
    return "/".join(parts)


def host_dir(url: str) -> str:
    """A directory name for a URL's origin: host_port (scheme kept only when https, so http and https differ)."""
    parts = urlsplit(url)
    host = (parts.hostname or "host").replace(":", "_")  # IPv6 literals
    port = parts.port or (443 if parts.scheme == "https" else 80)
    prefix = "https_" if parts.scheme == "https" else ""
    return safe_relpath(f"{prefix}{host}_{port}")


def local_dir(url: str) -> str:
    """Where in the cache's `files/` tree a URL's directory is materialized: origin, then the URL's path."""
    path = unquote(urlsplit(dir_url(url)).path).strip("/")
    return host_dir(url) + ("/" + safe_relpath(path) if path else "")
