"""Which files a model needs beside the one its URL names, by format: a SafeTensors file's config.json and tokenizer
files, a SafeTensors directory's files and shards, the tokenizer.bin beside a llama2.c .bin, a tokenizer.json's
tokenizer_config.json; a GGUF needs nothing more.

`ModelLayout` is handed to `netboot.remote.fetch` (which declares what it expects as its `Layout` protocol) and
answers from names and from files already fetched: it reads the local paths it is given (a GGUF's magic, a
SafeTensors index's shard list) and fetches nothing itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NamedTuple

from netboot.errors import NetbootError, shown
from netboot.formats import is_gguf
from netboot.sources.urls import file_name, is_dir_url, sibling

CONFIG = "config.json"
HF_TOKENIZER = "tokenizer.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE = "chat_template.jinja"  # a model's chat template when not in tokenizer_config.json
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
LLAMA2C_TOKENIZER = "tokenizer.bin"


class Companion(NamedTuple):
    """A file a model needs: its name relative to the model's directory, and whether it may be absent."""

    name: str
    optional: bool = False


class ModelLayout:
    """The companion files of the formats netboot reads (GGUF, llama2.c, SafeTensors)."""

    def companions(self, url: str, got: Mapping[str, str | None], tokenizer: bool) -> list[Companion]:
        """Every file the model at `url` needs beside the one it names, as far as `got` tells: the files fetched so
        far (name -> local path, None when optional and absent; the file `url` names under `file_name(url)`).
        `tokenizer`: one is given separately, so none is looked for beside the model."""
        if is_dir_url(url):
            return _safetensors_directory(url, got, tokenizer)
        name = file_name(url)
        if name.endswith(".safetensors"):
            return [Companion(CONFIG), *_hf_tokenizer(tokenizer)]
        if name.endswith(".bin") and not tokenizer and not _is_gguf(got.get(name)):
            return [Companion(LLAMA2C_TOKENIZER, optional=True)]
        return []

    def tokenizer_companions(self, name: str) -> list[Companion]:
        """The files a tokenizer file called `name` needs beside it."""
        return [Companion(HF_TOKENIZER_CONFIG, optional=True)] if name.endswith(".json") else []

    def opens_by_content(self, path: str) -> bool:
        """Whether the model file at `path` opens under any name (a memfd's /proc path): its format is in its
        bytes, not in its name, and it carries its tokenizer."""
        return _is_gguf(path)


def _is_gguf(path: str | None) -> bool:
    return path is not None and is_gguf(path)


def _hf_tokenizer(given: bool) -> list[Companion]:
    if given:
        return []
    return [Companion(HF_TOKENIZER, optional=True), Companion(HF_TOKENIZER_CONFIG, optional=True),
            Companion(CHAT_TEMPLATE, optional=True)]


def _safetensors_directory(url: str, got: Mapping[str, str | None], tokenizer: bool) -> list[Companion]:
    """config.json, the tokenizer, then the shards the index lists, or model.safetensors when there is no index."""
    files = [Companion(CONFIG), *_hf_tokenizer(tokenizer), Companion(SAFETENSORS_INDEX, optional=True)]
    if SAFETENSORS_INDEX not in got:
        return files  # the weights depend on whether the index exists
    index = got[SAFETENSORS_INDEX]
    if index is None:
        return [*files, Companion(SAFETENSORS_FILE)]
    return [*files, *(Companion(shard) for shard in _shards(index, url))]


def _shards(index_path: str, url: str) -> list[str]:
    try:
        with open(index_path, "rb") as f:
            weight_map = json.load(f).get("weight_map")
    except (OSError, ValueError, AttributeError):
        weight_map = None
    if not isinstance(weight_map, dict) or not weight_map:
        raise NetbootError(f"{shown(sibling(url, SAFETENSORS_INDEX))}: no weight_map")
    return sorted({str(v) for v in weight_map.values()})
