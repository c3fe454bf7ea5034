"""Where netboot keeps what it writes: the one place that knows ~/.cache/netboot and NETBOOT_CACHE."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("NETBOOT_CACHE") or Path.home() / ".cache" / "netboot")
