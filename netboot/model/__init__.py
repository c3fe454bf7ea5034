"""MODEL: the transformer. `transformer.Model` runs embed, layers [a, b) and logits on a `Backend` and a
`Weights` placement; `layer` holds a layer's steps, written once; `kv_cache` and `rope` are its state and its
rotations."""
