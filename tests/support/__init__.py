"""What the tests share: random quantized blocks (`quantdata`), small models of every format written on the spot
(`synthetic`), server processes on 127.0.0.1 (`serverprocs`, `servers`), the misbehaving servers
(`faultservers`, run as a script), and where the committed reference outputs lie (`FIXTURES`)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"  # written by scripts/make_references.py
