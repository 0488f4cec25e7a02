"""The scene shortcut in `antssl evaluate`: same-scene rate beside chance, the warning, and a
linear probe fitted on scenes outside the scored set (``evaluate.probe_fit_scenes``).

The stage runs end to end without Ray: a randomly initialised checkpoint directory
(``evaluate.checkpoint``) on generated sample scenes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from antssl import storage
from antssl.config import EvaluateConfig, TrainConfig, parse_config
from antssl.errors import ConfigError
from antssl.evaluate import EvaluationError
from antssl.evaluate.features import Method
from antssl.evaluate.metrics import linear_probe
from antssl.evaluate.scoring import (
    probe_figures,
    probe_split,
    retrieval_figures,
    scene_shortcuts,
)
from antssl.evaluate.tileset import EvalTiles, load_tiles
from antssl.ssl import build_model, model_spec, save_checkpoint
from antssl.stages.evaluate import eval_uri, run


def eval_tiles(label: np.ndarray, scene: np.ndarray) -> EvalTiles:
    return EvalTiles.from_arrays(label, scene)


def planted(n: int = 150, d: int = 6, scene_shift: float = 2.0, seed: int = 0):
    """Features = class signal + a per-scene offset; scenes of unequal size."""
    rng = np.random.default_rng(seed)
    scene = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1])
    label = rng.integers(0, 3, n)
    offsets = {s: rng.normal(0, 1, d) for s in "abcd"}
    x = rng.normal(0, 1, (n, d)) + 1.5 * np.eye(d)[label]
    x += scene_shift * np.stack([offsets[s] for s in scene])
    return x.astype(np.float32), label, scene


def direct_same_scene(x: np.ndarray, scene: np.ndarray, k: int) -> tuple[float, float]:
    """Brute force: share of each tile's k cosine neighbours (self excluded) in its scene,
    and chance = the share of its scene among the other n - 1 tiles, averaged over tiles."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = u @ u.T
    np.fill_diagonal(s, -np.inf)
    rates, chances = [], []
    for i in range(len(x)):
        nb = np.argsort(-s[i], kind="stable")[:k]
        rates.append(np.mean(scene[nb] == scene[i]))
        others = np.delete(scene, i)
        chances.append(np.mean(others == scene[i]))
    return float(np.mean(rates)), float(np.mean(chances))


@pytest.mark.parametrize("shift", [0.0, 3.0])
def test_same_scene_rate_and_chance_rows_match_a_direct_computation(shift: float) -> None:
    x, y, scene = planted(scene_shift=shift)
    fig = retrieval_figures(Method("m", x, "cosine"), eval_tiles(y, scene), EvaluateConfig(), None)
    rate, chance = direct_same_scene(x.astype(np.float64), scene, 10)
    assert fig["same-scene rate@10"][0] == pytest.approx(rate, abs=1e-12)
    assert fig["same-scene chance@10"][0] == pytest.approx(chance, abs=1e-12)
    assert f"{rate / chance:.1f}x chance" in fig["same-scene rate@10"][1]
    if shift:
        assert rate > 2 * chance  # planted scene offsets dominate the neighbours
    else:
        assert rate < 2 * chance


def test_scene_shortcuts_warn_only_above_the_factor() -> None:
    results = {
        "encoder": {"same-scene rate@10": (0.97, ""), "same-scene chance@10": (0.17, "")},
        "texture": {"same-scene rate@10": (0.30, ""), "same-scene chance@10": (0.17, "")},
        "edge": {"same-scene rate@10": (0.34, ""), "same-scene chance@10": (0.17, "")},
        "failed": {"same-scene rate@10": (float("nan"), "not computed")},
    }
    lines = scene_shortcuts(results, 10, 2.0)
    assert len(lines) == 1 and lines[0].startswith("encoder: same-scene rate@10 0.970 is 5.7x")
    assert [w.split(":")[0] for w in scene_shortcuts(results, 10, 1.5)] == [
        "encoder",
        "texture",
        "edge",
    ]


def test_probe_fitted_on_other_scenes_is_scored_on_every_scored_tile() -> None:
    x, y, scene = planted(scene_shift=0.5)
    xf, yf, sf = planted(n=120, scene_shift=0.5, seed=1)
    tiles, fit = eval_tiles(y, scene), eval_tiles(yf, np.char.add("fit_", sf.astype(str)))
    split = probe_split(tiles, seed=0, fit=fit)
    assert not split.train.any() and split.test.all() and "probe_fit_scenes" in split.how
    got = probe_figures(Method("m", x, "cosine", x_fit=xf), tiles, split, 0, None)
    want = linear_probe(xf, yf, x, y, groups_train=fit.scene_id, seed=0)
    assert got["probe balanced acc"][0] == pytest.approx(want.balanced_accuracy, abs=1e-12)
    assert got["probe AUC"][0] == pytest.approx(want.auc, abs=1e-12)
    assert f"test={'+'.join(str(int((y == c).sum())) for c in range(3))}" in got["probe AUC"][1]
    missing = probe_figures(Method("m", x, "cosine"), tiles, split, 0, None)
    assert np.isnan(missing["probe AUC"][0]) and "probe_fit_scenes" in missing["probe AUC"][1]


