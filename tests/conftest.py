"""Shared test fixtures: the default model (Gemma 3 270M Q4_K_M, shipped in pieces as a PyPI package)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from netboot.default_model import default_model_path as assemble_default_model
from netboot.formats.gguf import read_gguf


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The default model's GGUF, assembled (and sha256-verified) once into the netboot cache."""
    return assemble_default_model()


@pytest.fixture(scope="session")
def default_model_metadata(default_model_path: Path) -> dict[str, Any]:
    """The default model's metadata dict, read once per session (checked against gguf's reader in test_gguf)."""
    metadata, _, _ = read_gguf(default_model_path)
    return metadata


@pytest.fixture(scope="session")
def default_model(default_model_path: Path):
    """The default model loaded once per session: `netboot.LoadedModel`."""
    import netboot

    return netboot.load(default_model_path)


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """Compile (first run) or load the kernels once, in this process, before any test starts a `netboot`
    subprocess with a timeout: a fresh machine's first compile takes tens of seconds."""
    import time

    from netboot.backends.cpu.warm import warm

    start = time.perf_counter()
    warm()
    if time.perf_counter() - start > 5:
        print(f"\ncompiled netboot's kernels in {time.perf_counter() - start:.0f} s")


BIG_FILE = 16 << 20  # bytes: a file this large left in a test's temporary directory is deleted after it


def remove_big_files(root: Path) -> None:
    """Delete the large regular files under `root` (models copied or written by tests): pytest keeps the last
    three sessions' temporary directories, which would otherwise hold gigabytes."""
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_size >= BIG_FILE:
                path.unlink()
        except OSError:
            pass


@pytest.fixture(autouse=True)
def big_files_go(request):
    """After each test that has a tmp_path, its large files go (module-scoped ones at the end of the session)."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None:
        remove_big_files(tmp)


@pytest.fixture(scope="session", autouse=True)
def big_files_go_at_the_end(tmp_path_factory):
    yield
    remove_big_files(tmp_path_factory.getbasetemp())


@pytest.fixture
def servers(tmp_path):
    """Server processes on 127.0.0.1 (tests/support/serverprocs.py), all stopped after the test."""
    from support.serverprocs import Servers

    running = Servers(tmp_path)
    yield running
    running.stop()


def pytest_collection_modifyitems(items):
    """A test that starts server processes (the `servers` fixture) talks over loopback: marked `network`."""
    for item in items:
        if "servers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.network)


# Property tests explore new examples on a developer's machine; in CI (CI=true) they replay a fixed set, so that a
# run's outcome depends on the code alone. scripts/fuzz.py is the place for long random campaigns.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
