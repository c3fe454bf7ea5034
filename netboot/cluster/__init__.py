"""A model's layers split into contiguous stages on the nodes of a Ray cluster (`pip install llm-netboot[cluster]`).

`split` chooses the ranges (no Ray needed); `stage` is the Ray actor that holds one range and its KV caches;
`pipeline` drives the stages with a `Model`'s face and moves a lost range to another node, rebuilding its caches;
`connect` reaches the cluster and builds the pipeline. Ray is imported only inside this package.
"""