def test_probe_fit_scenes_and_probe_train_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="not both"):
        parse_config({"evaluate": {"probe_train": ["a*"], "probe_fit_scenes": {"glob": "x/*"}}})
    with pytest.raises(ConfigError, match="same_scene_warn"):
        parse_config({"evaluate": {"same_scene_warn": 1.0}})


# ------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Scored scenes, probe-fit scenes (further along the coast) and a random checkpoint."""
    from antssl.sample import write_sample_data

    root = tmp_path_factory.mktemp("shortcut")
    scored = write_sample_data(root / "scored", n_scenes=2, size=256)
    fitset = write_sample_data(root / "fit", n_scenes=2, size=256, first_scene=2)
    t = TrainConfig(width=8, depth=1, embed_dim=16, proj_dim=16, num_workers=1)
    torch.manual_seed(0)
    model = build_model(t, 3)
    stats = {"bands": [1, 2, 3], "mean": [3000.0] * 3, "std": [2500.0] * 3,
             "min": [1.0] * 3, "max": [10000.0] * 3, "pixels": 1, "tiles": 1}  # fmt: skip
    ckpt = save_checkpoint(root / "ckpt", model, model_spec(t, 3), stats, step=0)
    return {"root": root, "scored": scored.root, "fit": fitset.root, "ckpt": ckpt}


def _config(two_sets: dict, ws: Path, **evaluate) -> dict:
    return {
        "workspace": f"file://{ws}",
        "scenes": {"glob": f"{two_sets['scored']}/scene_*[0-9].tif"},
        "mask": {"kind": "none"},
        "tiling": {"size": 64, "stride": 64, "max_nodata_fraction": 0.1},
        "evaluate": {
            "labels": "{scene_id}_labels.tif",
            "ignore": 0,
            "checkpoint": f"file://{two_sets['ckpt']}",
            "kmeans_k": [2],
            "kmeans_restarts": 2,
            "min_purity": 0.5,
            "baselines": ["intensity_stats", "mean_brightness"],
            **evaluate,
        },
    }


