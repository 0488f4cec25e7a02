"""Cluster maps and pictures: per-scene COG + quick-look PNG, the all-scene overview, the gallery.

Pure numpy + rasterio (in-memory files) + matplotlib (Agg); no Ray, no storage access:
every function returns bytes that the cluster stage writes with
:func:`antssl.storage.write_bytes`.

The cluster map of a scene has **one pixel per tile stride**: map pixel ``(i, j)`` holds the
cluster of the tile whose window starts at scene pixel ``(row, col) = (i·stride, j·stride)``
(the tile grid of :mod:`antssl.tiling`), and its centre is that tile's centre.
"""

from __future__ import annotations

import colorsys
import io
import math
import warnings
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import shapely
from affine import Affine
from matplotlib.patches import Patch, Rectangle
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy

from antssl.errors import ConfigError
from antssl.scenes import SceneInfo
from antssl.tiling import grid_shape

NODATA_U8 = 255
NODATA_U16 = 65535
_GOLDEN = 0.618033988749895
_GRID_TAG = (
    "one pixel per tile stride: pixel (i, j) is the cluster of the tile at scene pixel offset "
    "(row, col) = (i*stride, j*stride); the pixel centre is the tile centre"
)


def palette(k: int) -> np.ndarray:
    """``k`` distinct colours, ``(k, 3)`` uint8 RGB; colour ``c`` is the same for every ``k > c``.

    The first 20 are matplotlib's tab20, reordered so the 9 saturated hues come first, then
    their light partners, then the two greys (which vanish over a grey scene) last. Beyond 20,
    each next colour is the HSV candidate (hue stepped by the golden ratio, ``h_i = (i·0.618…)
    mod 1``, at three saturation × three value levels) farthest in RGB from all colours so far:
    greedy farthest-point, deterministic, so no two are near-duplicates.
    """
    if k < 0:
        raise ConfigError(f"palette size k must be >= 0, got {k}")
    tab = plt.get_cmap("tab20")(np.arange(20))[:, :3] * 255
    order = [0, 2, 4, 6, 8, 10, 12, 16, 18, 1, 3, 5, 7, 9, 11, 13, 17, 19, 14, 15]
    chosen = list(tab[order][:k])
    if k > 20:
        cand = 255 * np.array(
            [
                colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, sat, val)
                for i in range(128)
                for sat in (0.45, 0.7, 0.95)
                for val in (0.55, 0.75, 0.95)
            ]
        )
        dist = np.min(np.linalg.norm(cand[:, None] - np.array(chosen)[None], axis=-1), axis=1)
        for _ in range(20, min(k, 20 + len(cand))):
            best = int(np.argmax(dist))
            chosen.append(cand[best])
            dist = np.minimum(dist, np.linalg.norm(cand - cand[best], axis=1))
    seen = {tuple(np.round(c).astype(int)) for c in chosen}
    code = 0
    while len(chosen) < k:  # past ~1,170 colours: distinct 24-bit colours, hashed order
        code += 1
        v = (code * 0x9E3779B1) % (1 << 24)
        rgb = (v >> 16, (v >> 8) & 255, v & 255)
        if rgb not in seen:
            seen.add(rgb)
            chosen.append(np.array(rgb, dtype=float))
    return np.round(np.array(chosen)).astype(np.uint8).reshape(k, 3)


def grid_dtype(k: int) -> np.dtype:
    """uint8 for ``k <= 255`` clusters (nodata 255), else uint16 (nodata 65535)."""
    if not 0 < k < NODATA_U16:
        raise ConfigError(f"number of clusters k must be 1..{NODATA_U16 - 1}, got {k}")
    return np.dtype(np.uint8 if k <= NODATA_U8 else np.uint16)


def grid_nodata(dtype: np.dtype | type) -> int:
    """The NODATA value of a cluster grid of ``dtype``: 255 (uint8) or 65535 (uint16)."""
    return NODATA_U8 if np.dtype(dtype) == np.uint8 else NODATA_U16


