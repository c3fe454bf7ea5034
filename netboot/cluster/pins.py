"""Stages as the user pins them: `--stages 0-8@NODE,9-17@NODE` (layers as `--explain` numbers them, first and last
included; NODE a node id's first characters or a node's address, optional)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from netboot.cluster.nodes import ClusterError, Node


@dataclass(frozen=True)
class StagePin:
    layers: range
    node: str | None = None  # a node id's prefix or a node's address; None: the largest free node


def parse_stages(text: str) -> int | list[StagePin]:
    """`N` (that many stages, split by capacity) or comma-separated `FIRST-LAST[@NODE]` ranges."""
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ClusterError(f"--stages must be at least 1 (got {text})")
        return int(text)
    pins = []
    for part in text.split(","):
        layers, _, node = part.strip().partition("@")
        found = re.fullmatch(r"(\d+)(?:-(\d+))?", layers.strip())
        if found is None or (_ and not node.strip()):
            raise ClusterError(f"--stages {text!r}: expected N or ranges like 0-8@NODE,9-17@NODE, not {part!r}")
        first = int(found.group(1))
        last = int(found.group(2)) if found.group(2) is not None else first
        if last < first:
            raise ClusterError(f"--stages {text!r}: {layers} ends before it starts")
        pins.append(StagePin(range(first, last + 1), node.strip() or None))
    return pins


def check_pins(pins: list[StagePin], n_layers: int) -> None:
    """The ranges must follow each other from layer 0 to the last, each layer in exactly one."""
    expected = 0
    for pin in pins:
        if pin.layers.start != expected:
            raise ClusterError(f"--stages: the ranges must cover layers 0-{n_layers - 1} in order, one after "
                               f"another; layer {expected} is {'in two' if pin.layers.start < expected else 'in none'}")
        expected = pin.layers.stop
    if expected != n_layers:
        raise ClusterError(f"--stages: the model has layers 0-{n_layers - 1}; the ranges end at {expected - 1}")


def pin_nodes(pins: list[StagePin], nodes: list[Node]) -> list[Node]:
    """A distinct live node for each pin: first the ones the pins name (id prefix or address), then for each pin
    that names none the largest one left (`nodes` come largest first)."""
    free = list(nodes)
    chosen: list[Node | None] = [None] * len(pins)
    for named in (True, False):
        for i, pin in enumerate(pins):
            if (pin.node is not None) != named:
                continue
            matches = [n for n in free if pin.node is None or n.id.startswith(pin.node) or n.address == pin.node]
            if not matches:
                which = f"node {pin.node!r} (id prefix or address)" if named else "node"
                raise ClusterError(f"--stages: no live {which} is left for layers {pin.layers.start}-"
                                   f"{pin.layers.stop - 1} (live: "
                                   f"{', '.join(f'{n.short} at {n.address}' for n in nodes) or 'none'})")
            chosen[i] = matches[0]
            free.remove(matches[0])
    return chosen  # type: ignore[return-value] - every pin got one
