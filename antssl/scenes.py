"""Scenes: finding them, reading their metadata once, and reading their pixels.

A scene is one raster (GeoTIFF / COG) with any band count, integer or float
dtype, any CRS (EPSG:3031 is the usual one), or none when the config allows
it. Scene lists come from explicit URIs, a glob or prefix, or a STAC
ItemCollection JSON file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from antssl import storage, workspace
from antssl.config import Config, ScenesConfig, StorageConfig
from antssl.errors import ConfigError, SceneError, SceneReadError, StageOrderError, StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneInfo:
    """Metadata of one scene, read once.

    ``transform`` is the GDAL affine (a, b, c, d, e, f) mapping pixel (col, row)
    to scene-CRS (x, y); ``crs`` is an authority string (``EPSG:3031``) or WKT,
    or None for scenes without a CRS. ``bands`` are the 1-based band indices
    used; ``nodata`` is the value treated as missing (config overrides file).
    """

    scene_id: str
    uri: str
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    bands: tuple[int, ...]

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneInfo:
        return cls(**{**d, "transform": tuple(d["transform"]), "bands": tuple(d["bands"])})


@contextlib.contextmanager
def open_raster(uri: str, storage_cfg: StorageConfig) -> Iterator[rasterio.DatasetReader]:
    """Open a raster on any workspace storage, with the right GDAL settings.

    ``storage_cfg.raster_access`` picks GDAL's own ``/vsis3/`` range reads
    (default) or an fsspec file object (``opener=``). Missing or corrupt files
    raise :class:`SceneReadError` naming the URI.
    """
    norm = storage.normalize_uri(uri)
    try:
        with _env(storage_cfg):
            with warnings.catch_warnings():
                # A scene without a geotransform is refused by read_info or wanted
                # (scenes.allow_no_crs); rasterio's warning on every open is noise.
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                if norm.startswith("s3://") and storage_cfg.raster_access == "fsspec":
                    fs, _ = storage.filesystem(norm, storage_cfg)
                    ds = rasterio.open(norm[len("s3://") :], opener=fs)
                else:
                    ds = rasterio.open(storage.gdal_path(norm))
            with ds:
                yield ds
    except (RasterioIOError, StorageError, FileNotFoundError) as err:
        raise SceneReadError(f"cannot read scene {uri}: {gdal_cause(err)}") from err


def gdal_cause(err: BaseException) -> str:
    """GDAL's own words for a failed read: rasterio raises "Read failed. See previous
    exception for details." over a chain of GDAL errors; the innermost one says what
    happened (``TIFFFillTile:Read error at row …; got 0 bytes, expected 62938``)."""
    messages = []
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        messages.append(str(cur).strip())
        cur = cur.__cause__ or cur.__context__
    useful = [m for m in messages if m and "see previous exception" not in m.lower()]
    return useful[-1] if useful else messages[0]


def check_readable(info: SceneInfo, storage_cfg: StorageConfig) -> None:
    """Open a scene and read its last internal block (all selected bands): a file truncated
    or replaced since ``antssl tiles`` fails here, in a second, instead of deep inside a
    Ray Data task. Raises :class:`SceneReadError` naming the scene id, its URI and GDAL's
    cause. (A block lost in the middle of a file is only found when it is read.)"""
    with open_raster(info.uri, storage_cfg) as ds:
        windows = [w for _, w in ds.block_windows(1)]
        if windows:
            read_window(ds, info, windows[-1])


def _env(storage_cfg: StorageConfig) -> rasterio.Env:
    """GDAL settings for one open. GDAL reads AWS keys from the environment itself, so
    rasterio's boto3 session (7–20 ms per open) is skipped with a ``DummySession``."""
    from rasterio.session import DummySession

    return rasterio.Env(session=DummySession(), **storage.gdal_env(storage_cfg))


def scene_id_for(uri: str) -> str:
    """The scene id of a URI: its file name without extension."""
    name = PurePosixPath(storage.normalize_uri(uri).split("://", 1)[1]).name
    return name.split(".", 1)[0]


