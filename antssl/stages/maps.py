"""The maps stage: cluster labels back onto the map, per scene and across all scenes.

``run(config, force=False) -> URI of the maps folder``. Runs after the cluster stage
(the pipeline's next step); skips itself when ``clusters.json`` (written last) already
describes the store's current clustering, unless forced.

Writes under ``<workspace>/maps/``: ``<scene_id>.tif`` (COG, one pixel per tile
stride, colour table) with ``<scene_id>.tif.aux.xml`` (GDAL PAM: category names and a
raster attribute table), ``<scene_id>.png`` (quick-look with legend),
``overview.png`` (every tile centre coloured by cluster, with the coastline),
``overview.tif`` (the same, georeferenced: a COG in the map CRS, one cell per tile stride
or coarser), ``mosaic.vrt`` (GDAL VRT of all scene maps; ``mosaic-<epsg>.vrt`` per CRS
when the scenes are in several) with a ``.qml`` of the same name, ``clusters.qml`` (QGIS
style), ``gallery.png`` (exemplar tiles of each cluster) and ``clusters.json`` (the
per-cluster summary the service serves at ``/v1/clusters``). Under ``<workspace>/stac/``:
a self-contained STAC catalog of it all (:mod:`antssl.stac`). ``clusters.json`` is
written last.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import shapely
from affine import Affine

from antssl import catalog, gis, maps, preview, reader, stac, storage, store, workspace
from antssl.config import Config
from antssl.encoder import relative_ref
from antssl.errors import StageOrderError
from antssl.scenes import SceneInfo, load_infos, open_raster

log = logging.getLogger(__name__)

Placed = tuple[SceneInfo, tuple[int, int], Affine, int]
"""A scene's cluster map as written: scene, map shape (rows, cols), map transform, tiles."""


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
    meta: dict[str, Any] = dict(group.attrs).get("clustering") or {}  # type: ignore[assignment]
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
    store_ref = relative_ref(uri, config.workspace)  # the maps' tag; right in a copy too
    stored = meta.get("exemplars") or {}  # written by the cluster stage (tile ids)
    exemplars = {int(j): list(ids) for j, ids in stored.items()} or {
        int(c["cluster"]): c["exemplars"] for c in previous.get("clusters", [])
    }
    extra = {key: meta.get(key) for key in ("metric", "inertia", "explanation", "scores")}
    extra["clustering"] = _clustering_key(meta)
    doc = summary(labels, cat, k, exemplars, extra)
    counts = np.bincount(labels[labels >= 0], minlength=k)
    placed: list[Placed] = []
    for sid, idx in cat.groupby("scene_id", sort=False).indices.items():
        info = infos[sid]
        sub = cat.iloc[idx]
        grid, transform = maps.cluster_grid(
            sub["row"].to_numpy(), sub["col"].to_numpy(), labels[idx], info, t.size, t.stride, k
        )
        cog = maps.cluster_cog_bytes(
            grid, transform, info.crs, k, tags={"scene_id": sid, "store": store_ref}
        )
        storage.write_bytes(storage.join(out, f"{sid}.tif"), cog, config.storage)
        here = np.bincount(labels[idx][labels[idx] >= 0], minlength=k)
        pam = gis.pam_xml(gis.category_names(here), here)
        storage.write_text(storage.join(out, f"{sid}.tif.aux.xml"), pam, config.storage)
        placed.append((info, grid.shape, transform, int(here.sum())))
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
            here,
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
    names = gis.category_names(counts)
    storage.write_text(storage.join(out, "clusters.qml"), gis.qml(names), config.storage)
    map_crs = _write_overview_tif(config, out, cat, labels, infos, k, names)
    mosaics = _write_mosaics(config, out, placed, names, store_ref)
    _write_stac(config, out, placed, meta, doc, map_crs, mosaics)
    storage.write_text(summary_uri, json.dumps(doc, indent=2), config.storage)
    log.info(
        "maps: %s/<scene_id>.tif|.tif.aux.xml|.png, overview.png|.tif, %s, clusters.qml, "
        "gallery.png, clusters.json; STAC catalog %s",
        out,
        ", ".join(mosaics) or "no mosaic (no CRS)",
        storage.join(workspace.root(config), "stac", "catalog.json"),
    )
    return out


def _write_overview_tif(
    config: Config,
    out: str,
    cat: pd.DataFrame,
    labels: np.ndarray,
    infos: dict[str, SceneInfo],
    k: int,
    names: list[str],
) -> str | None:
    """``overview.tif`` (+ ``.aux.xml``): every tile centre rasterised in the map CRS, the
    CRS most tiles are in (tiles of other CRSs reprojected into it), at the coarsest tile
    stride of its scenes (:func:`antssl.gis.overview_grid`). Returns the map CRS; None (and
    nothing written) when the scenes have no CRS."""
    from pyproj import CRS, Transformer

    crs_of = cat["scene_id"].map({s: i.crs for s, i in infos.items()})
    tally = Counter(c for c in crs_of if c is not None)
    if not tally:
        return None
    map_crs = tally.most_common(1)[0][0]
    x, y = cat["x"].to_numpy(np.float64).copy(), cat["y"].to_numpy(np.float64).copy()
    for crs in tally:
        if crs != map_crs:
            sel = (crs_of == crs).to_numpy()
            tr = Transformer.from_crs(CRS.from_user_input(crs), map_crs, always_xy=True)
            x[sel], y[sel] = tr.transform(x[sel], y[sel])
    stride = config.tiling.stride
    cell = max(stride * abs(i.transform[0]) for i in infos.values() if i.crs == map_crs)
    grid, transform = gis.overview_grid(x, y, labels, cell, k)
    tags = {"content": "most common cluster of the tile centres in each cell"}
    cog = maps.cluster_cog_bytes(grid, transform, map_crs, k, tags=tags)
    storage.write_bytes(storage.join(out, "overview.tif"), cog, config.storage)
    valid = grid[grid != maps.grid_nodata(grid.dtype)].astype(np.int64)
    pam = gis.pam_xml(names, np.bincount(valid, minlength=k))
    storage.write_text(storage.join(out, "overview.tif.aux.xml"), pam, config.storage)
    return str(map_crs)


