"""The cluster stage: distributed mini-batch k-means over the embeddings store, on Ray.

Actors each own a contiguous range of whole Zarr chunks of ``embedding`` and
load it once. Every mini-batch step the driver sends each actor the global
row indices that fall in its range and the centroids; the actor returns the
partial sums and counts (:class:`antssl.kmeans.PartialStats`), the driver
merges them in shard order and applies Sculley's update (the loop is
:func:`antssl.kmeans.fit`, the same code that runs in one process). A final
pass has each actor label its rows and write them to ``cluster`` (its own
chunks only), and the driver writes ``centroids`` and the settings.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from antssl import kmeans, store
from antssl.config import ClusterConfig, Config, StorageConfig
from antssl.errors import ConfigError, StageOrderError

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0.5)
class _Shard:
    """Rows [start, stop) of ``embedding`` (whole chunks), held in memory."""

    def __init__(
        self,
        uri: str,
        storage_cfg: StorageConfig,
        start: int,
        stop: int,
        metric: str,
        hold: str = "float32",
    ):
        group = store.open_group(uri, storage_cfg)
        arr = group["embedding"]
        step = int(arr.chunks[0])
        self.x = np.empty((stop - start, int(arr.shape[1])), dtype=hold)
        bad = []
        for a in range(start, stop, step):  # chunk by chunk: no float32 copy of the range
            raw = np.asarray(arr[a : min(stop, a + step)], dtype=np.float32)
            bad.append(np.flatnonzero(~np.isfinite(raw).all(axis=1)) + a)
            self.x[a - start : a - start + len(raw)] = (
                kmeans.normalize_rows(raw) if metric == "cosine" else raw
            )
        self.bad = np.concatenate(bad) if bad else np.empty(0, np.int64)
        self.uri, self.storage_cfg, self.start, self.stop, self.metric = (
            uri,
            storage_cfg,
            start,
            stop,
            metric,
        )

    def bad_rows(self) -> np.ndarray:
        return self.bad

    def take(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.x[idx - self.start], dtype=np.float32)

    def batch_stats(self, idx: np.ndarray, c: np.ndarray) -> kmeans.PartialStats:
        return kmeans.partial_stats(self.x[idx - self.start], c, self.metric)  # type: ignore[arg-type]

    def full_stats(self, c: np.ndarray) -> kmeans.PartialStats:
        return kmeans.partial_stats(self.x, c, self.metric)  # type: ignore[arg-type]

    def label(self, c: np.ndarray, n_exemplars: int, write: bool) -> dict[str, Any]:
        """Assign every row; write labels to ``cluster`` (own chunks); exemplars per cluster."""
        labels, d2 = kmeans.assign(self.x, c, self.metric)  # type: ignore[arg-type]
        if write:
            group = store.open_group(self.uri, self.storage_cfg, mode="r+")
            group["cluster"][self.start : self.stop] = labels
        exemplars: dict[int, list[tuple[float, int]]] = {}
        for j in np.unique(labels).tolist():
            rows = np.flatnonzero(labels == j)
            best = rows[np.argsort(d2[rows], kind="stable")[:n_exemplars]]
            exemplars[j] = [(float(d2[r]), int(r + self.start)) for r in best]
        return {
            "inertia": float(d2.sum(dtype=np.float64)),
            "labels": labels,
            "exemplars": exemplars,
        }


class _RaySource:
    """:class:`antssl.kmeans.RowSource` over :class:`_Shard` actors."""

    def __init__(self, shards: list[Any], bounds: np.ndarray) -> None:
        self.shards, self.bounds, self.n = shards, bounds, int(bounds[-1])

    def _split(self, idx: np.ndarray) -> list[tuple[Any, np.ndarray]]:
        parts = np.split(idx, np.searchsorted(idx, self.bounds[1:-1]))
        return [(s, p) for s, p in zip(self.shards, parts, strict=True) if len(p)]

    def take(self, idx: np.ndarray) -> np.ndarray:
        order = np.argsort(idx, kind="stable")
        rows = ray.get([s.take.remote(p) for s, p in self._split(idx[order])])
        out = np.empty((len(idx), rows[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(rows)
        return out

    def batch_stats(self, idx: np.ndarray, c: np.ndarray) -> kmeans.PartialStats:
        cref = ray.put(c)
        return kmeans.PartialStats.merge(
            ray.get([s.batch_stats.remote(p, cref) for s, p in self._split(idx)])
        )

    def full_stats(self, c: np.ndarray) -> kmeans.PartialStats:
        cref = ray.put(c)
        return kmeans.PartialStats.merge(ray.get([s.full_stats.remote(cref) for s in self.shards]))


@dataclass
class ClusterResult:
    """What the stage computed: labels (N,), centroids (k, D), inertia and how k was chosen."""

    k: int
    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    exemplars: dict[int, list[int]]
    scores: list[dict[str, float]] = field(default_factory=list)
    explanation: str = ""


def hold_dtype(hold: str, n: int, dim: int) -> str:
    """The dtype actors hold rows in: ``cluster.hold`` or, for auto, float16 from
    :data:`HOLD_FLOAT16_VALUES` values up (halves the actors' memory; distances are
    still computed in float32)."""
    if hold != "auto":
        return hold
    return "float16" if n * dim >= HOLD_FLOAT16_VALUES else "float32"


HOLD_FLOAT16_VALUES = 500_000_000  # 2 GB of float32: ~3.9 M tiles at D = 128


def start_shards(
    uri: str, storage_cfg: StorageConfig, metric: str, num_actors: int, hold: str = "auto"
) -> tuple[list[Any], np.ndarray]:
    """Actors over whole-chunk row ranges; raises on NaN/inf rows (naming them)."""
    group = store.open_group(uri, storage_cfg)
    if "embedding" not in group or group["embedding"].shape[0] == 0:
        raise StageOrderError(f"no embeddings in {uri}: run `antssl embed --config …` first")
    pending = store.pending_chunks(group) if "chunk_done" in group else []
    if pending:
        raise StageOrderError(
            f"{uri} has {len(pending)} chunk(s) not embedded yet: re-run `antssl embed`"
        )
    n, rows = group["embedding"].shape[0], group["embedding"].chunks[0]
    chunks = store.n_chunks(n, rows)
    cuts = np.linspace(0, chunks, min(num_actors, chunks) + 1).round().astype(np.int64)
    bounds = np.minimum(cuts * rows, n)
    dtype = hold_dtype(hold, int(n), int(group["embedding"].shape[1]))
    shards = [
        _Shard.remote(uri, storage_cfg, int(a), int(b), metric, dtype)
        for a, b in itertools.pairwise(bounds)
    ]
    bad = np.concatenate(ray.get([s.bad_rows.remote() for s in shards]))
    if len(bad):
        raise ConfigError(
            f"{uri} holds {len(bad)} embedding row(s) with NaN or inf, e.g. rows "
            f"{bad[:10].tolist()}; re-embed them (embed.overwrite: true) before clustering"
        )
    return shards, bounds


def fit_store(
    uri: str, storage_cfg: StorageConfig, cfg: ClusterConfig, write: bool = True
) -> ClusterResult:
    """k-means on the store's embeddings; picks k from candidates by silhouette."""
    shards, bounds = start_shards(uri, storage_cfg, cfg.metric, cfg.num_actors, cfg.hold)
    source = _RaySource(shards, bounds)
    candidates = cfg.k if isinstance(cfg.k, list) else [cfg.k]
    too_big = [k for k in candidates if k > source.n]
    if too_big:
        raise ConfigError(f"cluster.k {too_big} larger than the {source.n} tiles in {uri}")
    opts = dict(
        batch_size=min(cfg.batch_size, max(source.n, 1)),
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        metric=cfg.metric,
        seed=cfg.seed,
        refine_iters=cfg.refine_iters,
    )
    scores: list[dict[str, float]] = []
    fits: dict[int, kmeans.FitResult] = {}
    for k in candidates:
        fits[k] = kmeans.fit(source, k, **opts)  # type: ignore[arg-type]
        if len(candidates) > 1:
            scores.append(_score(source, fits[k], k, cfg))
    explanation = f"k = {candidates[0]} (fixed)"
    k = candidates[0]
    if len(candidates) > 1:
        best = max(scores, key=lambda s: s["silhouette"])
        k = int(best["k"])
        explanation = (
            f"k = {k}: highest silhouette ({best['silhouette']:.3f}) on a "
            f"{cfg.silhouette_sample}-tile sample among k = {candidates}"
        )
    fit = fits[k]
    cref = ray.put(fit.centroids.astype(np.float64))
    parts = ray.get([s.label.remote(cref, cfg.exemplars, write) for s in shards])
    for s in shards:
        ray.kill(s)
    labels = np.concatenate([p["labels"] for p in parts])
    exemplars = {
        j: [
            i
            for _, i in sorted(
                itertools.chain.from_iterable(p["exemplars"].get(j, []) for p in parts)
            )[: cfg.exemplars]
        ]
        for j in range(k)
    }
    return ClusterResult(
        k,
        fit.centroids,
        labels,
        sum(p["inertia"] for p in parts),
        fit.n_iter,
        fit.converged,
        exemplars,
        scores,
        explanation,
    )


