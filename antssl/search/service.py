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
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from antssl import catalog, storage, store, workspace
from antssl.config import Config, StorageConfig
from antssl.errors import AntsslError, BadRequest, NotFound, SearchError, StageOrderError
from antssl.search import ann, exact, places, shards
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
    def n_tiles(self) -> int:
        return len(self.search)

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
        props = {k: _plain(t[k]) for k in _FEATURE_PROPS if k in t}
        props["crs"] = t["crs"] or None
        props["cluster"] = int(self.search.tiles.cluster[i])
        return tile_feature(props, float(self.search.tiles.size_m[i]))

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


_FEATURE_PROPS = (
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


def tile_feature(props: dict[str, Any], size_m: float) -> dict[str, Any]:
    """A tile as a GeoJSON Feature: its footprint in EPSG:4326 (RFC 7946) from the centre
    ``props["x"], props["y"]`` in ``props["crs"]`` (no geometry without a CRS)."""
    geometry = None
    if props.get("crs"):
        half = size_m / 2
        xs = np.array([-1, 1, 1, -1, -1]) * half + float(props["x"])
        ys = np.array([-1, -1, 1, 1, -1]) * half + float(props["y"])
        tr = Transformer.from_crs(CRS.from_user_input(props["crs"]), "EPSG:4326", always_xy=True)
        lon, lat = tr.transform(xs, ys)
        geometry = {
            "type": "Polygon",
            "coordinates": [[[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]],
        }
    return {"type": "Feature", "id": props["tile_id"], "geometry": geometry, "properties": props}


Scatter = Callable[..., list[Any]]


@dataclass
class ShardedServiceIndex:
    """The service's view of a sharded index (:mod:`antssl.search.shards`): the tiles and
    vectors stay in the shards (one Serve deployment each); this holds only the manifest
    and the cluster summary and answers queries by scatter-gather.

    ``scatter(method, *args)`` calls ``Shard.<method>(*args)`` on every shard, in parallel
    where it can, and returns their answers in shard order.
    """

    scatter: Scatter
    manifest: dict[str, Any]
    version: str
    summary: dict[str, Any] | None
    clustered: bool

    @classmethod
    def load(cls, config: Config, scatter: Scatter) -> ShardedServiceIndex:
        uri = workspace.embeddings_uri(config)
        manifest = read_manifest(config)
        if manifest is None or manifest.get("kind") != "ivfpq":
            raise StageOrderError("no sharded (ivfpq) index: run `antssl index`")
        attrs = dict(store.open_group(uri, config.storage).attrs)
        if manifest.get("embeddings_version") != embeddings_version(attrs):
            log.warning(
                "the sharded index at %s was built from embeddings %s, the store holds %s: "
                "results show the indexed embeddings until `antssl index` is re-run",
                workspace.index_uri(config),
                manifest.get("embeddings_version"),
                embeddings_version(attrs),
            )
        summary_uri = storage.join(workspace.maps_uri(config), "clusters.json")
        summary = (
            json.loads(storage.read_text(summary_uri, config.storage))
            if storage.exists(summary_uri, config.storage)
            else None
        )
        clustered = bool((attrs.get("clustering") or {}).get("k")) or summary is not None
        return cls(scatter, manifest, store_version(attrs), summary, clustered)

    @property
    def n_tiles(self) -> int:
        return int(self.manifest["n"])

    @property
    def search_kind(self) -> str:
        return "ivfpq"

    @property
    def state(self) -> str:
        return f"{self.version}|{self.manifest.get('built_at')}"

    @property
    def ann_info(self) -> dict[str, Any]:
        keys = ("kind", "n", "params", "recall_at_10", "built_at", "store_version", "shards")
        return {"search": "ivfpq", "index": {k: self.manifest.get(k) for k in keys}}

    def _examples(self, tile_ids: list[str]) -> dict[str, Any]:
        """Vectors and columns of the example tiles, in order, from their shards (one
        round: each shard answers for the ids it holds)."""
        got = [g for g in self.scatter("examples", tile_ids) if g is not None]
        found = {int(i) for g in got for i in g["asked"]}
        for j, t in enumerate(tile_ids):
            if j not in found:
                raise NotFound(f"tile_id: {t!r} is not in the catalog")
        merged = {k: np.concatenate([np.asarray(g[k]) for g in got]) for k in got[0]}
        order = np.argsort(merged.pop("asked"), kind="stable")
        # an id asked twice is answered twice (by its shard): keep one answer per position
        return {k: v[order] for k, v in merged.items()}

    def feature(self, tile_id: str) -> dict[str, Any]:
        ex = self._examples([tile_id])
        props = {
            "tile_id": str(ex["tile_id"][0]),
            "scene_id": str(ex["scene_id"][0]),
            "x": float(ex["x"][0]),
            "y": float(ex["y"][0]),
            "crs": str(ex["crs"][0]) or None,
            "cluster": int(ex["cluster"][0]),
        }
        return tile_feature(props, float(ex["size_m"][0]))

    def similar(self, q: dict[str, Any], vector: np.ndarray | None = None) -> dict[str, Any]:
        """As :meth:`ServiceIndex.similar`, over the shards."""
        k = int(q["k"])
        opts = {
            "exclude_radius_km": q.get("exclude_radius_km") or 0.0,
            "include_self": bool(q.get("include_self")),
            "distinct": q.get("distinct", True),
        }
        filters = {"scenes": q.get("scenes"), "bbox": q.get("bbox")}
        p = self.manifest["params"]

        def scatter(qv: np.ndarray, m: int) -> list[dict[str, Any]]:
            return self.scatter("search", qv, m, int(p["nprobe"]), int(p["rerank"]), filters)

        examples, neg = None, None
        if vector is not None:
            positives = np.asarray(vector, np.float32).reshape(1, -1)
            echo: dict[str, Any] = {"by": "patch"}
        else:
            ids = q.get("tile_ids")
            if not ids:
                near = [h for h in self.scatter("nearest", float(q["lon"]), float(q["lat"])) if h]
                if not near:
                    raise NotFound(
                        f"lon, lat: ({q['lon']}, {q['lat']}) lies in no tile of the "
                        "catalog (outside every scene's coastal zone)"
                    )
                row = min(near, key=lambda h: h[1])[0]
                ids = [str(self._rows_ids([row])[0])]
            negs = list(q.get("negatives") or [])
            if set(ids) & set(negs):
                raise BadRequest("negatives: a tile cannot be both a positive and a negative")
            examples = self._examples(list(ids))
            positives = examples["vector"]
            neg = self._examples(negs)["vector"] if negs else None
            echo = {"by": "tiles", "tile_ids": list(ids), "negatives": negs}
        if filters["scenes"] is not None and not filters["scenes"]:
            raise BadRequest("scenes is empty: pass None to search every scene")
        try:
            hits = shards.search_sharded(
                scatter, positives, k, examples=examples, negatives=neg, **opts
            )
        except SearchError as err:
            raise BadRequest(str(err)) from None
        echo.update({"k": k, **{key: v for key, v in {**opts, **filters}.items() if v is not None}})
        echo["search"] = "ivfpq"
        out = places.to_geojson(hits, query=echo)
        out["numberRequested"], out["numberReturned"] = k, len(hits)
        out["fewer"] = (
            None
            if len(hits) >= k
            else f"only {len(hits)} place(s) match among {self.n_tiles} tile(s)"
        )
        return out

    def _rows_ids(self, rows: list[int]) -> list[str]:
        bounds = self.manifest["shards"]
        per: dict[int, list[int]] = {}
        for r in rows:
            s = next(i for i, (a, b) in enumerate(bounds) if a <= r < b)
            per.setdefault(s, []).append(r)
        got = [g for g in self.scatter("rows_of", per) if g is not None]
        ids = {int(r): str(t) for g in got for r, t in zip(g["row"], g["tile_id"], strict=True)}
        return [ids[r] for r in rows]

    def clusters(self) -> dict[str, Any]:
        if self.summary is not None:
            return self.summary
        raise NotFound("clusters: no cluster summary (maps/clusters.json); run `antssl maps`")


def load_shards(out: str, storage_cfg: StorageConfig, local: Path) -> list[shards.Shard]:
    """Every shard of the build at ``out`` (copied to ``local`` first when remote)."""
    build = json.loads(storage.read_text(storage.join(out, "build.json"), storage_cfg))
    scenes = shards.Scenes.from_json(
        storage.read_text(storage.join(out, "scenes.json"), storage_cfg)
    )
    return [
        shards.Shard(fetch_shard(out, s, storage_cfg, local), scenes)
        for s in range(len(build["shards"]))
    ]


def fetch_shard(out: str, s: int, storage_cfg: StorageConfig, local: Path) -> Path:
    """The local folder of shard ``s`` of the build at ``out`` (downloaded when remote)."""
    uri = storage.join(out, shards.shard_name(s))
    if storage.scheme_of(uri) == "file":
        return storage.local_path(uri)
    dest = local / out.rstrip("/").rsplit("/", 1)[-1] / shards.shard_name(s)
    done = dest / shards.DONE
    remote_done = storage.read_text(storage.join(uri, shards.DONE), storage_cfg)
    if not (done.exists() and done.read_text() == remote_done):
        tmp = dest.with_name(dest.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        storage.download_dir(uri, tmp, storage_cfg)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


class ShardServer:
    """One shard of the manifest's sharded index, loaded for a service replica (the
    ``SearchShard`` deployment, or in-process): the methods :class:`ShardedServiceIndex`
    scatters to."""

    def __init__(self, config: Config, s: int, local: Path | None = None) -> None:
        self.config, self.s = config, s
        self.local = local or Path(tempfile.gettempdir()) / "antssl-shards"
        self.shard: shards.Shard | None = None
        self.built_at: str | None = None
        self.reload()

    def reload(self) -> dict[str, Any]:
        """Load this shard of the current manifest's build (again when it changed)."""
        manifest = read_manifest(self.config)
        if manifest is None or manifest.get("kind") != "ivfpq":
            raise StageOrderError("no sharded (ivfpq) index: run `antssl index`")
        if self.shard is None or manifest.get("built_at") != self.built_at:
            if self.s >= len(manifest["shards"]):
                raise StageOrderError(
                    f"shard {self.s}: the index now has {len(manifest['shards'])} shard(s); "
                    "restart the service"
                )
            out = storage.join(workspace.index_uri(self.config), manifest["file"])
            text = storage.read_text(storage.join(out, "scenes.json"), self.config.storage)
            folder = fetch_shard(out, self.s, self.config.storage, self.local)
            self.shard = shards.Shard(folder, shards.Scenes.from_json(text))
            self.built_at = manifest.get("built_at")
        return {"shard": self.s, "built_at": self.built_at}

    def _shard(self) -> shards.Shard:
        if self.shard is None:
            raise StageOrderError(f"shard {self.s} is not loaded")
        return self.shard

    def lookup(self, tile_ids: list[str]) -> list[int]:
        return self._shard().lookup(tile_ids)

    def examples(self, tile_ids: list[str]) -> dict[str, Any] | None:
        """Rows and columns of the ``tile_ids`` this shard holds, with ``asked``: their
        positions in ``tile_ids``; None when it holds none."""
        rows = self._shard().lookup(tile_ids)
        asked = [j for j, r in enumerate(rows) if r >= 0]
        if not asked:
            return None
        out = self._shard().rows([rows[j] for j in asked])
        out["asked"] = np.asarray(asked, np.int64)
        return out

    def rows_of(self, per: dict[int, list[int]]) -> dict[str, Any] | None:
        rows = per.get(self.s)
        return None if not rows else self._shard().rows(rows)

    def search(
        self, q: np.ndarray, m: int, nprobe: int, rerank: int, filters: dict[str, Any]
    ) -> dict[str, Any]:
        return self._shard().search(q, m, nprobe=nprobe, rerank=rerank, **filters)

    def nearest(self, lon: float, lat: float) -> tuple[int, float] | None:
        return self._shard().nearest(lon, lat)

    def stats(self) -> dict[str, Any]:
        return {"shard": self.s, **self._shard().stats()}


def local_scatter(servers: list[ShardServer]) -> Scatter:
    """A scatter over in-process shard servers (one process holds every shard)."""

    def scatter(method: str, *args: Any) -> list[Any]:
        return [getattr(srv, method)(*args) for srv in servers]

    return scatter


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
