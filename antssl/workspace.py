"""Where each stage's outputs live under the workspace URI (the contract between stages)."""

from __future__ import annotations

from antssl import storage
from antssl.config import Config


def root(config: Config) -> str:
    return storage.normalize_uri(config.workspace)


def path(config: Config, *parts: str) -> str:
    """URI of ``parts`` under the workspace root."""
    return storage.join(root(config), *parts)


def config_uri(config: Config) -> str:
    return path(config, "config.yaml")


def catalog_uri(config: Config) -> str:
    return path(config, "tiles.parquet")


def tiles_summary_uri(config: Config) -> str:
    return path(config, "tiles.json")


def stats_uri(config: Config) -> str:
    return path(config, "stats.json")


def previews_uri(config: Config) -> str:
    return path(config, "previews")


def cache_uri(config: Config) -> str:
    """The tile cache (``antssl cache``): every kept tile as stored, sharded Zarr."""
    return path(config, "tiles.zarr")


def checkpoints_uri(config: Config) -> str:
    return path(config, "checkpoints")


def embeddings_uri(config: Config) -> str:
    return path(config, "embeddings.zarr")


def maps_uri(config: Config) -> str:
    return path(config, "maps")


def index_uri(config: Config) -> str:
    """Folder of the approximate-nearest-neighbour index (``antssl index``)."""
    return path(config, "index")


def scenes_uri(config: Config) -> str:
    """The scene metadata the tiles stage writes (``scenes.json``: one SceneInfo per scene)."""
    return path(config, "scenes.json")
