"""The evaluated tiles: planned, read and labelled with the project's own tiling and reader.

:func:`load_tiles` plans the scored scenes exactly as the tiles stage does
(:func:`antssl.plan.plan_scene`: same mask, tiling and nodata rules), reads every planned
tile once per scene (:func:`antssl.reader.read_tiles`), cuts the matching windows from
each scene's label raster (:func:`antssl.evaluate.labels.cut_windows`) and keeps the
labelled tiles. Runs in one process (no Ray): evaluation sets are thousands of tiles.

Label rasters come from ``evaluate.labels``, a URI template: ``{scene_id}`` is the
scene's id, ``{scene_dir}`` the URI of the folder holding the scene, and a bare file
name (no ``/``) is looked for next to the scene.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from antssl import storage
from antssl.config import Config, ScenesConfig, scored_tiling
from antssl.errors import AntsslError, SceneReadError
from antssl.evaluate import EvaluationError
from antssl.evaluate.labels import TileLabels, binary_labels, cut_windows, majority_labels
from antssl.mask import load_vector
from antssl.plan import plan_scene
from antssl.reader import read_tiles
from antssl.scenes import SceneInfo, check_bands, discover, open_raster, read_info

log = logging.getLogger(__name__)

_SOURCE_KEYS = ("uris", "glob", "stac", "stac_asset")


@dataclass
class SceneCounts:
    """What happened to one scored scene (for the report)."""

    scene_id: str
    uri: str
    labels: str
    planned: int = 0
    labelled: int = 0
    per_class: dict[int, int] = field(default_factory=dict)
    probe_train: bool = False
    skipped: str | None = None


@dataclass(frozen=True)
class EvalTiles:
    """The labelled tiles of the scored scenes, all arrays aligned along n.

    Attributes:
        pixels: (n, C, size, size) float32, the file's values (nodata included as read).
        valid: (n, size, size) bool, pixels holding data in every band.
        label: (n,) int64 tile label (>= 0: every kept tile is labelled).
        score: (n,) float64 majority purity (classes) or positive fraction (binary).
        scene_id, tile_id: (n,) str. xy: (n, 2) float64 tile centres in the scene CRS.
        probe_train: (n,) bool, rows the linear probe is fitted on.
        infos: scene metadata by id. scenes: per-scene counts, in scene order.
        labelled_total: labelled tiles before the ``max_tiles`` cap.
    """

    pixels: np.ndarray
    valid: np.ndarray
    label: np.ndarray
    score: np.ndarray
    scene_id: np.ndarray
    tile_id: np.ndarray
    xy: np.ndarray
    probe_train: np.ndarray
    infos: dict[str, SceneInfo]
    scenes: list[SceneCounts]
    labelled_total: int

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @classmethod
    def from_arrays(
        cls,
        label: np.ndarray,
        scene_id: np.ndarray,
        pixels: np.ndarray | None = None,
        valid: np.ndarray | None = None,
    ) -> EvalTiles:
        """Tiles held in memory (no scenes on storage): ``label`` (n,), ``scene_id`` (n,),
        optional ``pixels`` (n, C, H, W) and ``valid`` (n, H, W) (default: 2x2 zeros, all
        valid); tile ids are row numbers, centres at 0, no probe-train rows."""
        n = len(label)
        pixels = np.zeros((n, 1, 2, 2), np.float32) if pixels is None else pixels
        if valid is None:
            valid = np.ones((n, *pixels.shape[2:]), bool)
        return cls(
            pixels=pixels,
            valid=valid,
            label=np.asarray(label, dtype=np.int64),
            score=np.ones(n),
            scene_id=np.asarray(scene_id).astype(str),
            tile_id=np.arange(n).astype(str),
            xy=np.zeros((n, 2)),
            probe_train=np.zeros(n, bool),
            infos={},
            scenes=[],
            labelled_total=n,
        )

    def class_counts(self, rows: np.ndarray | None = None) -> dict[int, int]:
        y = self.label if rows is None else self.label[rows]
        values, n = np.unique(y, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, n, strict=True)}


def scored_config(config: Config, scenes: ScenesConfig | None = None) -> Config:
    """The config whose ``scenes`` section lists the scored scenes (or ``scenes``) and whose
    ``tiling`` section is the scored tiles' (:func:`antssl.config.scored_tiling`).

    ``evaluate.scenes`` (or the ``scenes`` given, e.g. ``evaluate.probe_fit_scenes``)
    replaces the scene source (uris / glob / stac); its other keys (bands, nodata,
    allow_no_crs, on_bad_scene) default to the top-level section's, so the pixels are read
    as the encoder saw them in training.
    """
    update: dict[str, Any] = {}
    over = scenes if scenes is not None else config.evaluate.scenes
    if over is not None:
        top = config.scenes.model_dump()
        keys = {k: v for k, v in over.model_dump().items() if k in _SOURCE_KEYS}
        keys |= {k: getattr(over, k) for k in over.model_fields_set if k not in _SOURCE_KEYS}
        update["scenes"] = ScenesConfig.model_validate({**top, **keys})
    if config.evaluate.tiling:
        update["tiling"] = scored_tiling(config)
    return config.model_copy(update=update) if update else config


def label_uri(template: str, scene_id: str, scene_uri: str) -> str:
    """The label raster URI of one scene (module docstring for the template rules)."""
    scene_dir = storage.normalize_uri(scene_uri).rsplit("/", 1)[0]
    filled = template.replace("{scene_id}", scene_id).replace("{scene_dir}", scene_dir)
    if "/" not in filled:
        return f"{scene_dir}/{filled}"
    return storage.normalize_uri(filled)


def matches(patterns: list[str], scene_id: str, scene_uri: str) -> bool:
    """Whether a scene matches any ``evaluate.probe_train`` pattern.

    A pattern without ``/`` is a glob on the scene id (``fracture_*``); one with ``/`` is a
    glob on the end of the scene URI (``data_trainset/*``), or on the whole URI when it
    holds ``://``.
    """
    uri = storage.normalize_uri(scene_uri)
    for p in patterns:
        if "/" not in p:
            hit = fnmatch.fnmatchcase(scene_id, p)
        else:
            hit = fnmatch.fnmatchcase(uri, p if "://" in p else "*" + p)
        if hit:
            return True
    return False


def read_label_raster(uri: str, info: SceneInfo, config: Config) -> np.ndarray:
    """Band 1 of a label raster, checked to lie on the scene's pixel grid: (H, W)."""
    try:
        with open_raster(uri, config.storage) as ds:
            shape, transform, crs = (ds.height, ds.width), tuple(ds.transform)[:6], ds.crs
            raster = ds.read(1)
    except SceneReadError as err:
        raise SceneReadError(
            f"cannot read the label raster {uri} of scene {info.scene_id}: {err.__cause__ or err}"
            "; check evaluate.labels (or --labels)"
        ) from None
    if shape != (info.height, info.width):
        raise EvaluationError(
            f"label raster {uri} is {shape[0]}x{shape[1]} px but scene {info.scene_id} is "
            f"{info.height}x{info.width}: a label raster must share its scene's pixel grid"
        )
    if crs is not None and info.crs is not None and not np.allclose(transform, info.transform):
        raise EvaluationError(
            f"label raster {uri} has transform {transform}, scene {info.scene_id} has "
            f"{info.transform}: a label raster must share its scene's pixel grid"
        )
    return raster


def _tile_labels(windows: np.ndarray, valid: np.ndarray, config: Config) -> TileLabels:
    ev = config.evaluate
    if ev.label_kind == "binary":
        return binary_labels(windows, ev.positive_fraction, ev.negative_fraction, valid=valid)
    if not np.issubdtype(windows.dtype, np.integer):
        raise EvaluationError(
            f"label_kind 'classes' needs an integer label raster, got {windows.dtype}; "
            "use label_kind: binary for masks"
        )
    if ev.ignore is not None:
        windows = np.where(valid, windows, ev.ignore)
    return majority_labels(windows, ignore=ev.ignore, min_purity=ev.min_purity)


def _scene_tiles(
    info: SceneInfo, config: Config, vector: Any, counts: SceneCounts
) -> dict[str, np.ndarray] | None:
    """Plan, read and label one scene's tiles; None when the scene is left out."""
    t = config.tiling
    raster = read_label_raster(counts.labels, info, config)
    ev = config.evaluate
    if ev.label_kind == "binary" and ev.drop_empty_scenes and not (raster != 0).any():
        counts.skipped = "label raster marks nothing (empty mask)"
        return None
    plan = plan_scene(info, config, vector)
    counts.planned = len(plan.tiles)
    if counts.planned == 0:
        counts.skipped = "no tile kept by the mask and tiling rules"
        return None
    rows, cols = plan.tiles["row"].to_numpy(), plan.tiles["col"].to_numpy()
    with open_raster(info.uri, config.storage) as ds:
        region = read_tiles(ds, info, rows, cols, t.size, t.stride)
    lab = _tile_labels(cut_windows(raster, rows, cols, t.size), region.valid, config)
    keep = lab.label >= 0
    counts.labelled = int(keep.sum())
    counts.per_class = {
        int(c): int((lab.label[keep] == c).sum()) for c in np.unique(lab.label[keep])
    }
    if not keep.any():
        counts.skipped = "no tile is labelled (all ambiguous or ignored)"
        return None
    return {
        "pixels": region.pixels[keep].astype(np.float32),
        "valid": region.valid[keep],
        "label": lab.label[keep],
        "score": lab.score[keep],
        "tile_id": plan.tiles["tile_id"].to_numpy(dtype=str)[keep],
        "xy": plan.tiles[["x", "y"]].to_numpy(np.float64)[keep],
    }


def load_tiles(
    config: Config, template: str, scenes: ScenesConfig | None = None, role: str = "scored"
) -> EvalTiles:
    """Plan, read and label the tiles of every scored scene (module docstring).

    ``scenes`` replaces ``evaluate.scenes`` (as :func:`scored_config`), e.g. with
    ``evaluate.probe_fit_scenes``; ``role`` names those scenes in messages.

    Raises:
        SceneReadError: a scene or label raster cannot be read (and on_bad_scene is fail).
        EvaluationError: a label raster is off its scene's grid, or no tile is labelled.
    """
    ev = config.evaluate
    cfg = scored_config(config, scenes)
    pairs = discover(cfg)
    vector = load_vector(cfg.mask, cfg.storage) if cfg.mask.kind == "coastline" else None
    parts: list[tuple[str, dict[str, np.ndarray]]] = []
    infos: dict[str, SceneInfo] = {}
    scenes: list[SceneCounts] = []
    for sid, uri in pairs:
        counts = SceneCounts(sid, uri, label_uri(template, sid, uri))
        counts.probe_train = bool(ev.probe_train) and matches(ev.probe_train or [], sid, uri)
        scenes.append(counts)
        try:
            info = read_info(sid, uri, cfg)
            part = _scene_tiles(info, cfg, vector, counts)
        except (AntsslError, OSError) as err:
            if cfg.scenes.on_bad_scene == "fail" or isinstance(err, EvaluationError):
                raise
            counts.skipped = f"{type(err).__name__}: {err}"
            log.warning("evaluate: skipping scene %s: %s", sid, err)
            continue
        log.info(
            f"evaluate: {sid}: {counts.planned} tiles planned, {counts.labelled} labelled "
            + (f"{counts.per_class}" if part is not None else f"({counts.skipped})")
        )
        if part is not None:
            infos[sid] = info
            parts.append((sid, part))
    if not parts:
        raise EvaluationError(
            f"no labelled tile in any {role} scene:\n"
            + "\n".join(f"  {s.scene_id}: {s.skipped}" for s in scenes)
            + "\ncheck evaluate.labels, the label thresholds and the tiling rules"
        )
    check_bands(infos)
    cat = {k: np.concatenate([p[k] for _, p in parts]) for k in parts[0][1]}
    scene_id = np.concatenate([np.full(len(p["label"]), sid, dtype=object) for sid, p in parts])
    total = len(cat["label"])
    keep = np.arange(total)
    if total > ev.max_tiles:
        rng = np.random.default_rng(ev.seed)
        keep = np.sort(rng.choice(total, ev.max_tiles, replace=False))
        log.info(f"evaluate: {total} labelled tiles; scoring a random {ev.max_tiles} (max_tiles)")
    train_ids = {s.scene_id for s in scenes if s.probe_train}
    sid_kept = scene_id[keep].astype(str)
    return EvalTiles(
        pixels=cat["pixels"][keep],
        valid=cat["valid"][keep],
        label=cat["label"][keep].astype(np.int64),
        score=cat["score"][keep],
        scene_id=sid_kept,
        tile_id=cat["tile_id"][keep],
        xy=cat["xy"][keep],
        probe_train=np.isin(sid_kept, sorted(train_ids)),
        infos=infos,
        scenes=scenes,
        labelled_total=total,
    )
