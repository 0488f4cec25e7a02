"""What the search holds: catalog + embeddings + clusters + ANN index, and the queries on them.

No Ray and no HTTP here: :class:`ServiceIndex` loads one version of the
workspace (tile catalog, ``embeddings.zarr``, cluster summary, and the
``antssl index`` ANN index when it was built from these embeddings) and answers
queries with :mod:`antssl.search`, raising the service's errors. With an ANN
index, a query takes candidates from it and ranks, filters and de-duplicates them
exactly; queries with ``bbox`` / ``scenes`` filters, or whose candidates run out,
are answered by exact search.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from antssl import catalog, storage, store, workspace
from antssl.config import Config
from antssl.errors import AntsslError, BadRequest, NotFound, StageOrderError
from antssl.search import ann, exact, places
from antssl.search.manifest import embeddings_version, load_index, read_manifest, store_version

log = logging.getLogger(__name__)


@dataclass
class ServiceIndex:
    search: exact.SearchIndex
    frame: pd.DataFrame
    version: str
    clustered: bool
    summary: dict[str, Any] | None
    ann: ann.AnnIndex | None = None
    ann_info: dict[str, Any] = field(default_factory=lambda: {"search": "exact", "index": None})

    @classmethod
    def current_version(cls, config: Config) -> str:
        """The store version and the index manifest's build time: a change in either is a
        reason to reload."""
        group = store.open_group(workspace.embeddings_uri(config), config.storage)
        manifest = read_manifest(config) or {}
        return f"{store_version(dict(group.attrs))}|{manifest.get('built_at')}"

    @property
    def state(self) -> str:
        """What :meth:`current_version` returned when this was loaded."""
        return f"{self.version}|{(self.ann_info.get('index') or {}).get('built_at')}"

    @property
    def search_kind(self) -> str:
        """The search path: "exact", or the ANN kind ("ivf", "hnsw") giving candidates."""
        return self.ann.kind if self.ann is not None else "exact"

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
        index = exact.SearchIndex.from_frame(frame, emb, cluster=labels)
        nn, info = _load_ann(config, attrs, len(emb))
        version = store_version(attrs)
        return cls(index, frame, version, bool((labels >= 0).any()), summary, nn, info)

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
        if (nn := self.ann) is not None:
            opts["candidates"] = lambda v, m: _candidates(nn, v, m)
        if vector is not None:
            hits, path = self.search.ranked(np.asarray(vector, np.float32), k, **opts)
            echo: dict[str, Any] = {"by": "patch"}
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
            emb = self.search.embeddings
            vecs = None if not neg else emb[neg]
            hits, path = self.search.ranked(
                emb[pos], k, self_index=np.asarray(pos, np.int64), negatives=vecs, **opts
            )
            echo = {"by": "tiles", "tile_ids": ids, "negatives": q.get("negatives") or []}
        opts.pop("candidates", None)
        echo.update({"k": k, **{key: v for key, v in opts.items() if v is not None}})
        echo["search"] = self.search_kind if path == "candidates" else "exact"
        out = places.to_geojson(hits, query=echo)
        out["numberRequested"], out["numberReturned"] = k, len(hits)
        out["fewer"] = None if len(hits) >= k else self._fewer(len(hits), opts)
        return out

    def _fewer(self, n: int, opts: dict[str, Any]) -> str:
        """Why a query found fewer than k places (the filters that leave fewer tiles)."""
        why = [
            name
            for name, active in (
                ("bbox", opts.get("bbox") is not None),
                ("scenes", opts.get("scenes") is not None),
                ("exclude_radius_km", bool(opts.get("exclude_radius_km"))),
                ("distinct places (distinct=true merges overlapping tiles)", opts.get("distinct")),
            )
            if active
        ]
        total = len(self.search)
        return f"only {n} place(s) match: the catalog holds {total} tile(s)" + (
            f", narrowed by {', '.join(why)}" if why else ""
        )

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


def _candidates(nn: ann.AnnIndex, q: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` best rows the ANN finds for ``q``; an IVF index scans at least the cells
    that hold about 2 m vectors (``nprobe >= 2 m nlist / N``), so over-fetching does not
    run out of candidates."""
    if nn.kind != "ivf":
        return nn.search(q, m)[1][0]
    nlist = int(nn.params["nlist"])
    need = math.ceil(2 * m * nlist / max(len(nn), 1))
    nprobe = min(nlist, max(int(nn.params["nprobe"]), need))
    return nn.search(q, m, nprobe=nprobe)[1][0]


def _load_ann(
    config: Config, attrs: dict[str, Any], n: int
) -> tuple[ann.AnnIndex | None, dict[str, Any]]:
    """The ANN index the manifest names when it was built from these embeddings, and what
    /readyz reports about it; (None, …) means exact search (logged when the index is stale)."""
    manifest = read_manifest(config)
    if manifest is None:
        return None, {"search": "exact", "index": None}
    info: dict[str, Any] = {
        "search": "exact",
        "index": {
            k: manifest.get(k)
            for k in ("kind", "n", "params", "recall_at_10", "built_at", "store_version")
        },
    }
    current = embeddings_version(attrs)
    if manifest.get("embeddings_version") != current or manifest.get("n") != n:
        log.warning(
            "the ANN index at %s was built from embeddings %s, the store now holds %s: "
            "exact search until `antssl index` is re-run",
            workspace.index_uri(config),
            manifest.get("embeddings_version"),
            current,
        )
        info["index"]["stale"] = True
        return None, info
    info["index"]["stale"] = False
    if manifest.get("kind") not in ann.KINDS:
        return None, info
    try:
        nn = load_index(config, manifest)
    except AntsslError as err:
        log.warning("cannot load the ANN index (%s): exact search", err)
        info["index"]["error"] = str(err)
        return None, info
    if (len(nn), nn.dim) != (n, int(manifest.get("dim") or nn.dim)):
        log.warning("the ANN index holds %d rows, the store %d: exact search", len(nn), n)
        return None, info
    info["search"] = nn.kind
    return nn, info


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