def _score(
    source: _RaySource, fit: kmeans.FitResult, k: int, cfg: ClusterConfig
) -> dict[str, float]:
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(rng.choice(source.n, min(source.n, cfg.silhouette_sample), replace=False))
    x = source.take(idx)
    labels, _ = kmeans.assign(x, fit.centroids.astype(np.float64), cfg.metric)  # type: ignore[arg-type]
    sil = (
        float(silhouette_score(x, labels, metric="euclidean"))
        if len(np.unique(labels)) > 1
        else -1.0
    )
    inertia = source.full_stats(fit.centroids.astype(np.float64)).inertia
    return {"k": float(k), "silhouette": sil, "inertia": float(inertia)}


def write_result(
    uri: str,
    storage_cfg: StorageConfig,
    res: ClusterResult,
    cfg: ClusterConfig,
    exemplars: dict[str, list[str]] | None = None,
) -> None:
    """Centroids, settings and exemplar tile ids (by cluster) into the group (labels were
    written by the actors)."""
    group = store.open_group(uri, storage_cfg, mode="r+")
    if "centroids" in group:
        del group["centroids"]
    group.create_array(
        "centroids", data=res.centroids.astype(np.float32), dimension_names=("centroid", "feature")
    )
    group.attrs["clustering"] = {
        **settings(cfg),
        "k": res.k,
        "inertia": res.inertia,
        "n_iter": res.n_iter,
        "converged": res.converged,
        "tiles": len(res.labels),
        "scores": res.scores,
        "explanation": res.explanation,
        "exemplars": exemplars or {},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.consolidate(uri, storage_cfg)


def settings(cfg: ClusterConfig) -> dict[str, Any]:
    """The settings that define a clustering (a re-run with others must not overwrite it)."""
    return json.loads(
        cfg.model_dump_json(
            include={"k", "metric", "seed", "batch_size", "max_iter", "tol", "refine_iters"}
        )
    )


def assign_new_rows(uri: str, storage_cfg: StorageConfig, start: int) -> int:
    """Label rows [start, N) with the stored centroids (scale-out without re-clustering)."""
    group = store.open_group(uri, storage_cfg, mode="r+")
    meta = group.attrs["clustering"]
    c = np.asarray(group["centroids"][:], dtype=np.float64)
    x = np.asarray(group["embedding"][start:], dtype=np.float32)
    if not np.isfinite(x).all():
        raise ConfigError(f"new rows from {start} in {uri} hold NaN/inf embeddings")
    if meta["metric"] == "cosine":
        x = kmeans.normalize_rows(x)
    labels, _ = kmeans.assign(x, c, meta["metric"])
    group["cluster"][start:] = labels
    group.attrs["clustering"] = {**meta, "tiles": int(group["embedding"].shape[0])}
    store.consolidate(uri, storage_cfg)
    return len(labels)


def run(config: Config, force: bool = False) -> str:
    """The cluster stage: k-means on the store, labels + centroids + exemplars into it.

    Idempotent: an existing clustering with the same settings is kept; when tiles were
    appended since, only the new rows are assigned to the existing centroids (unless
    ``cluster.recluster``). An existing clustering with other settings is kept unless
    ``cluster.overwrite``; ``force`` re-clusters in any case. The maps are the next stage
    (:mod:`antssl.stages.maps`). Returns the store URI.
    """
    from antssl import catalog, workspace
    from antssl.runtime import ensure_ray

    cfg = config.cluster
    uri = workspace.embeddings_uri(config)
    if not store.exists(uri, config.storage):
        raise StageOrderError(f"no embeddings store at {uri}: run `antssl embed --config …` first")
    group = store.open_group(uri, config.storage)
    old = group.attrs.get("clustering")
    n = group["embedding"].shape[0]
    if old and not cfg.overwrite and not force:
        if {k: old.get(k) for k in settings(cfg)} != settings(cfg):
            raise ConfigError(
                f"{uri} is already clustered with other settings (k={old.get('k')}, metric="
                f"{old.get('metric')}); set cluster.overwrite: true to replace it"
            )
        if old.get("tiles") == n:
            log.info("cluster: %s is clustered for these settings; keeping it", uri)
            return uri
        if not cfg.recluster:
            added = assign_new_rows(uri, config.storage, int(old["tiles"]))
            log.info("cluster: assigned %d new tile(s) to the %d clusters", added, old["k"])
            return uri
    ensure_ray(config)
    res = fit_store(uri, config.storage, cfg)
    ids = catalog.read(workspace.catalog_uri(config), config.storage)["tile_id"].to_numpy()
    exemplars = {str(j): [str(ids[i]) for i in rows] for j, rows in res.exemplars.items()}
    write_result(uri, config.storage, res, cfg, exemplars)
    lines = [f"cluster: {res.explanation}; inertia {res.inertia:.4g} after {res.n_iter} steps"]
    sizes = np.bincount(res.labels, minlength=res.k)
    lines += [
        f"  cluster {j:>3}: {sizes[j]:>7} tiles ({100 * sizes[j] / n:.1f}%)" for j in range(res.k)
    ]
    log.info("\n".join(lines))
    return uri
