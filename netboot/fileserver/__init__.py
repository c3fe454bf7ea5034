"""`netboot serve`: a read-only HTTP server for model files, with byte ranges, validators and a catalog of models
(per-file and per-layer sha256) at /models."""

from netboot.fileserver.app import ModelServer
from netboot.fileserver.catalog import Catalog

__all__ = ["Catalog", "ModelServer"]
