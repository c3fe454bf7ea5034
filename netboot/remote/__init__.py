"""Network boot, client side: fetch a model over HTTP(S) into a content-addressed cache (or straight into memory).

    http.py      the httpx client: timeouts, redirects, status checks, retry classification, one-line reasons
    catalog.py   a server's `GET /models` catalog (sha256 and file lists), when it has one
    download.py  one file: ranged parallel transfer, resume (Range + If-Range), retries
    sinks.py     where a transfer's bytes go (a partial file with its resume state, or a memfd), the intervals done
    hasher.py    sha256 of a file as its bytes arrive, in a background thread
    cache.py     blobs by sha256, an index URL -> (sha256, etag, size, ...), per-model directories of links
    progress.py  the stderr progress bar (tqdm) or plain periodic lines
    fetch.py     a whole model: the files its catalog or its caller's layout names, cache hits, fallbacks, --no-disk
"""