def discover(config: Config) -> list[tuple[str, str]]:
    """The configured scenes as ``(scene_id, uri)`` pairs, in config order, de-duplicated.

    Raises :class:`ConfigError` when no scene is configured, a glob matches
    nothing, or two different URIs share a scene id.
    """
    sc = config.scenes
    pairs: list[tuple[str, str]] = [(scene_id_for(u), storage.normalize_uri(u)) for u in sc.uris]
    if sc.glob:
        matched = storage.glob(sc.glob, config.storage)
        matched = [u for u in matched if u.lower().endswith((".tif", ".tiff", ".cog"))]
        patterns = exclude_patterns(config)
        left_out = [u for u in matched if excluded(u, patterns)]
        matched = [u for u in matched if u not in left_out]
        if left_out:
            log.info(
                "scenes: left out %d raster(s) matching scenes.exclude %s: %s",
                len(left_out),
                patterns,
                ", ".join(PurePosixPath(u).name for u in left_out[:5])
                + (", …" if len(left_out) > 5 else ""),
            )
        if not matched:
            raise ConfigError(
                f"scenes.glob {sc.glob!r} matches no .tif/.tiff/.cog file"
                + (f" outside scenes.exclude {patterns}" if left_out else "")
            )
        pairs += [(scene_id_for(u), u) for u in matched]
    if sc.stac:
        pairs += _stac_scenes(sc, config.storage)
    if not pairs:
        raise ConfigError("no scenes configured: set scenes.uris, scenes.glob or scenes.stac")
    seen: dict[str, str] = {}
    out = []
    for sid, uri in pairs:
        if sid in seen:
            if seen[sid] != uri:
                raise ConfigError(
                    f"scene id {sid!r} is used by both {seen[sid]} and {uri}; "
                    "scene ids (file names without extension) must be unique"
                )
            continue
        seen[sid] = uri
        out.append((sid, uri))
    return out


def exclude_patterns(config: Config) -> list[str]:
    """scenes.exclude, plus the file-name pattern of evaluate.labels when it is a bare
    file-name template (``{scene_id}_classes.tif`` → ``*_classes.tif``)."""
    patterns = list(config.scenes.exclude)
    labels = config.evaluate.labels
    if labels and "/" not in labels.replace("{scene_dir}/", ""):
        pattern = labels.replace("{scene_dir}/", "").replace("{scene_id}", "*")
        if pattern not in patterns:
            patterns.append(pattern)
    return patterns


def excluded(uri: str, patterns: list[str]) -> bool:
    """Whether the file name of ``uri`` matches one of ``patterns`` (case-insensitive)."""
    name = PurePosixPath(storage.normalize_uri(uri).split("://", 1)[-1]).name.lower()
    return any(fnmatch.fnmatchcase(name, p.lower()) for p in patterns)


def _stac_scenes(sc: ScenesConfig, storage_cfg: StorageConfig) -> list[tuple[str, str]]:
    if not sc.stac:
        return []
    try:
        doc = json.loads(storage.read_text(sc.stac, storage_cfg))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"scenes.stac {sc.stac} is not JSON: {err}") from None
    features = doc.get("features") if isinstance(doc, dict) else None
    if doc.get("type") != "FeatureCollection" or not isinstance(features, list):
        raise ConfigError(f"scenes.stac {sc.stac} is not a STAC ItemCollection (FeatureCollection)")
    base = sc.stac.rsplit("/", 1)[0]
    out = []
    for item in features:
        assets = item.get("assets") or {}
        key = sc.stac_asset or next(
            (k for k, a in assets.items() if "tiff" in str(a.get("type", "")).lower()), None
        )
        if key is None or key not in assets:
            raise ConfigError(
                f"STAC item {item.get('id')!r} has no asset {sc.stac_asset or '(GeoTIFF)'}; "
                f"assets: {sorted(assets)}"
            )
        href = str(assets[key]["href"])
        if "://" not in href and not href.startswith("/"):
            href = f"{base}/{href}"
        out.append((str(item.get("id") or scene_id_for(href)), storage.normalize_uri(href)))
    return out


