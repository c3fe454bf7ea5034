"""The two placements behind one `Weights` protocol: a model whose layers and table are read from the file into a
few buffers computes, through the same backend steps, exactly what the memory-mapped model computes."""

from __future__ import annotations

import numpy as np

from netboot.backends.base import Backend
from netboot.backends.cpu.backend import CpuBackend
from netboot.formats.names import EMBEDDING
from netboot.model.transformer import Model
from netboot.placement.base import Residency, Weights
from netboot.placement.resident import ResidentWeights
from netboot.placement.streamed import StreamedMatrix, StreamedWeights
from netboot.sources.file import FileSource
from netboot.tensors.matrix import Matrix


def test_streamed_and_resident_weights_give_the_same_logits(default_model):
    file = default_model.file
    n = file.config.n_layers
    residency = Residency((0, 5), tuple(i for i in range(n) if i not in (0, 5)), table_resident=False, prefetch=1,
                          chunk_bytes=4 << 20)
    streamed = StreamedWeights(file, FileSource(file.path), residency)
    resident = ResidentWeights(file.tensors)
    try:
        assert isinstance(streamed, Weights) and isinstance(resident, Weights)
        assert isinstance(streamed.output(), StreamedMatrix) and isinstance(streamed.output(), Matrix)
        assert isinstance(resident.output(), Matrix) and isinstance(CpuBackend(), Backend)
        logits = []
        for weights in (resident, streamed):
            model = Model(file.config, weights, CpuBackend(fused_decode=False))
            cache = model.new_cache()
            steps = [model.forward([2, 651, 6037, 529], cache, 0)]
            for pos in range(4, 7):
                steps.append(model.forward([int(np.argmax(steps[-1]))], cache, pos))
            logits.append(np.array(steps))
        np.testing.assert_array_equal(logits[1], logits[0])  # same bytes, same kernels: bit for bit
        ids = np.array([0, 7, file.config.vocab_size - 1])
        np.testing.assert_array_equal(CpuBackend().take_rows(streamed.embedding(), ids),
                                      CpuBackend().take_rows(file.tensors[EMBEDDING], ids))
    finally:
        streamed.close()
