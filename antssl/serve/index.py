"""What the search deployment holds: catalog + embeddings + clusters, and the queries on them.

No Ray and no HTTP here: :class:`ServiceIndex` loads one version of the
workspace (tile catalog, ``embeddings.zarr``, cluster summary) and answers
queries with :mod:`antssl.search`, raising the service's errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from antssl import catalog, search, storage, store, workspace
from antssl.config import Config
from antssl.errors import StageOrderError
from antssl.serve.errors import BadRequest, NotFound


def store_version(attrs: dict[str, Any]) -> str:
    """A version string that changes when tiles are appended, re-embedded or re-clustered."""
    clustering = attrs.get("clustering") or {}
    return f"{attrs.get('tiles')}:{attrs.get('created_at')}:{clustering.get('created_at')}"


@dataclass
class ServiceIndex:
    search: search.SearchIndex
    frame: pd.DataFrame
    version: str
    clustered: bool
    summary: dict[str, Any] | None

    @classmethod
    def current_version(cls, config: Config) -> str:
        group = store.open_group(workspace.embeddings_uri(config), config.storage)
        return store_version(dict(group.attrs))

    @classmethod
    def load(cls, config: Config) -> ServiceIndex:
        uri = workspace.embeddings_uri(config)
        if not store.exists(uri, config.storage):
            raise StageOrderError(f"no embeddings at {uri}: run `antssl embed --config …`")
        group = store.open_group(uri, config.storage)
        attrs = dict(group.attrs)
        emb = np.asarray(group["embedding"][:], dtype=np.float32)
        labels = np.asarray(group["cluster"][:], dtype=np.int32)
        frame = pd.DataFrame(
            catalog.read(workspace.catalog_uri(config), config.storage).drop(columns="geometry")
        )
        if len(frame) < len(emb):
            raise StageOrderError(f"{uri} has more rows than tiles.parquet: re-run tiles")
        frame = frame.iloc[: len(emb)]  # tiles planned but not embedded yet are not served
        summary_uri = storage.join(workspace.maps_uri(config), "clusters.json")
        summary = (
            json.loads(storage.read_text(summary_uri, config.storage))
            if storage.exists(summary_uri, config.storage)
            else None
        )
        index = search.SearchIndex.from_frame(frame, emb, cluster=labels)
        return cls(index, frame, store_version(attrs), bool((labels >= 0).any()), summary)

    def _row(self, tile_id: str) -> int:
        i = self.search.index_of(tile_id)
        if i is None:
            raise NotFound(f"tile_id: {tile_id!r} is not in the catalog")
        return i

    def feature(self, tile_id: str) -> dict[str, Any]:
        """One tile as a GeoJSON Feature: footprint polygon in EPSG:4326 (RFC 7946)."""
        i = self._row(tile_id)
        t = self.frame.iloc[i]
        props = {
            k: _plain(t[k])
            for k in (
                "tile_id",
                "scene_id",
                "row",
                "col",
                "size",
                "x",
                "y",
                "mask_fraction",
                "nodata_fraction",
            )
        }
        props["crs"] = t["crs"] or None
        props["cluster"] = int(self.search.tiles.cluster[i])
        geometry = None
        if t["crs"]:
            half = float(self.search.tiles.size_m[i]) / 2
            xs = np.array([-1, 1, 1, -1, -1]) * half + t["x"]
            ys = np.array([-1, -1, 1, 1, -1]) * half + t["y"]
            tr = Transformer.from_crs(CRS.from_user_input(t["crs"]), "EPSG:4326", always_xy=True)
            lon, lat = tr.transform(xs, ys)
            geometry = {
                "type": "Polygon",
                "coordinates": [[[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]],
            }
        return {"type": "Feature", "id": tile_id, "geometry": geometry, "properties": props}

    def similar(self, q: dict[str, Any], vector: np.ndarray | None = None) -> dict[str, Any]:
        """Analogue places as a FeatureCollection (see :meth:`antssl.search.SearchIndex.query`)."""
        opts = {
            "exclude_radius_km": q.get("exclude_radius_km") or 0.0,
            "include_self": bool(q.get("include_self")),
            "bbox": q.get("bbox"),
            "scenes": q.get("scenes"),
            "distinct": q.get("distinct", True),
        }
        k = int(q["k"])
        if vector is not None:
            hits = self.search.query(np.asarray(vector, np.float32), k, **opts)
            echo = {"by": "patch"}
        else:
            ids = q.get("tile_ids")
            if not ids:
                row = self.search.nearest_tile(float(q["lon"]), float(q["lat"]))
                if row is None:
                    raise NotFound(
                        f"lon, lat: ({q['lon']}, {q['lat']}) lies in no tile of the "
                        "catalog (outside every scene's coastal zone)"
                    )
                ids = [str(self.search.tiles.tile_id[row])]
            pos = [self._row(t) for t in ids]
            neg = [self._row(t) for t in q.get("negatives") or []]
            if set(pos) & set(neg):
                raise BadRequest("negatives: a tile cannot be both a positive and a negative")
            hits = self.search.query_tiles(pos, k, negatives=neg, **opts)
            echo = {"by": "tiles", "tile_ids": ids, "negatives": q.get("negatives") or []}
        echo.update({"k": k, **{key: v for key, v in opts.items() if v is not None}})
        return search.to_geojson(hits, query=echo)

    def clusters(self) -> dict[str, Any]:
        """Cluster sizes and exemplar tiles (from the cluster stage's summary when present)."""
        if not self.clustered:
            raise NotFound("clusters: the store is not clustered yet; run `antssl cluster`")
        if self.summary is not None:
            return self.summary
        labels = self.search.tiles.cluster
        k = int(labels.max()) + 1
        sizes = np.bincount(labels[labels >= 0], minlength=k)
        return {"k": k, "clusters": [{"cluster": j, "size": int(sizes[j])} for j in range(k)]}


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
