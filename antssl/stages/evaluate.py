"""The evaluate stage: embedding quality against label rasters, written to ``<workspace>/eval/``.

``run(config, force=False) -> URI of the eval folder``. In one process, no Ray: the scored scenes'
tiles are planned, read and labelled (:mod:`antssl.evaluate.tileset`), embedded with the
checkpoint and described by the baselines (:mod:`antssl.evaluate.features`), and scored
(:mod:`antssl.evaluate.scoring`). Then, and only then, the folder is written through
:mod:`antssl.storage` (the workspace may be ``s3://``), each file atomically::

    eval/projection.png   PCA of the encoder's embeddings, coloured by label
    eval/queries.png      example queries and their other-scene answers (encoder)
    eval/metrics.json     every figure with its counts, run info, per-scene counts
    eval/report.md        run info and the metrics table (written last: the marker)

A run whose inputs (scenes, mask, tiling, evaluate section, checkpoint) match the
existing ``metrics.json`` is skipped unless forced.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from antssl import storage, workspace
from antssl.config import Config, scored_tiling
from antssl.encoder import relative_ref
from antssl.errors import ConfigError
from antssl.evaluate import EvaluationError, report
from antssl.evaluate.features import ENCODER, Checkpoint, compute_methods, load_model
from antssl.evaluate.features import resolve_checkpoint as _resolve
from antssl.evaluate.retrieval import nearest_neighbours
from antssl.evaluate.scoring import (
    Figures,
    ProbeSplit,
    probe_split,
    scene_shortcuts,
    score_method,
)
from antssl.evaluate.tileset import EvalTiles, load_tiles, scored_config
from antssl.ssl import SSLModel

FILES = ("projection.png", "queries.png", "metrics.json", "report.md")
log = logging.getLogger(__name__)


def eval_uri(config: Config) -> str:
    return workspace.path(config, "eval")


def _digest(config: Config, ckpt: Checkpoint) -> str:
    where = relative_ref(ckpt.uri, config.workspace)  # a copied workspace: the same checkpoint
    return f"{scored_config(config).digest('scenes', 'mask', 'tiling', 'evaluate')}:{where}"


def _existing(config: Config, digest: str) -> dict[str, Any] | None:
    uri = storage.join(eval_uri(config), "metrics.json")
    done = storage.join(eval_uri(config), "report.md")
    if not (storage.exists(uri, config.storage) and storage.exists(done, config.storage)):
        return None
    doc = json.loads(storage.read_text(uri, config.storage))
    return doc if doc.get("digest") == digest else None


def run(config: Config, force: bool = False) -> str:
    """Evaluate the checkpoint against the label rasters; returns the eval folder's URI."""
    ev = config.evaluate
    out = eval_uri(config)
    if ev.labels is None:
        raise ConfigError(
            "evaluate.labels is not set: give a label raster template with {scene_id} in the "
            "config or with --labels (e.g. '{scene_id}_labels.tif' next to the scenes)"
        )
    ckpt = _resolve(config)
    digest = _digest(config, ckpt)
    done = None if force else _existing(config, digest)
    if done is not None:
        log.info("evaluate: %s is complete for this config and checkpoint; skipping", out)
        log.info("%s", done["table"].rstrip("\n"))
        return out
    storage.check_writable(workspace.root(config), config.storage)
    start = time.perf_counter()
    log.info("evaluate: checkpoint %s; labels %s (%s)", ckpt.uri, ev.labels, ev.label_kind)
    model, meta, ckpt = load_model(ckpt, config)
    tiles = load_tiles(config, ev.labels)
    if ev.exclude_radius_km is not None and any(i.crs is None for i in tiles.infos.values()):
        raise ConfigError(
            "evaluate.exclude_radius_km needs georeferenced scenes (tile centres in metres); "
            "unset it to use the other-scene rule"
        )
    fit = _probe_fit_tiles(config, tiles)
    names = _names(config)
    split = probe_split(tiles, ev.seed, fit)
    log.info(
        f"evaluate: {len(tiles)} tiles from {len(tiles.infos)} scene(s), classes "
        f"{_named(tiles.class_counts(), names)}; probe: {split.how}"
    )
    methods = compute_methods(tiles, model, meta, config, fit)
    results: dict[str, Figures] = {}
    k = ev.precision_k
    for i, m in enumerate(methods, 1):
        t0 = time.perf_counter()
        results[m.name] = score_method(m, tiles, ev, split, names)
        rate = results[m.name].get(f"same-scene rate@{k}", (float("nan"), ""))[0]
        log.info(
            f"evaluate: [{i}/{len(methods)}] scored {m.name} in {time.perf_counter() - t0:.1f} s "
            f"(P@{k} balanced {results[m.name].get(f'P@{k} balanced', (float('nan'), ''))[0]:.3f}"
            f", same-scene rate@{k} {rate:.3f})"
        )
    shortcuts = scene_shortcuts(results, k, ev.same_scene_warn)
    table = report.metrics_table(results)
    info = _info(config, ckpt, tiles, split, names, time.perf_counter() - start)
    info["encoder"] = _describe_embedding(model)
    encoder = methods[0]
    pngs = {
        "projection.png": report.projection_png(
            encoder.x, tiles.label, names, title=f"encoder embeddings (step {ckpt.step})"
        ),
        "queries.png": _queries_png(encoder.x, tiles, config, names),
    }
    doc = {
        "digest": digest,
        "info": info,
        "methods": {m: {k: _jsonable(v) for k, v in f.items()} for m, f in results.items()},
        "scenes": [asdict(s) for s in tiles.scenes],
        "table": table,
        "warnings": shortcuts,
    }
    storage.remove(storage.join(out, "report.md"), config.storage)  # the marker goes first
    for name, png in pngs.items():
        storage.write_bytes(storage.join(out, name), png, config.storage)
    storage.write_text(storage.join(out, "metrics.json"), json.dumps(doc, indent=2), config.storage)
    storage.write_text(
        storage.join(out, "report.md"),
        _markdown(info, table, tiles, split, names, shortcuts),
        config.storage,
    )
    log.info("evaluate: done in %.0f s → %s/report.md", time.perf_counter() - start, out)
    log.info("%s", table.rstrip("\n"))
    for line in shortcuts:
        log.warning("evaluate: %s", line)
    return out


