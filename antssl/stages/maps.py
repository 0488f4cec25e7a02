"""The maps stage: cluster labels back onto the map, per scene and across all scenes.

``run(config, force=False) -> URI of the maps folder``. Runs after the cluster stage
(the pipeline's next step); skips itself when ``clusters.json`` (written last) already
describes the store's current clustering, unless forced.

Writes under ``<workspace>/maps/``: ``<scene_id>.tif`` (COG, one pixel per tile
stride, colour table), ``<scene_id>.png`` (quick-look with legend),
``overview.png`` (every tile centre coloured by cluster, with the coastline),
``gallery.png`` (exemplar tiles of each cluster) and ``clusters.json`` (the
per-cluster summary the service serves at ``/v1/clusters``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import shapely

from antssl import catalog, maps, preview, reader, storage, store, workspace
from antssl.config import Config
from antssl.errors import StageOrderError
from antssl.scenes import SceneInfo, load_infos, open_raster

log = logging.getLogger(__name__)


def summary(
    labels: np.ndarray,
    cat: pd.DataFrame,
    k: int,
    exemplars: dict[int, list[str]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Per cluster: size, share, tiles per scene, mean mask/nodata fraction, exemplar ids."""
    frame = cat[["scene_id", "mask_fraction", "nodata_fraction"]].assign(cluster=labels)
    out = []
    for j in range(k):
        sub = frame[frame["cluster"] == j]
        out.append(
            {
                "cluster": j,
                "size": len(sub),
                "share": len(sub) / max(len(frame), 1),
                "scenes": {str(s): int(v) for s, v in sub["scene_id"].value_counts().items()},
                "mean_mask_fraction": float(sub["mask_fraction"].mean()) if len(sub) else None,
                "mean_nodata_fraction": float(sub["nodata_fraction"].mean()) if len(sub) else None,
                "exemplars": exemplars.get(j, []),
            }
        )
    return {**extra, "k": k, "tiles": len(labels), "clusters": out}


def _exemplar_pixels(
    config: Config, cat: pd.DataFrame, ids: dict[int, list[str]], infos: dict[str, SceneInfo]
) -> dict[int, np.ndarray]:
    """Raw pixels of the exemplar tiles, read with the same reader as the stream."""
    t = config.tiling
    pos = {tid: i for i, tid in enumerate(cat["tile_id"])}
    out: dict[int, np.ndarray] = {}
    for j, tids in ids.items():
        tiles = []
        for tid in tids:
            row = cat.iloc[pos[tid]]
            info = infos[row["scene_id"]]
            with open_raster(info.uri, config.storage) as ds:
                region = reader.read_tiles(
                    ds, info, np.array([row["row"]]), np.array([row["col"]]), t.size, t.stride
                )
            tiles.append(region.pixels[0])
        if tiles:
            out[j] = np.stack(tiles)
    return out


def _clustering_key(meta: dict[str, Any]) -> dict[str, Any]:
    """What identifies a clustering's maps: its creation time and how many tiles it labels."""
    return {"created_at": meta.get("created_at"), "tiles": meta.get("tiles")}


