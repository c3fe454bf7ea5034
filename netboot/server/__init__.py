"""`netboot serve`: a read-only HTTP server for model files, with byte ranges, validators and a catalog of models
(per-file and per-layer sha256) at /models."""

from netboot.server.app import ModelServer
from netboot.server.catalog import Catalog

__all__ = ["Catalog", "ModelServer"]
