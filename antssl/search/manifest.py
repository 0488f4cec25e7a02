"""The index manifest and versions: what the index stage writes and the service loads.

``<workspace>/index/manifest.json`` (written last, the completion marker) names the
faiss index file beside it and what it was built from. Two version strings tie the
pieces together:

- :func:`store_version` changes when tiles are appended, re-embedded or re-clustered
  (the service reloads on it);
- :func:`embeddings_version` changes only when the vectors change (an index built from
  older vectors is not used; re-clustering leaves it valid).

No Ray, no HTTP: the index stage and the service both use this module.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from antssl import storage, workspace
from antssl.config import Config
from antssl.errors import StorageError
from antssl.search import ann
from antssl.search.exact import unit_rows as _unit_rows

MANIFEST = "manifest.json"


def manifest_uri(config: Config) -> str:
    return storage.join(workspace.index_uri(config), MANIFEST)


def store_version(attrs: dict[str, Any]) -> str:
    """A version string that changes when tiles are appended, re-embedded or re-clustered."""
    clustering = attrs.get("clustering") or {}
    return f"{attrs.get('tiles')}:{attrs.get('created_at')}:{clustering.get('created_at')}"


def embeddings_version(attrs: dict[str, Any]) -> str:
    """Changes when the vectors change (tiles appended, store re-created), not on clustering."""
    return f"{attrs.get('tiles')}:{attrs.get('created_at')}:{attrs.get('tile_ids_sha256')}"


def read_manifest(config: Config) -> dict[str, Any] | None:
    """The index manifest, or None when no index was built."""
    uri = manifest_uri(config)
    if not storage.exists(uri, config.storage):
        return None
    try:
        return dict(json.loads(storage.read_text(uri, config.storage)))
    except ValueError as err:
        raise StorageError(f"{uri} is not valid JSON ({err}): re-run `antssl index`") from err


def load_index(config: Config, manifest: dict[str, Any]) -> ann.AnnIndex:
    """The faiss index a manifest names (ivf / hnsw manifests only)."""
    uri = storage.join(workspace.index_uri(config), manifest["file"])
    return ann.AnnIndex.from_bytes(storage.read_bytes(uri, config.storage))


def unit_rows(emb: np.ndarray) -> np.ndarray:
    """(N, D) float32 rows scaled to unit L2 norm; zero or non-finite rows become zero
    (as :class:`antssl.search.SearchIndex` holds them: they never match)."""
    return _unit_rows(emb)[0]
