"""netboot: run a large language model wherever its bytes are.

    import netboot
    loaded = netboot.load()                       # the default model, Gemma 3 270M
    ids = loaded.tokenizer.encode("The capital of France is")
    print(netboot.Generation(loaded.model, loaded.tokenizer, ids, max_tokens=16).text())
"""

from importlib import import_module

__version__ = "0.1.0"

# The public API, imported on first use: the CLI must set thread counts before numpy loads its BLAS.
_EXPORTS = {
    "Backend": "netboot.backends.base",
    "ModelConfig": "netboot.config",
    "FormatError": "netboot.errors",
    "NetbootError": "netboot.errors",
    "UnsupportedError": "netboot.errors",
    "ModelFile": "netboot.formats",
    "open_model": "netboot.formats",
    "Engine": "netboot.engine.scheduler",
    "Request": "netboot.engine.requests",
    "chat_format": "netboot.chat",
    "Generation": "netboot.engine.generate",
    "GenerationStats": "netboot.engine.generate",
    "LoadedModel": "netboot.loader",
    "load": "netboot.loader",
    "KVCache": "netboot.model.kv_cache",
    "Model": "netboot.model.transformer",
    "Plan": "netboot.planner.plan",
    "SamplingParams": "netboot.engine.sampling",
    "Weights": "netboot.placement.base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'netboot' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