def test_stage_fits_the_probe_on_other_scenes_and_warns_on_the_shortcut(
    two_sets: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fit_glob = {"glob": f"{two_sets['fit']}/scene_*[0-9].tif"}
    cfg = parse_config(_config(two_sets, tmp_path / "ws", probe_fit_scenes=fit_glob))
    with caplog.at_level(logging.INFO, logger="antssl"):
        out = run(cfg)
    printed = caplog.text  # progress lines are logged (antssl logger, INFO)
    assert "[1/3] encoder" in printed and "[3/3] scored mean_brightness" in printed
    ev = storage.local_path(out)
    doc = json.loads((ev / "metrics.json").read_text())
    report = (ev / "report.md").read_text()
    assert "probe_fit_scenes" in doc["info"]["probe_split"]
    assert "scene_002" in doc["info"]["probe_split"] and "scene_003" in doc["info"]["probe_split"]
    assert "(probe_fit_scenes)" in report

    # The probe's figures: fitted on the fit scenes' tiles, scored on every scored tile.
    scored = load_tiles(cfg, "{scene_id}_labels.tif")
    fit = load_tiles(cfg, "{scene_id}_labels.tif", cfg.evaluate.probe_fit_scenes)
    assert set(scored.scene_id) == {"scene_000", "scene_001"}
    from antssl.evaluate.baselines import intensity_stats
    from antssl.evaluate.features import zscore

    both = intensity_stats(np.concatenate([scored.pixels, fit.pixels]))
    z = zscore(both, np.arange(len(scored)))  # z-score fitted on the scored tiles only
    n = len(scored)
    want = linear_probe(z[n:], fit.label, z[:n], scored.label, groups_train=fit.scene_id)
    got = doc["methods"]["intensity_stats"]["probe balanced acc"]["value"]
    assert got == pytest.approx(want.balanced_accuracy, abs=1e-6)
    # retrieval is the same as without the probe-fit scenes
    plain = parse_config(_config(two_sets, tmp_path / "ws2"))
    doc2 = json.loads((storage.local_path(run(plain)) / "metrics.json").read_text())
    for m in ("encoder", "intensity_stats", "mean_brightness"):
        for row in ("P@10 balanced", "same-scene rate@10", "k=2 NMI"):
            assert doc["methods"][m][row]["value"] == pytest.approx(
                doc2["methods"][m][row]["value"], abs=1e-9
            ), (m, row)

    # The warning: exactly the methods above 2x chance, in the log, report.md and metrics.json.
    over = []
    for m, figs in doc["methods"].items():
        rate, chance = figs["same-scene rate@10"]["value"], figs["same-scene chance@10"]["value"]
        assert 0 < chance < 1 and "chance" in figs["same-scene rate@10"]["counts"]
        if rate > 2 * chance:
            over.append(m)
    assert [w.split(":")[0] for w in doc["warnings"]] == over
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for m in over:
        assert any(f"evaluate: {m}: same-scene rate@10" in line for line in logged)
        assert f"**WARNING** {m}: same-scene rate@10" in report
    assert ("## Warnings" in report) == bool(over)
    # a lower threshold warns about every method whose rate is above chance at all
    low = parse_config(_config(two_sets, tmp_path / "ws3", same_scene_warn=1.0001))
    doc3 = json.loads((storage.local_path(run(low)) / "metrics.json").read_text())
    assert len(doc3["warnings"]) >= len(over)


def test_stage_refuses_probe_fit_scenes_that_are_scored(two_sets: dict, tmp_path: Path) -> None:
    same = {"glob": f"{two_sets['scored']}/scene_000.tif"}
    cfg = parse_config(_config(two_sets, tmp_path / "ws", probe_fit_scenes=same))
    with pytest.raises(EvaluationError, match="scene_000"):
        run(cfg)
    assert not storage.exists(storage.join(eval_uri(cfg), "report.md"), cfg.storage)


# ------------------------------------------------- the scored tiles' own tiling


def test_evaluate_tiling_scores_nodata_free_tiles_of_an_encoder_pretrained_on_more(
    two_sets: dict, tmp_path: Path
) -> None:
    """``evaluate.tiling`` replaces keys of the top-level tiling for the scored tiles only
    (e.g. pretraining on tiles up to half nodata, scoring nodata-free ones as the MOA
    protocol asks); the keys not given are inherited, and the report names what was
    scored."""
    import rasterio

    holes = tmp_path / "holes"
    holes.mkdir()
    for name in ("scene_000_labels.tif", "scene_001.tif", "scene_001_labels.tif"):
        (holes / name).write_bytes((two_sets["scored"] / name).read_bytes())
    with rasterio.open(two_sets["scored"] / "scene_000.tif") as src:  # + an ice front:
        img, profile = src.read(), {**src.profile, "driver": "GTiff"}  # a nodata corner
    img[:, :100, :100] = 0
    with rasterio.open(holes / "scene_000.tif", "w", **profile) as ds:
        ds.write(img)
    base = _config(two_sets, tmp_path / "ws")
    base["scenes"] = {"glob": f"{holes}/scene_*[0-9].tif"}
    base["tiling"] = {"size": 64, "stride": 32, "max_nodata_fraction": 0.5}
    labels = "{scene_id}_labels.tif"
    loose = load_tiles(parse_config(base), labels)
    assert (~loose.valid).any(axis=(1, 2)).any()  # tiles with some nodata are kept at 0.5
    strict_cfg = parse_config({**base, "evaluate": {**base["evaluate"], "tiling": {
        "max_nodata_fraction": 0}}})  # fmt: skip
    strict = load_tiles(strict_cfg, labels)
    assert len(strict) and not (~strict.valid).any()
    assert set(strict.tile_id) < set(loose.tile_id)
    # the same tiles as a top-level tiling that says 0: size and stride were inherited
    same = load_tiles(
        parse_config({**base, "tiling": {**base["tiling"], "max_nodata_fraction": 0}}), labels
    )
    assert strict.tile_id.tolist() == same.tile_id.tolist()
    doc = json.loads((storage.local_path(run(strict_cfg)) / "metrics.json").read_text())
    assert doc["info"]["tiling"] == "64 px, stride 32, max nodata fraction 0.0"
    assert doc["info"]["tiles_with_nodata"] == 0 and doc["info"]["tiles"] == len(strict)


@pytest.mark.parametrize(
    ("tiling", "fragment"),
    [
        ({"max_nodata": 0}, "evaluate.tiling has no key 'max_nodata'"),
        ({"max_nodata_fraction": 2}, r"evaluate.tiling \{'max_nodata_fraction': 2\}"),
        ({"stride": 512}, r"tiling.stride \(512\) must be <= tiling.size \(64\)"),
    ],
)
def test_bad_evaluate_tiling_is_named_when_the_config_is_read(tiling: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_config({"tiling": {"size": 64}, "evaluate": {"tiling": tiling}})