def _probe_fit_tiles(config: Config, tiles: EvalTiles) -> EvalTiles | None:
    """The ``evaluate.probe_fit_scenes`` tiles (None when unset); none may be scored too."""
    ev = config.evaluate
    if ev.probe_fit_scenes is None or ev.labels is None:
        return None
    fit = load_tiles(config, ev.labels, ev.probe_fit_scenes, role="probe_fit_scenes")
    scored = {storage.normalize_uri(i.uri) for i in tiles.infos.values()}
    both = sorted(sid for sid, i in fit.infos.items() if storage.normalize_uri(i.uri) in scored)
    if both:
        raise EvaluationError(
            f"evaluate.probe_fit_scenes includes scored scene(s) {', '.join(both)}: the probe "
            "must be fitted on scenes outside evaluate.scenes (or use evaluate.probe_train to "
            "split the scored scenes)"
        )
    return fit


def _names(config: Config) -> dict[int, str] | None:
    ev = config.evaluate
    if ev.class_names:
        return dict(ev.class_names)
    return {0: "negative", 1: "positive"} if ev.label_kind == "binary" else None


def _describe_embedding(model: SSLModel) -> str:
    """What the encoder's rows hold, for the report (learned values, appended descriptor,
    or the prototype probabilities)."""
    if model.embedding == "prototypes" and model.prototypes is not None:
        return (
            f"each tile's softmax over {model.prototypes.k} learned prototypes (T "
            f"{model.prototypes.temperature:g}; train.embedding: prototypes; random_backbone: "
            f"the same with random weights and prototypes)"
        )
    out = f"{model.learned_dim} learned values"
    if model.descriptor is not None:
        out += (
            f" + the texture descriptor, {model.descriptor.dim} values (train.descriptor; "
            f"random_backbone: the same with random weights)"
        )
    return out


def _named(counts: dict[int, int], names: dict[int, str] | None) -> dict[str, int]:
    return {(names or {}).get(c, str(c)): n for c, n in counts.items()}


def _jsonable(cell: tuple[float, str]) -> dict[str, Any]:
    v, counts = cell
    return {"value": None if v is None or math.isnan(v) else float(v), "counts": counts}


