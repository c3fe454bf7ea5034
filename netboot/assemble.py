"""One stage of a plan -> a local `Model`: its weights placed as the stage says (views of the mapped file, or read
from a source), on its backend, with the kernels ready. The loader uses it for a local model; a cluster worker
will use it for its own range of layers."""

from __future__ import annotations

from netboot.backends.base import select
from netboot.formats import ModelFile
from netboot.model.transformer import Model
from netboot.placement.resident import ResidentWeights
from netboot.planner.plan import StagePlan
from netboot.sources.base import ByteSource
from netboot.sources.digests import Expected


def assemble(stage: StagePlan, file: ModelFile, source: ByteSource | None = None,
             hashes: dict[tuple[int, int], Expected] | None = None) -> Model:
    """A model whose weights are placed as `stage` says: resident views of `file`, or streamed from `source`
    (every span with a published digest in `hashes` checked on each read)."""
    if stage.streamed:
        from netboot.placement.streamed import StreamedWeights

        weights = StreamedWeights(file, source, stage.residency, hashes)
    else:
        weights = ResidentWeights(file.tensors)
    return Model(file.config, weights, select(stage.device, fused_decode=stage.fused_decode))
