"""PLACEMENT: where each layer's bytes live, behind one `Weights` protocol (`base`): views of the memory-mapped
file (`resident`), or a ring of buffers read from a source as the forward pass needs them (`streamed`)."""
