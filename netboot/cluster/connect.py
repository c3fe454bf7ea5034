"""`--cluster`: from a model reference to a `Pipeline` whose stages run on a Ray cluster's nodes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from netboot.cluster.nodes import (
    BUDGET_LABEL,
    ClusterError,
    Node,
    connect,
    driver_node,
    live_nodes,
    room_for_layers,
)
from netboot.cluster.pins import StagePin, check_pins, parse_stages, pin_nodes
from netboot.cluster.pipeline import STAGE_TIMEOUT, Pipeline, Stage, start_stage, start_standby
from netboot.cluster.split import split_layers
from netboot.formats import ModelFile
from netboot.formats.names import layer_spans
from netboot.planner.budget import MB, table_bytes
from netboot.sources.urls import is_url


@dataclass
class ClusterModel:
    """What `netboot.loader.load` returns for a cluster: the same fields as a LoadedModel."""

    file: ModelFile
    model: Pipeline
    address: str
    driver: str = ""  # the node this process runs on (its layers' room there is less the table)

    @property
    def tokenizer(self):
        return self.file.tokenizer

    def explain(self) -> str:
        table = table_bytes(self.file)
        source = self.model.ref or "the default model (its own copy)"
        count = len(self.model.stages)
        shared = any(s.node.id == self.driver for s in self.model.stages)
        lines = [f"Ray cluster at {self.address}: {count} stage{'s' if count > 1 else ''}, each loading its layers "
                 f"from {source} on its node",
                 f"driver   node {self.driver[:8]}  embedding and output  {table / MB:8.1f} MB  resident (memory "
                 f"map{'; that node has this much less room for its stage' if shared else ''})"]
        for i, s in enumerate(self.model.stages):
            lines.append(f"stage {i}  node {s.node.short} ({s.node.address}, {_room(s.node)}, pid {s.pid})  layers "
                         f"{s.layers.start}-{s.layers.stop - 1}  {s.nbytes / MB:8.1f} MB  {_residency(s)}")
        for s in self.model.standby:
            lines.append(f"standby  node {s.node.short} ({s.node.address}): kernels loaded, takes a lost range")
        return "\n".join(lines)


def _room(node: Node) -> str:
    if node.budget is not None:
        return f"{BUDGET_LABEL}={node.budget / MB:.0f} MB"
    return f"{node.memory / MB:.0f} MB for actors"


def _residency(stage: Stage) -> str:
    if not stage.streamed:
        return "resident"
    return (f"{len(stage.layers) - len(stage.streamed)} layers resident, {len(stage.streamed)} streamed from the "
            "source each step (the node's budget)")


def load_pipeline(ref: str, file: ModelFile, head, address: str, stages: int | str | list[StagePin] | None = None,
                  threads: int | None = None, positions: int = 512,
                  stage_timeout: float = STAGE_TIMEOUT) -> ClusterModel:
    """Stages over the cluster's live nodes: the `stages` with the most capacity (default all, at most one per
    layer), each a contiguous range with a share of the layers' bytes in proportion to its node's capacity (its
    own budget, label BUDGET_LABEL, else the memory Ray gives its actors); or the ranges and nodes `stages` pins
    (`netboot.cluster.pins`). A stage whose range does not fit its node's budget streams the rest, for sessions of
    up to `positions` tokens; one that does not answer within `stage_timeout` s while a step runs is replaced.
    `head` is the driver's own Model (embedding and output); `ref` is what every stage
    loads on its node."""
    n = file.config.n_layers
    if isinstance(stages, str):
        stages = parse_stages(stages)
    if isinstance(stages, list):
        check_pins(stages, n)
    connect(address)
    nodes = live_nodes()
    if not nodes:
        raise ClusterError(f"the Ray cluster at {address} has no live node with CPUs to hold a stage")
    spans = layer_spans(file)
    sizes = [spans[i].nbytes for i in range(n)]
    here = driver_node()
    rooms = dict(zip((node.id for node in nodes), room_for_layers(nodes, here, table_bytes(file)), strict=True))
    nodes.sort(key=lambda node: (-rooms[node.id], node.id))
    if isinstance(stages, list):
        chosen, ranges = pin_nodes(stages, nodes), [pin.layers for pin in stages]
    else:
        count = min(stages or len(nodes), n)
        if count > len(nodes):
            raise ClusterError(f"--stages {count}: the cluster has {len(nodes)} live nodes with CPUs")
        chosen = nodes[:count]
        ranges = split_layers(sizes, [rooms[node.id] for node in chosen])
    if ref is not None and not is_url(ref):
        ref = os.path.abspath(ref)  # the same path on every node; the default model (None): each node's own copy
    built = [start_stage(ref, r, node, n, threads, sum(sizes[i] for i in r), positions)
             for r, node in zip(ranges, chosen, strict=True)]
    # One standby, on the spare node with the most capacity: it loads its kernels now, so that taking over a lost
    # range costs only reading that range.
    standby = [start_standby(node, threads) for node in [n for n in nodes if n not in chosen][:1]]
    pipeline = Pipeline(file.config, head.weights, head.backend, stages=built, ref=ref, threads=threads,
                        positions=positions, stage_timeout=stage_timeout, standby=standby)
    return ClusterModel(file, pipeline, address, here)
