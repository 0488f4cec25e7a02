"""What a GIS needs beside the cluster COGs: category names, a QGIS style, a mosaic, an overview.

Pure functions returning text or arrays (no storage access, no Ray); the maps stage writes
them under ``<workspace>/maps/`` next to the COGs of :mod:`antssl.maps`:

- :func:`pam_xml`: a GDAL PAM sidecar (``<scene>.tif.aux.xml``) holding the band's category
  names and a thematic raster attribute table (RAT). GeoTIFF has no tag for either, so GDAL's
  own GTiff driver keeps them in this sidecar too; GDAL (QGIS, rasterio) reads it
  automatically when it opens the COG.
- :func:`qml`: a QGIS layer style (paletted renderer) with the colours of
  :func:`antssl.maps.palette` and the category labels.
- :func:`mosaic_vrt`: a GDAL VRT mosaic of cluster maps that share one CRS, with source paths
  relative to the VRT (the workspace stays portable, also on ``s3://``).
- :func:`overview_grid`: every tile centre rasterised onto one coarse grid (majority cluster
  per cell), for ``overview.tif``.

Category names are ``"cluster <c> (<n> tiles)"``; NODATA has none.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from antssl.errors import ConfigError
from antssl.maps import grid_dtype, grid_nodata, palette

# GDAL's GDALRATFieldType and GDALRATFieldUsage codes (gdal.h).
_INTEGER, _STRING = 0, 2
_GENERIC, _PIXEL_COUNT, _NAME, _MIN_MAX, _RED, _GREEN, _BLUE = 0, 1, 2, 5, 6, 7, 8


def category_names(counts: Sequence[int] | np.ndarray) -> list[str]:
    """``"cluster c (n tiles)"`` for each cluster ``c`` (``counts[c]`` tiles; "1 tile")."""
    return [f"cluster {c} ({int(n)} tile{'' if n == 1 else 's'})" for c, n in enumerate(counts)]


def _hex(rgb: np.ndarray) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def _band_items(band: ET.Element, names: Sequence[str], pixels: Sequence[int] | None) -> None:
    """Append ``<CategoryNames>`` and a thematic ``<GDALRasterAttributeTable>`` to ``band``.

    RAT columns: Value (min-max), Count (pixel count, when ``pixels`` is given), Name, Red,
    Green, Blue (0–255, :func:`palette`); one row per cluster.
    """
    cats = ET.SubElement(band, "CategoryNames")
    for name in names:
        ET.SubElement(cats, "Category").text = name
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    fields = [("Value", _INTEGER, _MIN_MAX)]
    if pixels is not None:
        fields.append(("Count", _INTEGER, _PIXEL_COUNT))
    fields += [("Name", _STRING, _NAME), ("Red", _INTEGER, _RED)]
    fields += [("Green", _INTEGER, _GREEN), ("Blue", _INTEGER, _BLUE)]
    for i, (fname, ftype, usage) in enumerate(fields):
        defn = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(defn, "Name").text = fname
        ET.SubElement(defn, "Type").text = str(ftype)
        ET.SubElement(defn, "Usage").text = str(usage)
    for c, (name, rgb) in enumerate(zip(names, palette(len(names)), strict=True)):
        row = ET.SubElement(rat, "Row", index=str(c))
        values = [c] + ([int(pixels[c])] if pixels is not None else []) + [name, *map(int, rgb)]
        for v in values:
            ET.SubElement(row, "F").text = str(v)


def _text(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def pam_xml(names: Sequence[str], pixels: Sequence[int] | np.ndarray | None = None) -> str:
    """A GDAL PAM document (``<raster>.aux.xml``) for a one-band cluster raster.

    Band 1 gets ``names`` as its category names (value ``c`` → ``names[c]``, so
    ``len(names)`` is the number of clusters ``k``) and the raster attribute table of
    :func:`_band_items`; ``pixels[c]`` is how many pixels hold cluster ``c``.
    """
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    _band_items(band, list(names), None if pixels is None else [int(p) for p in pixels])
    return _text(root)


def qml(names: Sequence[str], opacity: float = 1.0) -> str:
    """A QGIS style (``.qml``): paletted renderer on band 1, one entry per cluster.

    Entry ``c`` has value ``c``, the colour :func:`palette` gives cluster ``c`` and the label
    ``names[c]``; values without an entry (NODATA) are not drawn. Load it in QGIS with
    Layer Properties → Symbology → Style → Load Style, on any cluster COG or mosaic.
    """
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="paletted",
        band="1",
        opacity=f"{opacity:g}",
        alphaBand="-1",
        nodataColor="",
    )
    ET.SubElement(renderer, "rasterTransparency")
    entries = ET.SubElement(renderer, "colorPalette")
    for c, (name, rgb) in enumerate(zip(names, palette(len(names)), strict=True)):
        ET.SubElement(
            entries, "paletteEntry", value=str(c), color=_hex(rgb), alpha="255", label=name
        )
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + _text(root)


@dataclass(frozen=True)
class MosaicSource:
    """One cluster map in a mosaic: its path relative to the VRT, size and transform."""

    href: str
    width: int
    height: int
    transform: Affine


def north_up(a: Affine) -> bool:
    """Whether ``a`` maps pixels north-up without rotation (``b = d = 0``, ``a > 0 > e``)."""
    return a.b == 0 and a.d == 0 and a.a > 0 and a.e < 0


def mosaic_vrt(
    sources: Sequence[MosaicSource],
    crs: str,
    names: Sequence[str],
    tags: dict[str, str] | None = None,
) -> str:
    """A GDAL VRT (XML) mosaicking cluster maps in one ``crs`` (authority string or WKT).

    The mosaic's pixel is the finest source pixel (``res = min |a|, |e|``) and its grid is
    aligned to the first source of that resolution; its extent is the union of the sources'.
    Each source is a ``ComplexSource`` read with nearest neighbour, its NODATA left out (so
    it never covers another scene), its path relative to the VRT (``relativeToVRT="1"``).
    The band carries the palette as a colour table, ``names`` as category names (and a RAT)
    and NODATA of :func:`antssl.maps.grid_nodata`. Sources must be north-up (no rotation).
    Raises :class:`ConfigError` for no sources or a rotated one.
    """
    if not sources:
        raise ConfigError("a mosaic needs at least one cluster map")
    bad = [s.href for s in sources if not north_up(s.transform)]
    if bad:
        raise ConfigError(f"cluster maps {bad} are rotated or not north-up: cannot mosaic them")
    k = len(names)
    dtype = grid_dtype(k)
    nodata = grid_nodata(dtype)
    res = min(min(s.transform.a, -s.transform.e) for s in sources)
    lefts = [s.transform.c for s in sources]
    tops = [s.transform.f for s in sources]
    rights = [s.transform.c + s.width * s.transform.a for s in sources]
    bottoms = [s.transform.f + s.height * s.transform.e for s in sources]
    ref = next(s.transform for s in sources if min(s.transform.a, -s.transform.e) == res)
    # Snap the union's corner onto the reference grid (a small tolerance for float noise).
    left = ref.c - math.ceil((ref.c - min(lefts)) / res - 1e-9) * res
    top = ref.f + math.ceil((max(tops) - ref.f) / res - 1e-9) * res
    width = max(1, math.ceil((max(rights) - left) / res - 1e-9))
    height = max(1, math.ceil((top - min(bottoms)) / res - 1e-9))
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = CRS.from_user_input(
        crs
    ).to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (left, res, 0.0, top, 0.0, -res)
    )
    meta = ET.SubElement(root, "Metadata")
    for key, value in {"k": str(k), **(tags or {})}.items():
        ET.SubElement(meta, "MDI", key=key).text = value
    band = ET.SubElement(
        root, "VRTRasterBand", dataType="Byte" if dtype == np.uint8 else "UInt16", band="1"
    )
    ET.SubElement(band, "Description").text = "cluster"
    ET.SubElement(band, "NoDataValue").text = str(nodata)
    ET.SubElement(band, "ColorInterp").text = "Palette"
    table = ET.SubElement(band, "ColorTable")
    pal = palette(k)
    for c in range(k if dtype != np.uint8 else 256):
        rgb, alpha = (pal[c], 255) if c < k else ((0, 0, 0), 0)
        ET.SubElement(
            table, "Entry", c1=str(int(rgb[0])), c2=str(int(rgb[1])), c3=str(int(rgb[2])),
            c4=str(alpha),
        )  # fmt: skip
    _band_items(band, list(names), None)
    for s in sources:
        src = ET.SubElement(band, "ComplexSource", resampling="nearest")
        ET.SubElement(src, "SourceFilename", relativeToVRT="1").text = s.href
        ET.SubElement(src, "SourceBand").text = "1"
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(s.width), ySize=str(s.height))
        a = s.transform
        ET.SubElement(
            src,
            "DstRect",
            xOff=repr((a.c - left) / res),
            yOff=repr((top - a.f) / res),
            xSize=repr(s.width * a.a / res),
            ySize=repr(s.height * -a.e / res),
        )
        ET.SubElement(src, "NODATA").text = str(nodata)
    return _text(root)


def overview_grid(
    x: np.ndarray, y: np.ndarray, labels: np.ndarray, cell: float, k: int, max_size: int = 2048
) -> tuple[np.ndarray, Affine]:
    """Tile centres ``(x, y)`` (one projected CRS) rasterised at ``cell`` (CRS units).

    The grid's origin is half a cell up-left of the top-left centre, so centres on a
    ``cell``-spaced grid land on cell centres: ``col = floor((x - x_min)/cell + ½)``,
    ``row = floor((y_max - y)/cell + ½)``. When that grid would be wider or taller than
    ``max_size``, ``cell`` grows until it is not. Each cell holds the most common cluster of
    its tiles (ties: the lower id) and NODATA (:func:`antssl.maps.grid_nodata`) where it has
    none; ``labels < 0`` are ignored. Returns ``(grid (rows, cols) uint8|uint16, transform)``.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if not cell > 0:
        raise ConfigError(f"overview cell size must be > 0, got {cell}")
    keep = (labels >= 0) & np.isfinite(x) & np.isfinite(y)
    x, y, labels = x[keep], y[keep], labels[keep]
    dtype = grid_dtype(k)
    if not x.size:
        return np.full((1, 1), grid_nodata(dtype), dtype=dtype), Affine.scale(cell, -cell)
    x0, y0 = float(x.min()), float(y.max())
    span = max(float(x.max()) - x0, y0 - float(y.min()))
    cell = max(cell, span / (max_size - 1))
    cols = np.floor((x - x0) / cell + 0.5).astype(np.int64)
    rows = np.floor((y0 - y) / cell + 0.5).astype(np.int64)
    n_rows, n_cols = int(rows.max()) + 1, int(cols.max()) + 1
    grid = np.full((n_rows, n_cols), grid_nodata(dtype), dtype=dtype)
    # Majority per cell: count (cell, label) pairs, keep the top label of each cell.
    flat = rows * n_cols + cols
    pairs, counts = np.unique(np.stack([flat, labels]), axis=1, return_counts=True)
    order = np.lexsort((pairs[1], -counts, pairs[0]))  # by cell, most tiles, lower label
    first = np.unique(pairs[0][order], return_index=True)[1]
    best = order[first]
    grid.ravel()[pairs[0][best]] = pairs[1][best]
    transform = Affine.translation(x0 - cell / 2, y0 + cell / 2) @ Affine.scale(cell, -cell)
    return grid, transform


def epsg_of(crs: str) -> int | None:
    """The EPSG code of ``crs`` (authority string or WKT), None when it has none."""
    code = CRS.from_user_input(crs).to_epsg()
    return None if code is None else int(code)