def cluster_grid(
    rows: np.ndarray,
    cols: np.ndarray,
    labels: np.ndarray,
    info: SceneInfo,
    size: int,
    stride: int,
    k: int | None = None,
) -> tuple[np.ndarray, Affine]:
    """The cluster map of one scene: one pixel per tile stride, and its affine transform.

    ``rows``/``cols`` are the kept tiles' pixel offsets (multiples of ``stride``), ``labels``
    their clusters (int, ``-1`` = none). Returns ``grid`` of shape ``(n_rows, n_cols)`` with
    ``n = (L - size) // stride + 1`` per axis, dtype :func:`grid_dtype` (``k`` defaults to
    ``labels.max() + 1``), ``grid[row // stride, col // stride] = label`` and NODATA
    (:func:`grid_nodata`) where no tile was kept or labelled. The transform maps map pixel
    ``(j, i)`` (col, row) to scene-CRS ``(x, y)`` so that map pixel centres are tile centres::

        transform = scene_affine @ translation((size - stride)/2, (size - stride)/2) @ scale(stride)

    since the centre ``(j + ½, i + ½)`` goes to scene pixel ``(j·stride + size/2, i·stride +
    size/2)``. Raises :class:`ConfigError` for tiles off the grid or labels ``>= k``.
    """
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if not rows.shape == cols.shape == labels.shape:
        raise ConfigError(
            f"rows/cols/labels lengths differ: {rows.shape}, {cols.shape}, {labels.shape}"
        )
    n_rows, n_cols = grid_shape(info.height, info.width, size, stride)
    if k is None:
        k = max(int(labels.max()) + 1, 1) if labels.size else 1
    dtype = grid_dtype(k)
    grid = np.full((n_rows, n_cols), grid_nodata(dtype), dtype=dtype)
    i, j = rows // stride, cols // stride
    off = (rows % stride != 0) | (cols % stride != 0) | (i < 0) | (j < 0)
    off |= (i >= n_rows) | (j >= n_cols)
    if off.any():
        r, c = int(rows[off][0]), int(cols[off][0])
        raise ConfigError(
            f"tile at row {r}, col {c} of scene {info.scene_id} is not on its size-{size}, "
            f"stride-{stride} tile grid ({n_rows}x{n_cols}); the catalog and tiling config differ"
        )
    if labels.size and labels.max() >= k:
        raise ConfigError(f"label {int(labels.max())} >= k={k} in scene {info.scene_id}")
    keep = labels >= 0
    grid[i[keep], j[keep]] = labels[keep]
    half = (size - stride) / 2
    return grid, info.affine @ Affine.translation(half, half) @ Affine.scale(stride)


