"""COMPUTE: the operations of one transformer layer on one kind of device, behind the `Backend` protocol
(`base`). `cpu/` runs numba kernels on the block bytes; a GPU backend slots in beside it."""