def read_info(scene_id: str, uri: str, config: Config) -> SceneInfo:
    """Read one scene's metadata and check it against the config.

    Raises :class:`SceneReadError` for missing/corrupt files and
    :class:`SceneError` for a scene that cannot be used as configured.
    """
    sc = config.scenes
    with open_raster(uri, config.storage) as ds:
        crs = ds.crs
        if crs is None and not sc.allow_no_crs:
            raise SceneError(
                f"scene {scene_id} ({uri}) has no CRS; set scenes.allow_no_crs: true to use "
                "it with pixel coordinates"
            )
        bands = tuple(sc.bands) if sc.bands else tuple(range(1, ds.count + 1))
        bad = [b for b in bands if b > ds.count]
        if bad:
            raise SceneError(
                f"scenes.bands {list(bands)} out of range for scene {scene_id} ({uri}), "
                f"which has {ds.count} band(s)"
            )
        nodata = sc.nodata if sc.nodata is not None else ds.nodata
        if nodata is not None and np.isnan(nodata):
            nodata = float("nan")
        crs_str = None
        if crs is not None:
            epsg = crs.to_epsg()
            crs_str = f"EPSG:{epsg}" if epsg else crs.to_wkt()
        return SceneInfo(
            scene_id=scene_id,
            uri=storage.normalize_uri(uri),
            crs=crs_str,
            transform=tuple(ds.transform)[:6],  # type: ignore[arg-type]
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=str(ds.dtypes[0]),
            nodata=None if nodata is None else float(nodata),
            bands=bands,
        )


def read_window(ds: rasterio.DatasetReader, info: SceneInfo, window: Window) -> np.ndarray:
    """Pixels of ``window`` for the scene's selected bands: (C, h, w) in the file's dtype."""
    try:
        return ds.read(list(info.bands), window=window)
    except RasterioIOError as err:
        raise SceneReadError(
            f"cannot read scene {info.scene_id} ({info.uri}) at {window}: {gdal_cause(err)}"
        ) from err


def valid_mask(pixels: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where every band holds data: (C, h, w) → (h, w) bool.

    A pixel is invalid when any band equals ``nodata`` or is NaN/inf.
    """
    valid = np.ones(pixels.shape[1:], dtype=bool)
    if np.issubdtype(pixels.dtype, np.floating):
        valid &= np.isfinite(pixels).all(axis=0)
    if nodata is not None and not np.isnan(nodata):
        valid &= (pixels != pixels.dtype.type(nodata)).all(axis=0)
    return valid


def load_infos(config: Config) -> dict[str, SceneInfo]:
    """The scene metadata written by the tiles stage (``scenes.json``), by scene id."""
    uri = workspace.scenes_uri(config)
    if not storage.exists(uri, config.storage):
        raise StageOrderError(f"no {uri}: run `antssl tiles --config …` first")
    docs = json.loads(storage.read_text(uri, config.storage))
    return {d["scene_id"]: SceneInfo.from_dict(d) for d in docs}


def check_bands(infos: dict[str, SceneInfo]) -> None:
    """ConfigError unless every scene gives the same number of bands."""
    counts = {sid: len(i.bands) for sid, i in infos.items()}
    if len(set(counts.values())) > 1:
        groups: dict[int, list[str]] = {}
        for sid, n in counts.items():
            groups.setdefault(n, []).append(sid)
        listed = "; ".join(
            f"{n} band(s): "
            + ", ".join(f"{sid} ({infos[sid].uri})" for sid in sids[:10])
            + (f" and {len(sids) - 10} more" if len(sids) > 10 else "")
            for n, sids in sorted(groups.items(), key=lambda g: -len(g[1]))
        )
        raise ConfigError(
            f"scenes have different band counts: {listed}. If some of these files are label "
            "or mask rasters beside the scenes, leave them out with scenes.exclude (file-name "
            "globs, e.g. ['*_labels.*', '*_mask.*']); if all are scenes, set scenes.bands to "
            "choose the same bands in every scene"
        )
