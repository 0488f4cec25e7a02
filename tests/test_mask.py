"""The coastal band: buffer geometry and rasterisation (pure shapely / rasterio)."""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine

from antssl.config import MaskConfig, StorageConfig
from antssl.mask import DEFAULT_LAYERS, coastal_band, load_vector, rasterize


def test_polygon_band_has_seaward_and_inland_widths() -> None:
    land = shapely.box(0, 0, 10_000, 10_000)
    band = coastal_band(land, seaward_m=2_000, inland_m=1_000, polygonal=True)
    # area: outer rounded square minus the inner square
    outer = 10_000**2 + 4 * 10_000 * 2_000 + np.pi * 2_000**2
    inner = 8_000**2
    assert abs(band.area - (outer - inner)) / (outer - inner) < 1e-3
    assert band.contains(shapely.Point(-1_500, 5_000))  # 1.5 km at sea
    assert not band.contains(shapely.Point(-2_500, 5_000))  # 2.5 km at sea
    assert band.contains(shapely.Point(700, 5_000))  # 0.7 km inland
    assert not band.contains(shapely.Point(1_300, 5_000))  # 1.3 km inland


def test_line_band_is_symmetric_max() -> None:
    line = shapely.LineString([(0, 0), (10_000, 0)])
    band = coastal_band(line, seaward_m=500, inland_m=2_000, polygonal=False)
    assert band.contains(shapely.Point(5_000, 1_900)) and band.contains(
        shapely.Point(5_000, -1_900)
    )
    assert not band.contains(shapely.Point(5_000, 2_100))


def test_rasterize_fraction_matches_area() -> None:
    geom = shapely.box(0, 0, 500, 1000)  # left half of a 1000 m square
    tr = Affine(10, 0, 0, 0, -10, 1000)  # 10 m pixels, 100x100
    m = rasterize(geom, tr, (100, 100))
    assert m.dtype == bool and m[:, :50].all() and not m[:, 50:].any()


def test_default_coastline_ships_natural_earth() -> None:
    vec = load_vector(MaskConfig(), StorageConfig())
    assert vec.crs.to_epsg() == 3031 and vec.polygonal
    assert vec.source.endswith(".gpkg") and len(DEFAULT_LAYERS) == 3
    # Antarctica (land + ice shelves) is ~13.6 M km²
    area_km2 = vec.geometry.area / 1e6
    assert 12.5e6 < area_km2 < 14.5e6
    # McMurdo Station (77.85°S 166.67°E) lies on land; the open Southern Ocean at 60°S does not.
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:4326", "EPSG:3031", always_xy=True)
    assert vec.geometry.contains(shapely.Point(*tr.transform(166.67, -77.85)))
    assert not vec.geometry.contains(shapely.Point(*tr.transform(0.0, -60.0)))
