"""SOURCE: bytes by range, wherever they lie: a local file (`file`), an HTTP server (`http`), the next copy when
one fails (`fallback`); what a URL means (`urls`), what both HTTP clients agree on (`net`), and the digests that
check a span (`digests`)."""
