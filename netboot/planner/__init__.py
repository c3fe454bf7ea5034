"""PLANNER: what runs where. `plan` turns a model and the resources into a `Plan` (stages of layer ranges, each
with a device and a residency); `budget` splits a memory budget; `explain` prints a plan."""
