"""The package's layers: every import of every module (at the top, inside functions, for type checking) points
down the layer order or stays within its layer, and no module imports itself back through others."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import netboot

ROOT = Path(netboot.__file__).parent
# Bottom to top. A module belongs to the first entry that is it or a package above it.
LAYERS = [
    ("ground", ["netboot", "netboot.errors", "netboot.config", "netboot.paths", "netboot.memory", "netboot.sizes",
                "netboot.tensors", "netboot.default_model"]),
    ("sources", ["netboot.sources", "netboot.remote"]),
    ("formats", ["netboot.formats", "netboot.tokenizers"]),
    ("backends", ["netboot.backends"]),
    ("placement", ["netboot.placement"]),
    ("model", ["netboot.model"]),
    ("planner", ["netboot.planner", "netboot.assemble", "netboot.cluster", "netboot.loader"]),
    ("engine", ["netboot.engine", "netboot.chat"]),
    ("interfaces", ["netboot.commands", "netboot.fileserver", "netboot.api", "netboot.repl", "netboot.cli",
                    "netboot.__main__"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, rank = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > rank:
                best, rank = i, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The netboot modules a file imports (`from netboot.x import y` counts netboot.x.y when that is a module)."""
    known = modules()
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("netboot")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("netboot"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return found


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_point_down_or_within_a_layer():
    wrong = []
    for name, path in modules().items():
        for target in imports(path):
            if layer_of(target) > layer_of(name):
                wrong.append(f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not wrong, "imports up the layers:\n" + "\n".join(wrong)


def test_no_import_circle_at_import_time():
    graph = {name: {t for t in imports(path, top_level_only=True) if t != name} for name, path in modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail[trail.index(nxt):] + [node, nxt])
                                     if nxt in trail else f"import circle through {node} -> {nxt}")
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_layering_test_fails_on_an_upward_import(tmp_path, monkeypatch):
    """The check can fail: a ground module importing the engine is caught."""
    fake = tmp_path / "netboot"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "errors.py").write_text("from netboot.engine.generate import Generation\n")
    (fake / "engine").mkdir()
    (fake / "engine" / "__init__.py").write_text("")
    (fake / "engine" / "generate.py").write_text("Generation = None\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake)
    try:
        test_imports_point_down_or_within_a_layer()
    except AssertionError as e:
        assert "netboot.errors (ground) imports netboot.engine.generate (engine)" in str(e)
    else:
        raise AssertionError("an upward import passed the layering check")