def _write_mosaics(
    config: Config,
    out: str,
    placed: list[Placed],
    names: list[str],
    store_ref: str,
) -> list[str]:
    """One GDAL VRT of the scene maps per CRS (``mosaic.vrt`` when there is one CRS, else
    ``mosaic-<epsg>.vrt``), each with a QGIS style of the same name; returns the file names.
    Scenes without a CRS, and rotated ones (a VRT source cannot be), are in none."""
    groups: dict[str, list[gis.MosaicSource]] = {}
    for info, (h, w), transform, _ in placed:
        if info.crs is not None and not gis.north_up(transform):
            log.warning(
                "maps: %s is rotated or not north-up: left out of the mosaic", info.scene_id
            )
        elif info.crs is not None:
            src = gis.MosaicSource(f"{info.scene_id}.tif", w, h, transform)
            groups.setdefault(info.crs, []).append(src)
    written = []
    for i, (crs, sources) in enumerate(groups.items()):
        stem = "mosaic" if len(groups) == 1 else f"mosaic-{gis.epsg_of(crs) or f'crs{i}'}"
        vrt = gis.mosaic_vrt(sources, crs, names, tags={"store": store_ref})
        storage.write_text(storage.join(out, f"{stem}.vrt"), vrt, config.storage)
        storage.write_text(storage.join(out, f"{stem}.qml"), gis.qml(names), config.storage)
        written.append(f"{stem}.vrt")
    if len(groups) > 1:
        log.info("maps: scenes are in %d CRSs, one mosaic per CRS: %s", len(groups), written)
    return written


def _write_stac(
    config: Config,
    out: str,
    placed: list[Placed],
    meta: dict[str, Any],
    doc: dict[str, Any],
    map_crs: str | None,
    mosaics: list[str],
) -> None:
    """``<workspace>/stac/``: an Item per scene (its cluster COG and quick-look) in a
    Collection whose assets are the workspace-wide outputs (:mod:`antssl.stac`)."""
    when = stac.parse_time(meta.get("created_at"))
    k = int(doc["k"])
    items = []
    for info, (h, w), transform, n in placed:
        sid = info.scene_id
        assets = {
            "clusters": stac.AssetSpec(
                storage.join(out, f"{sid}.tif"),
                str(stac.pystac.MediaType.COG),
                ("data",),
                f"cluster map of {sid} (one pixel per tile stride)",
            ),
            "categories": stac.AssetSpec(
                storage.join(out, f"{sid}.tif.aux.xml"),
                stac.XML,
                ("metadata",),
                "GDAL PAM: category names and raster attribute table of the cluster map",
            ),
            "quicklook": stac.AssetSpec(
                storage.join(out, f"{sid}.png"),
                str(stac.pystac.MediaType.PNG),
                ("overview",),
                f"{sid} with its cluster map and legend",
            ),
        }
        props = {"antssl:tiles": n, "antssl:k": k}
        items.append(stac.scene_item(info, when, assets, props, cog=("clusters", w, h, transform)))
    ws = workspace.root(config)
    cog, png, xml = str(stac.pystac.MediaType.COG), str(stac.pystac.MediaType.PNG), stac.XML
    specs: dict[str, tuple[str, str, tuple[str, ...], str]] = {
        "summary": (
            storage.join(out, "clusters.json"),
            "application/json",
            ("metadata",),
            "per-cluster summary (sizes, scenes, exemplars)",
        ),
        "style": (storage.join(out, "clusters.qml"), xml, ("style",), "QGIS style"),
        "gallery": (storage.join(out, "gallery.png"), png, ("overview",), "cluster exemplars"),
        "tiles": (
            workspace.catalog_uri(config),
            stac.PARQUET,
            ("metadata",),
            "tile catalog (GeoParquet, one row per tile)",
        ),
        "embeddings": (
            workspace.embeddings_uri(config),
            stac.ZARR,
            ("data",),
            "tile embeddings and clusters (Zarr v3 group)",
        ),
        "scenes": (workspace.scenes_uri(config), "application/json", ("metadata",), "scenes"),
    }
    if map_crs is not None:
        title = f"tile clusters on one coarse grid in {map_crs}"
        specs["overview"] = (storage.join(out, "overview.tif"), cog, ("data", "overview"), title)
    if storage.exists(storage.join(out, "overview.png"), config.storage):
        title = "tile clusters over the coastline (picture)"
        specs["overview-png"] = (storage.join(out, "overview.png"), png, ("overview",), title)
    for name in mosaics:
        title = f"GDAL VRT mosaic of the cluster maps ({name})"
        specs[name.removesuffix(".vrt")] = (storage.join(out, name), xml, ("data",), title)
    collection_assets = {key: stac.AssetSpec(*v) for key, v in specs.items()}
    description = f"{doc['tiles']} tiles of {len(placed)} scenes in {k} clusters"
    stac.write_catalog(
        storage.join(ws, "stac"), config.storage, items, collection_assets, when, description
    )


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