def cluster_cog_bytes(
    grid: np.ndarray,
    transform: Affine,
    crs: str | None,
    k: int,
    nodata: int | None = None,
    tags: Mapping[str, str | int | float] | None = None,
) -> bytes:
    """A Cloud-Optimized GeoTIFF of ``grid`` (one band "cluster", uint8/uint16), as bytes.

    Georeferenced by ``transform`` in ``crs`` (authority string or WKT; None = no CRS), with
    ``nodata`` (default :func:`grid_nodata`), the colour table of :func:`palette` (``k``
    entries; nodata transparent), nearest-neighbour overviews, and tags ``k``, ``pixel``
    (what one pixel is) plus ``tags``.
    """
    dtype = np.dtype(grid.dtype)
    if dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"cluster grid must be uint8 or uint16, got {dtype}")
    nodata = grid_nodata(dtype) if nodata is None else int(nodata)
    colors = {c: (*map(int, rgb), 255) for c, rgb in enumerate(palette(k))}
    colors[nodata] = (0, 0, 0, 0)
    profile = {
        "driver": "GTiff",
        "height": grid.shape[0],
        "width": grid.shape[1],
        "count": 1,
        "dtype": dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    with MemoryFile() as tmp:
        with warnings.catch_warnings():
            # An identity transform (a scene without a CRS: pixel coordinates) is what we mean.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = tmp.open(**profile)
        with ds:
            # The colour table before the pixels: set after them, GDAL cannot change the
            # TIFF's PhotometricInterpretation any more and logs a warning per map.
            ds.write_colormap(1, colors)
            ds.write(grid, 1)
            ds.set_band_description(1, "cluster")
            ds.update_tags(k=k, pixel=_GRID_TAG, **{str(a): b for a, b in (tags or {}).items()})
        # rasterio >= 1.4 needs GDAL >= 3.5, which always has the COG driver (GDAL 3.1+).
        with tmp.open() as src, MemoryFile() as out:
            opts = {"compress": "deflate", "resampling": "nearest", "blocksize": 256}
            rio_copy(src, out.name, driver="COG", **opts)
            return bytes(out.read())


def _grid_rgba(grid: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """RGBA float image of a cluster grid: palette colour at ``alpha``, NODATA transparent."""
    nodata = grid_nodata(grid.dtype)
    rgba = np.zeros((*grid.shape, 4), dtype=np.float32)
    valid = grid != nodata
    rgba[valid, :3] = palette(k)[grid[valid]] / 255.0
    rgba[valid, 3] = alpha
    return rgba


def _save(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return buf.getvalue()


def _legend(ax: plt.Axes, k: int, counts: np.ndarray, extra: list[Patch] | None = None) -> None:
    cols = palette(k) / 255.0
    handles = [
        Patch(color=cols[c], label=f"{c}: {int(counts[c]):,}") for c in range(k) if counts[c]
    ]
    handles += extra or []
    ax.legend(
        handles=handles,
        title="cluster: tiles",
        loc="upper left",
        bbox_to_anchor=(1.02, 1),
        fontsize=7,
        title_fontsize=8,
        frameon=False,
        ncols=max(1, math.ceil(len(handles) / 24)),
    )


def scene_quicklook_png(
    image: np.ndarray,
    factor: float,
    grid: np.ndarray,
    size: int,
    stride: int,
    k: int,
    title: str,
    counts: Sequence[int] | np.ndarray | None = None,
    alpha: float = 0.45,
) -> bytes:
    """PNG bytes: the scene in grey with its cluster map over it and a legend.

    ``image``/``factor`` come from :func:`antssl.preview.overview` (float ``(h, w, 3)`` in
    [0, 1], NaN = nodata; decimated by ``factor``). ``grid`` is :func:`cluster_grid`'s
    array; in scene pixels its cell ``(i, j)`` covers rows ``[i·stride + (size-stride)/2,
    + stride)`` and likewise columns (the central stride × stride of tile ``(i, j)``).
    ``counts`` are tiles per cluster for the legend (default: counted in ``grid``); clusters
    with no tile are left out of it. Axes are scene pixels.
    """
    h, w = image.shape[:2]
    width, height = w * factor, h * factor
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * h / max(w, 1) + 0.5), dpi=110)
    ax.imshow(np.nan_to_num(image, nan=0.0), extent=(0, width, height, 0))
    half = (size - stride) / 2
    n_rows, n_cols = grid.shape
    ax.imshow(
        _grid_rgba(grid, k, alpha),
        extent=(half, half + n_cols * stride, half + n_rows * stride, half),
        interpolation="nearest",
    )
    if counts is None:
        valid = grid[grid != grid_nodata(grid.dtype)]
        counts = np.bincount(valid.astype(np.int64), minlength=k)
    _legend(ax, k, np.asarray(counts))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    return _save(fig)


def _lines(geom: shapely.Geometry) -> list[np.ndarray]:
    """The (n, 2) coordinate arrays of a geometry's lines (polygon boundaries for areas)."""
    if geom is None or geom.is_empty:
        return []
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        geom = geom.boundary
    return [shapely.get_coordinates(p) for p in shapely.get_parts(geom)]


def overview_png(
    x: np.ndarray,
    y: np.ndarray,
    labels: np.ndarray,
    k: int,
    title: str,
    coastline: shapely.Geometry | None = None,
    cell: float | None = None,
    pixel_coords: bool = False,
    crs_name: str = "EPSG:3031",
    max_points: int = 200_000,
) -> bytes:
    """PNG bytes: every tile centre ``(x, y)`` coloured by its cluster, equal aspect, legend.

    ``x``/``y`` are tile centres in one projected CRS (metres, shown in km; ``crs_name`` labels
    the axes) or, with ``pixel_coords``, scene pixels (y down). ``labels`` are int clusters
    (``-1`` drawn light grey). ``coastline`` (shapely, same CRS) is drawn as a thin line.
    ``cell`` is the tile stride in the same units and sizes the square markers (default: the
    median spacing of distinct x). At most ``max_points`` tiles are drawn (a fixed-seed
    sample); the legend counts all.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    scale = 1.0 if pixel_coords else 1e-3
    counts = np.bincount(labels[labels >= 0], minlength=k)[:k]
    if x.size > max_points:
        pick = np.sort(np.random.default_rng(0).choice(x.size, max_points, replace=False))
        x, y, labels = x[pick], y[pick], labels[pick]
    xs, ys = x * scale, y * scale
    if xs.size:
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    else:
        x0, x1, y0, y1 = 0.0, 1.0, 0.0, 1.0
    pad = 0.04 * max(x1 - x0, y1 - y0, 1e-9)
    x0, x1, y0, y1 = x0 - pad, x1 + pad, y0 - pad, y1 + pad
    aspect = (y1 - y0) / (x1 - x0)
    fig_w = float(np.clip(9.0 / max(aspect, 1.0), 4.0, 9.0))
    fig_h = float(np.clip(fig_w * aspect, 3.0, 11.0))
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=110)
    for line in _lines(coastline):
        ax.plot(line[:, 0] * scale, line[:, 1] * scale, color="0.25", lw=0.6, zorder=1)
    if cell is None:
        ux = np.unique(np.round(xs, 6))
        cell_s = float(np.median(np.diff(ux))) if ux.size > 1 else (x1 - x0) / 50
    else:
        cell_s = cell * scale
    pts_per_unit = min(fig_w * 0.8 / (x1 - x0), fig_h * 0.85 / (y1 - y0)) * 72
    msize = float(np.clip(cell_s * pts_per_unit, 0.8, 12.0)) ** 2
    cols = palette(k) / 255.0
    none = labels < 0
    extra = []
    if none.any():
        ax.scatter(xs[none], ys[none], s=msize, marker="s", c="0.82", lw=0, zorder=2)
        extra = [Patch(color="0.82", label=f"none: {int(none.sum()):,}")]
    ax.scatter(xs[~none], ys[~none], s=msize, marker="s", c=cols[labels[~none]], lw=0, zorder=3)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlim(x0, x1)
    ax.set_ylim((y1, y0) if pixel_coords else (y0, y1))
    unit = "px" if pixel_coords else f"km, {crs_name}"
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    ax.set_title(title, fontsize=9)
    ax.grid(True, lw=0.3, alpha=0.5)
    _legend(ax, k, counts, extra)
    return _save(fig)


def _stretch(tile: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` → ``(H, W)`` grey or ``(H, W, 3)`` RGB in [0, 1], by the tile's 2–98 %.

    One stretch for all three RGB bands, so band ratios (the colours) are kept.
    """
    px = np.asarray(tile[:3] if tile.shape[0] >= 3 else tile[:1], dtype=np.float64)
    finite = px[np.isfinite(px)]
    lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    out = np.nan_to_num(np.clip((px - lo) / max(hi - lo, 1e-12), 0, 1), nan=0.0)
    return out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1)


