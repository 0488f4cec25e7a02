"""The tiles stage: scenes → coastal tile catalog, normalisation stats and previews.

``run(config) -> URI of tiles.parquet``. Scenes are planned in parallel Ray
tasks (one per scene: read metadata, mask, count, preview); the catalog is
written atomically, then stats.json, then tiles.json (the completion marker
holding the config digest), so an interrupted run is simply re-run and a
finished one is skipped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import ray

from antssl import catalog, preview, storage, workspace
from antssl.config import Config
from antssl.data import compute_stats
from antssl.errors import (
    AntsslError,
    EmptyResultError,
    MaskError,
    SceneError,
    SceneReadError,
)
from antssl.mask import CoastVector, load_vector
from antssl.plan import plan_scene
from antssl.runtime import ensure_ray
from antssl.scenes import SceneInfo, check_bands, discover, open_raster, read_info
from antssl.tiling import cell_size

log = logging.getLogger(__name__)
DIGEST_SECTIONS = ("scenes", "mask", "tiling", "data")


@dataclass
class SceneSummary:
    scene_id: str
    uri: str
    tiles_total: int = 0
    kept: int = 0
    dropped_mask: int = 0
    dropped_nodata: int = 0
    outside_mask: int = 0
    error: str | None = None


@dataclass
class TilesSummary:
    digest: str
    plan_digest: str
    tiles: int = 0
    scenes: list[SceneSummary] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped(self) -> list[SceneSummary]:
        return [s for s in self.scenes if s.error]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def table(self) -> str:
        """A human-readable summary: per scene kept / dropped and why."""
        lines = [f"{'scene':<24} {'grid':>8} {'kept':>7} {'not coastal':>12} {'nodata':>7}"]
        for s in self.scenes:
            if s.error:
                lines.append(f"{s.scene_id:<24} SKIPPED: {s.error}")
            else:
                lines.append(
                    f"{s.scene_id:<24} {s.tiles_total:>8} {s.kept:>7} "
                    f"{s.dropped_mask:>12} {s.dropped_nodata:>7}"
                )
        ok = [s for s in self.scenes if not s.error]
        lines.append(
            f"{len(ok)} scene(s), {self.tiles} tiles kept of {sum(s.tiles_total for s in ok)}; "
            f"{len(self.skipped)} scene(s) skipped; {self.seconds:.1f} s"
        )
        return "\n".join(lines)


@ray.remote
def _plan_task(
    scene_id: str, uri: str, config: Config, vector: CoastVector | None
) -> tuple[Any, ...]:
    """Plan one scene and write its preview; errors come back as values, not exceptions."""
    try:
        info = read_info(scene_id, uri, config)
        plan = plan_scene(info, config, vector)
        _write_preview(info, plan, config)
        counts = (plan.total, plan.dropped_mask, plan.dropped_nodata, plan.outside_mask)
        return (info, plan.tiles, counts, None)
    except (AntsslError, OSError) as err:
        return (None, None, (0, 0, 0, 0), f"{type(err).__name__}: {err}")


def _write_preview(info: SceneInfo, plan: Any, config: Config) -> None:
    t = config.tiling
    with open_raster(info.uri, config.storage) as ds:
        image, factor = preview.overview(ds, info)
    png = preview.scene_preview(
        image,
        factor,
        plan.coverage,
        cell_size(t.size, t.stride),
        plan.tiles["row"].to_numpy(),
        plan.tiles["col"].to_numpy(),
        t.size,
        f"{info.scene_id}: {len(plan.tiles)} of {plan.total} tiles kept "
        f"(size {t.size}, stride {t.stride})\n"
        "purple: coastal mask; yellow: kept tiles; red: nodata",
    )
    storage.write_bytes(
        storage.join(workspace.previews_uri(config), f"{info.scene_id}.png"), png, config.storage
    )


def is_complete(config: Config) -> bool:
    """True when the catalog was made with this config and the same scene list.

    The scene list is discovered again (a glob may match new files), so adding
    scenes to a prefix re-plans even when the config text is unchanged.
    """
    marker = workspace.tiles_summary_uri(config)
    if not storage.exists(marker, config.storage):
        return False
    done = json.loads(storage.read_text(marker, config.storage))
    scenes = sorted((s["scene_id"], s["uri"]) for s in done.get("scenes", []))
    return (
        done.get("digest") == config.digest(*DIGEST_SECTIONS)
        and scenes == sorted(discover(config))
        and all(
            storage.exists(u, config.storage)
            for u in (workspace.catalog_uri(config), workspace.stats_uri(config))
        )
    )


def run(config: Config, force: bool = False) -> str:
    """Plan tiles for every configured scene; returns the catalog URI."""
    uri = workspace.catalog_uri(config)
    if not force and is_complete(config):
        log.info("tiles: %s is complete for this config; skipping", uri)
        return uri
    start = time.perf_counter()
    storage.check_writable(workspace.root(config), config.storage)
    pairs = keep_previous_order(config, discover(config))
    vector = load_vector(config.mask, config.storage) if config.mask.kind == "coastline" else None
    ensure_ray(config)
    vref = ray.put(vector)
    results = ray.get([_plan_task.remote(sid, u, config, vref) for sid, u in pairs])

    summary = TilesSummary(
        digest=config.digest(*DIGEST_SECTIONS),
        plan_digest=config.digest("mask", "tiling"),
    )
    infos: dict[str, SceneInfo] = {}
    frames = []
    for (sid, u), (info, frame, counts, error) in zip(pairs, results, strict=True):
        total, d_mask, d_nodata, outside = counts
        kept = 0 if frame is None else len(frame)
        summary.scenes.append(SceneSummary(sid, u, total, kept, d_mask, d_nodata, outside, error))
        if error:
            if config.scenes.on_bad_scene == "fail":
                raise _reraise(error, sid, u)
            log.warning("skipping scene %s: %s", sid, error)
            continue
        infos[sid] = info
        frames.append(frame)
    check_bands(infos)
    ok = [s for s in summary.scenes if not s.error]
    if config.mask.kind == "coastline" and ok and all(s.outside_mask == s.tiles_total for s in ok):
        raise MaskError(
            f"the coastal mask from {config.mask.vector or 'the default coastline'} misses every "
            f"scene ({', '.join(s.scene_id for s in ok)}): check the vector's CRS and extent, "
            "or widen mask.seaward_km / mask.inland_km"
        )
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summary.tiles = len(table)
    if len(table) == 0:
        raise EmptyResultError(
            "no tile kept in any scene:\n" + summary.table() + "\nwiden mask.seaward_km / "
            "mask.inland_km, lower tiling.min_mask_fraction, or check the scenes lie on the coast"
        )
    catalog.write(table, infos, uri, config.storage)
    stats = compute_stats(table, infos, config)
    storage.write_text(workspace.stats_uri(config), stats.to_json(), config.storage)
    storage.write_text(
        workspace.scenes_uri(config),
        json.dumps([i.to_dict() for i in infos.values()], indent=2),
        config.storage,
    )
    storage.write_text(workspace.config_uri(config), config.to_yaml(), config.storage)
    summary.seconds = time.perf_counter() - start
    storage.write_text(workspace.tiles_summary_uri(config), summary.to_json(), config.storage)
    log.info(
        "%s\ncatalog: %s\nstats:   %s\npreviews: %s/<scene_id>.png",
        summary.table(),
        uri,
        workspace.stats_uri(config),
        workspace.previews_uri(config),
    )
    return uri


def _reraise(error: str, scene_id: str, uri: str) -> AntsslError:
    kind, _, msg = error.partition(": ")
    hint = " (set scenes.on_bad_scene: skip to skip bad scenes)"
    if kind in ("SceneReadError", "StorageError", "FileNotFoundError", "OSError"):
        return SceneReadError(msg + hint)
    if kind == "MaskError":
        return MaskError(msg)
    return SceneError(msg + hint)


def keep_previous_order(config: Config, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Scenes already in the workspace's catalog first, in their old order, then new ones.

    So adding scenes (scale-out) appends rows to the catalog and earlier tile
    indices stay valid for the embeddings store. Also when the mask or tiling
    settings changed (the embed stage compares the tile ids themselves), so a
    workspace copied elsewhere, with its scenes and coastline moved to new URIs,
    still appends.
    """
    marker = workspace.tiles_summary_uri(config)
    if not storage.exists(marker, config.storage):
        return pairs
    done = json.loads(storage.read_text(marker, config.storage))
    before = [s["scene_id"] for s in done.get("scenes", []) if not s.get("error")]
    rank = {sid: i for i, sid in enumerate(before)}
    return sorted(pairs, key=lambda p: (rank.get(p[0], len(rank)), pairs.index(p)))