def run(config: Config, force: bool = False) -> str:
    """Render every map of the current clustering (unless they are current and not
    ``force``); returns the maps folder URI."""
    uri = workspace.embeddings_uri(config)
    if not store.exists(uri, config.storage):
        raise StageOrderError(f"no embeddings store at {uri}: run `antssl embed --config …` first")
    group = store.open_group(uri, config.storage)
    meta = dict(group.attrs).get("clustering")
    if not meta:
        raise StageOrderError(f"{uri} is not clustered: run `antssl cluster --config …`")
    out = workspace.maps_uri(config)
    summary_uri = storage.join(out, "clusters.json")
    previous = (
        json.loads(storage.read_text(summary_uri, config.storage))
        if storage.exists(summary_uri, config.storage)
        else {}
    )
    if not force and previous.get("clustering") == _clustering_key(meta):
        log.info("maps: %s is current for this clustering; nothing to do", out)
        return out
    labels = np.asarray(group["cluster"][:], dtype=np.int64)
    k = int(meta["k"])
    cat = catalog.read(workspace.catalog_uri(config), config.storage).iloc[: len(labels)]
    infos = load_infos(config)
    t = config.tiling
    stored = meta.get("exemplars") or {}  # written by the cluster stage (tile ids)
    exemplars = {int(j): list(ids) for j, ids in stored.items()} or {
        int(c["cluster"]): c["exemplars"] for c in previous.get("clusters", [])
    }
    extra = {key: meta.get(key) for key in ("metric", "inertia", "explanation", "scores")}
    extra["clustering"] = _clustering_key(meta)
    doc = summary(labels, cat, k, exemplars, extra)
    counts = np.bincount(labels[labels >= 0], minlength=k)
    for sid, idx in cat.groupby("scene_id", sort=False).indices.items():
        info = infos[sid]
        sub = cat.iloc[idx]
        grid, transform = maps.cluster_grid(
            sub["row"].to_numpy(), sub["col"].to_numpy(), labels[idx], info, t.size, t.stride, k
        )
        cog = maps.cluster_cog_bytes(
            grid, transform, info.crs, k, tags={"scene_id": sid, "store": uri}
        )
        storage.write_bytes(storage.join(out, f"{sid}.tif"), cog, config.storage)
        with open_raster(info.uri, config.storage) as ds:
            image, factor = preview.overview(ds, info)
        png = maps.scene_quicklook_png(
            image,
            factor,
            grid,
            t.size,
            t.stride,
            k,
            f"{sid}: {len(idx)} tiles in {k} clusters",
            np.bincount(labels[idx][labels[idx] >= 0], minlength=k),
        )
        storage.write_bytes(storage.join(out, f"{sid}.png"), png, config.storage)
    crs = {c for c in cat["crs"].unique()}
    if len(crs) == 1:
        only = next(iter(crs))
        coast = None
        if only and config.mask.kind == "coastline":
            pad = 4.0 * t.size * abs(next(iter(infos.values())).transform[0])
            x, y = cat["x"].to_numpy(), cat["y"].to_numpy()
            coast = shapely.clip_by_rect(
                _coast_in(config, only), x.min() - pad, y.min() - pad, x.max() + pad, y.max() + pad
            )
        storage.write_bytes(
            storage.join(out, "overview.png"),
            maps.overview_png(
                cat["x"].to_numpy(),
                cat["y"].to_numpy(),
                labels,
                k,
                f"{len(cat)} coastal tiles in {k} clusters",
                coastline=coast,
                cell=float(t.stride * abs(next(iter(infos.values())).transform[0])),
                pixel_coords=not only,
                crs_name=only or "pixels",
            ),
            config.storage,
        )
    pixels = _exemplar_pixels(config, cat, exemplars, infos)
    storage.write_bytes(
        storage.join(out, "gallery.png"),
        maps.gallery_png(
            pixels,
            k,
            f"exemplar tiles per cluster (nearest the centroid, {doc.get('metric')})",
            tile_ids=exemplars,
            sizes=counts,
        ),
        config.storage,
    )
    storage.write_text(summary_uri, json.dumps(doc, indent=2), config.storage)
    log.info("maps: %s/<scene_id>.tif|.png, overview.png, gallery.png, clusters.json", out)
    return out


def _coast_in(config: Config, crs: str) -> Any:
    """The coastline vector's edge in ``crs`` (for the overview)."""
    from pyproj import CRS, Transformer

    from antssl.mask import load_vector

    vec = load_vector(config.mask, config.storage)
    geom = shapely.boundary(vec.geometry) if vec.polygonal else vec.geometry
    if vec.crs != CRS.from_user_input(crs):
        tr = Transformer.from_crs(vec.crs, crs, always_xy=True)
        geom = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(*xy.T)))
    return geom