def gallery_png(
    exemplars: Mapping[int, np.ndarray],
    k: int,
    title: str,
    tile_ids: Mapping[int, Sequence[str]] | None = None,
    sizes: Mapping[int, int] | Sequence[int] | np.ndarray | None = None,
) -> bytes:
    """PNG bytes: one row per cluster (ascending id), its exemplar tiles side by side.

    ``exemplars[c]`` is ``(m, C, H, W)`` (any numeric dtype) for cluster ``c``; tiles show
    band 1 in grey, or bands 1–3 as RGB when ``C >= 3``, each channel stretched to its own
    2–98 percentiles. The left column holds the cluster's colour swatch, its id and (with
    ``sizes``) its tile count; ``tile_ids[c]`` label the tiles underneath.
    """
    clusters = sorted(c for c, t in exemplars.items() if len(t))
    m = max((len(exemplars[c]) for c in clusters), default=1)
    cell = 1.05 if len(clusters) <= 12 else 0.8
    n = max(len(clusters), 1)
    fig_h = 0.5 + n * (cell + 0.2)
    fig, axes = plt.subplots(
        n,
        m + 1,
        squeeze=False,
        dpi=110,
        figsize=(1.5 + m * cell, fig_h),
        gridspec_kw={"width_ratios": [1.5 / cell] + [1] * m, "wspace": 0.06, "hspace": 0.25},
    )
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.2 / fig_h, top=1 - 0.45 / fig_h)
    cols = palette(k) / 255.0
    for ax in axes.flat:
        ax.set_axis_off()
    for r, c in enumerate(clusters):
        lab = axes[r, 0]
        lab.add_patch(Rectangle((0.02, 0.3), 0.22, 0.4, color=cols[c], transform=lab.transAxes))
        text = f"cluster {c}" + (f"\n{int(sizes[c]):,} tiles" if sizes is not None else "")
        lab.text(0.3, 0.5, text, va="center", fontsize=8, transform=lab.transAxes)
        for t, tile in enumerate(exemplars[c]):
            ax = axes[r, t + 1]
            ax.set_axis_on()
            ax.imshow(_stretch(tile), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(cols[c])
                spine.set_linewidth(1.5)
            if tile_ids is not None and t < len(tile_ids.get(c, ())):
                ax.set_xlabel(tile_ids[c][t], fontsize=4.5, labelpad=1)
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / fig_h, va="top")
    return _save(fig)
