"""netboot: run a large language model wherever its bytes are.

    import netboot
    loaded = netboot.load()                       # the default model, Gemma 3 270M
    ids = loaded.tokenizer.encode("The capital of France is")
    print(netboot.Generation(loaded.model, loaded.tokenizer, ids, max_tokens=16).text())
"""

from netboot.config import ModelConfig
from netboot.errors import FormatError, NetbootError, UnsupportedError
from netboot.formats import ModelFile, open_model
from netboot.generate import Generation, GenerationStats
from netboot.loader import LoadedModel, load
from netboot.model import KVCache, Model
from netboot.sampling import SamplingParams

__version__ = "0.1.0"

__all__ = [
    "FormatError", "Generation", "GenerationStats", "KVCache", "LoadedModel", "Model", "ModelConfig", "ModelFile",
    "NetbootError", "SamplingParams", "UnsupportedError", "load", "open_model",
]
