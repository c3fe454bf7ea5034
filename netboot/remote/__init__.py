"""Network boot, client side: fetch a model over HTTP(S) into a content-addressed cache (or straight into memory).

    urls.py      what a model URL means: which files to fetch and under which local names
    http.py      the httpx client: timeouts, redirects, status checks, retry classification, one-line reasons
    catalog.py   a server's `GET /models` catalog (sha256 and file lists), when it has one
    download.py  one file: ranged parallel transfer, resume (Range + If-Range), retries, sha256 as bytes arrive
    cache.py     blobs by sha256, an index URL -> (sha256, etag, size, ...), per-model directories of links
    progress.py  the stderr progress bar (tqdm) or plain periodic lines
    fetch.py     a whole model: catalog or URL layout, cache hits, fallbacks, --no-disk (memfd)
"""

from netboot.remote.urls import is_url

__all__ = ["is_url"]