def _info(
    config: Config,
    ckpt: Checkpoint,
    tiles: EvalTiles,
    split: ProbeSplit,
    names: dict[int, str] | None,
    seconds: float,
) -> dict[str, Any]:
    ev, t = config.evaluate, scored_tiling(config)
    rule = (
        f"neighbours closer than {ev.exclude_radius_km} km left out"
        if ev.exclude_radius_km is not None
        else "neighbours from the query's own scene left out"
    )
    if ev.label_kind == "binary":
        labelling = (
            f"binary: positive when >= {ev.positive_fraction} of a tile is marked, negative "
            f"below {ev.negative_fraction}, left out in between"
            + ("; scenes with an empty mask left out" if ev.drop_empty_scenes else "")
        )
    else:
        labelling = f"classes: majority class, purity >= {ev.min_purity}, ignore {ev.ignore}"
    with_nodata = int((~tiles.valid).any(axis=(1, 2)).sum())
    return {
        "checkpoint": relative_ref(ckpt.uri, config.workspace),  # portable workspaces
        "checkpoint_source": ckpt.source,
        "step": ckpt.step,
        "labels": ev.labels,
        "labelling": labelling,
        "tiles": len(tiles),
        "labelled_tiles": tiles.labelled_total,
        "tiles_with_nodata": with_nodata,
        "classes": _named(tiles.class_counts(), names),
        "scenes": sorted(tiles.infos),
        "probe_split": split.how,
        "probe_train": _named(
            split.fit.class_counts() if split.fit is not None else tiles.class_counts(split.train),
            names,
        ),
        "probe_test": _named(tiles.class_counts(split.test), names),
        "retrieval": f"cosine (Euclidean for mean_brightness) precision@{ev.precision_k}; {rule}",
        "tiling": f"{t.size} px, stride {t.stride}, max nodata fraction {t.max_nodata_fraction}",
        "kmeans_k": list(ev.kmeans_k),
        "kmeans_restarts": ev.kmeans_restarts,
        "seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _markdown(
    info: dict[str, Any],
    table: str,
    tiles: EvalTiles,
    split: ProbeSplit,
    names: dict[int, str] | None,
    shortcuts: list[str] | None = None,
) -> str:
    lines = ["# Embedding evaluation", ""]
    lines += [f"- **{k.replace('_', ' ')}**: {v}" for k, v in info.items()]
    if shortcuts:
        lines += ["", "## Warnings", ""]
        lines += [f"- **WARNING** {line}" for line in shortcuts]
    lines += [
        "",
        "## Metrics",
        "",
        "Counts beside each figure (q: queries, nb: neighbours, "
        "n: tiles; test/train: probe rows per class).",
        "",
        table.rstrip(),
        "",
    ]
    lines += [
        "## Scenes",
        "",
        "| scene | planned | labelled | per class | probe | note |",
        "|---|---|---|---|---|---|",
    ]
    train = set(tiles.scene_id[split.train])
    for s in tiles.scenes:
        side = "train" if s.scene_id in train else "test" if s.scene_id in tiles.infos else ""
        per_class = _named(s.per_class, names)
        lines.append(
            f"| {s.scene_id} | {s.planned} | {s.labelled} | {per_class} | {side} | "
            f"{s.skipped or ''} |"
        )
    if split.fit is not None:
        for s in split.fit.scenes:
            side = "fit" if s.scene_id in split.fit.infos else ""
            lines.append(
                f"| {s.scene_id} (probe_fit_scenes) | {s.planned} | {s.labelled} | "
                f"{_named(s.per_class, names)} | {side} | {s.skipped or ''} |"
            )
    lines += ["", "![projection](projection.png)", "", "![queries](queries.png)", ""]
    return "\n".join(lines)


def _queries_png(
    x: np.ndarray, tiles: EvalTiles, config: Config, names: dict[int, str] | None
) -> bytes:
    """Up to ``evaluate.queries`` random queries per class and their top answers."""
    ev = config.evaluate
    rng = np.random.default_rng(ev.seed)
    rows: list[int] = []
    for c in np.unique(tiles.label):
        idx = np.flatnonzero(tiles.label == c)
        rows += sorted(rng.choice(idx, min(ev.queries, idx.size), replace=False).tolist())
    rows = rows[:10] or [0]
    k = min(ev.precision_k, 6)
    if ev.exclude_radius_km is not None:
        kw: dict[str, Any] = {"coords": tiles.xy, "min_distance": ev.exclude_radius_km * 1000}
    else:
        kw = {"group": tiles.scene_id}
    idx, score = nearest_neighbours(x, k, queries=np.array(rows), **kw)
    return report.query_strip_png(
        tiles.pixels,
        rows,
        idx,
        labels=tiles.label,
        group=tiles.scene_id,
        scores=score,
        names=names,
        title=f"{ENCODER}: queries (first column) and nearest tiles from elsewhere",
    )
