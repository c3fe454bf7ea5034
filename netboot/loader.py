"""From a model reference (path, or none for the default model) to a ready `Model` and its tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netboot.formats import ModelFile, open_model
from netboot.model import Model
from netboot.weights import ResidentWeights


@dataclass
class LoadedModel:
    file: ModelFile
    model: Model

    @property
    def tokenizer(self):
        return self.file.tokenizer


def resolve(ref: str | Path | None) -> Path:
    if ref is None or str(ref) == "default":
        from netboot.default_model import default_model_path

        return default_model_path()
    return Path(ref)


def load(ref: str | Path | None = None, tokenizer: str | Path | None = None) -> LoadedModel:
    """Open a model without copying its weights: every tensor stays a view of the file."""
    file = open_model(resolve(ref), tokenizer)
    return LoadedModel(file, Model(file.config, ResidentWeights(file.tensors)))
