"""`antssl evaluate` end to end on the sample scenes and their label rasters.

One tiny pretrained workspace (local) is shared by the module. The report is checked
against the pure core called directly on the same tiles and features.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from antssl import catalog, encoder, storage, workspace
from antssl.cli import main
from antssl.config import Config, load_config, parse_config
from antssl.demo import sample_config
from antssl.encoder import resolve_ref
from antssl.errors import ConfigError, SceneReadError
from antssl.evaluate import EvaluationError
from antssl.evaluate.baselines import mean_brightness
from antssl.evaluate.features import embed, model_input
from antssl.evaluate.labels import binary_labels, cut_windows, majority_labels
from antssl.evaluate.metrics import linear_probe
from antssl.evaluate.retrieval import retrieval_precision
from antssl.evaluate.tileset import label_uri, load_tiles, matches
from antssl.sample import CLASSES
from antssl.stages import pretrain, tiles
from antssl.stages.evaluate import FILES, eval_uri, run
from tests.conftest import TINY_TRAIN, s3_sample_config

pytestmark = pytest.mark.usefixtures("ray_local")

TRAIN = TINY_TRAIN
FAST_EVAL = {"kmeans_k": [2, 4], "baselines": ["intensity_stats", "mean_brightness"]}


@pytest.fixture(scope="module")
def trained(sample, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The sample scenes, their tile catalog and a tiny checkpoint in a local workspace."""
    root = tmp_path_factory.mktemp("eval")
    data = {**sample_config(sample.root, root / "ws"), "train": TRAIN}
    cfg = parse_config(data)
    tiles.run(cfg)
    pretrain.run(cfg)
    return {"data": data, "root": root}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _with(trained: dict, ws: Path, **evaluate) -> dict:
    """The trained config with another workspace (reading the trained checkpoint)."""
    data = json.loads(json.dumps(trained["data"]))  # deep copy
    data["workspace"] = f"file://{ws}"
    data["evaluate"] = {**data["evaluate"], **FAST_EVAL, **evaluate}
    data["evaluate"]["checkpoint"] = trained["data"]["workspace"]
    return data


def test_evaluate_command_end_to_end(trained: dict, tmp_path: Path, capsys) -> None:
    cfg_path = _write(tmp_path / "c.yaml", trained["data"])
    assert main(["evaluate", "--config", str(cfg_path)]) == 0
    out = "".join(capsys.readouterr())  # progress and the table are log lines (stderr)
    assert "evaluate: scene_000:" in out and "| metric | encoder |" in out
    cfg = load_config(cfg_path)
    ev = storage.local_path(eval_uri(cfg))
    assert sorted(p.name for p in ev.iterdir()) == sorted(FILES)
    methods = ["encoder", "pca_pixels", "intensity_stats", "texture"]
    methods += ["random_backbone", "mean_brightness"]
    report = (ev / "report.md").read_text()
    assert "| metric | " + " | ".join(methods) + " |" in report
    k_classes = len(CLASSES) - 1  # the sample config scores k = number of surface types
    assert "P@10 balanced" in report and f"k={k_classes} NMI" in report
    assert "probe balanced acc" in report
    assert "neighbours from the query's own scene left out" in report
    for png in ("projection.png", "queries.png"):
        assert (ev / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((ev / "metrics.json").read_text())
    assert list(doc["methods"]) == methods
    assert doc["info"]["step"] == TRAIN["steps"] and doc["info"]["tiles"] > 20
    for figures in doc["methods"].values():
        for name, cell in figures.items():
            v = cell["value"]
            assert cell["counts"], name
            if v is None:
                continue
            lo = -1.0 if "ARI" in name else 0.0
            assert lo <= v <= 1.0, (name, v)
        assert figures["P@10 balanced"]["value"] is not None
        assert "q=" in figures["P@10 balanced"]["counts"]

    # The same numbers from the pure core, called directly on the same tiles.
    t = load_tiles(cfg, cfg.evaluate.labels)
    assert len(t) == doc["info"]["tiles"]
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    assert set(t.tile_id) <= set(cat["tile_id"])  # same tiling and mask as the workspace
    model, meta = encoder.load_encoder(cfg)
    x = embed(model, model_input(t, meta))
    direct = retrieval_precision(x, t.label, 10, group=t.scene_id)
    got = doc["methods"]["encoder"]
    assert got["P@10 balanced"]["value"] == pytest.approx(direct.balanced, abs=1e-9)
    b = retrieval_precision(mean_brightness(t.pixels), t.label, 10, group=t.scene_id,
                            metric="euclidean")  # fmt: skip
    assert doc["methods"]["mean_brightness"]["P@10 balanced"]["value"] == pytest.approx(b.balanced)
    train_scene = doc["info"]["probe_split"].rsplit(": ", 1)[1]
    tr = t.scene_id == train_scene
    probe = linear_probe(x[tr], t.label[tr], x[~tr], t.label[~tr], seed=0)
    bal = got["probe balanced acc"]["value"]
    assert bal == pytest.approx(probe.balanced_accuracy, abs=1e-9)
    # Labels: the majority class of the label raster's window, purity >= 0.6.
    sid = t.scene_id[0]
    rows = t.tile_id[t.scene_id == sid]
    r = np.array([int(s.split("/")[1]) for s in rows])
    c = np.array([int(s.split("/")[2]) for s in rows])
    with rasterio.open(label_uri(cfg.evaluate.labels, sid, t.infos[sid].uri)[7:]) as ds:
        raster = ds.read(1)
    expect = majority_labels(cut_windows(raster, r, c, 64), ignore=0, min_purity=0.6)
    assert np.array_equal(expect.label, t.label[t.scene_id == sid])

    # Re-running is a no-op that prints the stored table; --force recomputes.
    stamp = (ev / "report.md").stat().st_mtime_ns
    assert main(["evaluate", "--config", str(cfg_path)]) == 0
    out = "".join(capsys.readouterr())
    assert "skipping" in out and "| metric | encoder |" in out
    assert (ev / "report.md").stat().st_mtime_ns == stamp


def _sea_ice_masks(sample, folder: Path) -> None:
    """Binary 0/255 masks of the sample's sea ice, on each scene's grid."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in sample.labels:
        with rasterio.open(p) as ds:
            prof, lab = ds.profile, ds.read(1)
        sid = p.name.replace("_labels.tif", "")
        with rasterio.open(folder / f"{sid}_mask.tif", "w", **prof) as out:
            out.write(np.where(lab == 2, 255, 0).astype(np.uint8), 1)


def test_binary_masks_checkpoint_dir_and_s3_workspace(
    trained: dict, sample, s3_endpoint: str, tmp_path: Path, capsys
) -> None:
    _sea_ice_masks(sample, tmp_path / "masks")
    latest = json.loads(
        (Path(trained["data"]["workspace"][7:]) / "checkpoints/latest.json").read_text()
    )
    data, bucket = s3_sample_config(sample, s3_endpoint)
    data["evaluate"] = {
        "labels": f"{tmp_path}/masks/{{scene_id}}_mask.tif",
        "label_kind": "binary",
        "class_names": {0: "other", 1: "sea_ice"},
        # a checkpoint directory, not a workspace (latest.json names it relative to its own)
        "checkpoint": resolve_ref(latest["checkpoint"], trained["data"]["workspace"]),
        "probe_train": ["scene_000"],
        **FAST_EVAL,
    }
    cfg = parse_config(data)
    uri = run(cfg)
    assert uri == f"s3://{bucket}/ws/eval"
    for name in FILES:
        assert storage.exists(storage.join(uri, name), cfg.storage), name
    doc = json.loads(storage.read_text(storage.join(uri, "metrics.json"), cfg.storage))
    assert doc["info"]["checkpoint_source"] == "checkpoint directory"
    assert doc["info"]["probe_split"] == "probe_train scenes: scene_000"
    assert "P@10 sea_ice" in doc["methods"]["encoder"]
    t = load_tiles(cfg, cfg.evaluate.labels)
    assert set(t.scene_id[t.probe_train]) == {"scene_000"}
    with rasterio.open(tmp_path / "masks/scene_000_mask.tif") as ds:
        mask = ds.read(1)
    sel = t.scene_id == "scene_000"
    r = np.array([int(s.split("/")[1]) for s in t.tile_id[sel]])
    c = np.array([int(s.split("/")[2]) for s in t.tile_id[sel]])
    expect = binary_labels(cut_windows(mask, r, c, 64), 0.05, 0.005)
    assert np.array_equal(expect.label, t.label[sel]) and (t.label >= 0).all()
    assert doc["info"]["classes"] == {
        n: int((t.label == v).sum())
        for v, n in ((0, "other"), (1, "sea_ice"))
        if (t.label == v).any()
    }


def test_bad_label_path_is_a_clear_error_and_writes_nothing(
    trained: dict, tmp_path: Path, capsys
) -> None:
    ws = tmp_path / "ws"
    cfg_path = _write(tmp_path / "c.yaml", _with(trained, ws))
    missing = str(tmp_path / "nowhere/{scene_id}_labels.tif")
    assert main(["evaluate", "--config", str(cfg_path), "--labels", missing]) == 2
    err = capsys.readouterr().err
    assert "label raster" in err and "nowhere/scene_000_labels.tif" in err and "--labels" in err
    assert not (ws / "eval").exists()
    with pytest.raises(SceneReadError):
        run(load_config(cfg_path, {"evaluate": {"labels": missing}}))


def test_label_raster_of_the_wrong_shape(trained: dict, sample, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "labels"
    folder.mkdir()
    for p in sample.labels:
        shutil.copy(p, folder / p.name)
    with rasterio.open(sample.labels[0]) as ds:
        prof, lab = ds.profile, ds.read(1)
    prof.update(height=lab.shape[0] - 10, blockxsize=None, blockysize=None, tiled=False)
    with rasterio.open(folder / sample.labels[0].name, "w", **prof) as out:
        out.write(lab[:-10], 1)
    ws = tmp_path / "ws"
    cfg_path = _write(tmp_path / "c.yaml", _with(trained, ws))
    template = str(folder / "{scene_id}_labels.tif")
    assert main(["evaluate", "--config", str(cfg_path), "--labels", template]) == 2
    err = capsys.readouterr().err
    assert "374x384" in err and "384x384" in err and "pixel grid" in err
    assert not (ws / "eval").exists()
    with pytest.raises(EvaluationError):
        run(load_config(cfg_path, {"evaluate": {"labels": template}}))


def test_no_labels_configured_is_a_config_error(trained: dict, tmp_path: Path) -> None:
    data = _with(trained, tmp_path / "ws")
    data["evaluate"].pop("labels")
    with pytest.raises(ConfigError, match=r"evaluate.labels is not set.*--labels"):
        run(parse_config(data))


# --- config and helpers (no Ray needed, but cheap) -----------------------------------------


@pytest.mark.parametrize(
    ("evaluate", "fragment"),
    [
        ({"labels": "labels.tif"}, "{scene_id}"),
        ({"label_kind": "multi"}, "evaluate.label_kind"),
        ({"positive_fraction": 0.001}, "evaluate.negative_fraction"),
        ({"kmeans_k": [1, 4]}, "evaluate.kmeans_k"),
        ({"baselines": ["sift"]}, "evaluate.baselines"),
        ({"precision_k": 0}, "evaluate.precision_k"),
        ({"probe_train": []}, "evaluate.probe_train"),
        ({"exclude_radius_km": -1}, "evaluate.exclude_radius_km"),
        ({"labls": "x"}, "evaluate.labls: unknown key"),
        ({"scenes": {"glb": "x"}}, "evaluate.scenes.glb"),
    ],
)
def test_bad_evaluate_values_name_the_key(evaluate: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"evaluate": evaluate})
    assert fragment in str(err.value)


def test_label_templates_and_probe_patterns() -> None:
    scene = "s3://b/data/train/fracture_1x6.tif"
    assert label_uri("{scene_id}_mask.tif", "fracture_1x6", scene) == (
        "s3://b/data/train/fracture_1x6_mask.tif"
    )
    assert label_uri("s3://l/{scene_id}.tif", "a", scene) == "s3://l/a.tif"
    assert label_uri("{scene_dir}/m/{scene_id}.tif", "a", scene) == "s3://b/data/train/m/a.tif"
    assert label_uri("/x/{scene_id}.tif", "a", scene) == "file:///x/a.tif"
    assert matches(["fracture_1*"], "fracture_1x6", scene)
    assert matches(["train/*"], "fracture_1x6", scene)
    assert not matches(["valid/*", "fracture_2*"], "fracture_1x6", scene)
    assert matches(["s3://b/*/train/*.tif"], "fracture_1x6", scene)


def test_evaluate_scenes_inherit_pixel_settings() -> None:
    from antssl.evaluate.tileset import scored_config

    cfg: Config = parse_config(
        {
            "scenes": {"glob": "/a/*.tif", "allow_no_crs": True, "nodata": 0, "bands": [1]},
            "evaluate": {"scenes": {"glob": "/b/*.tif", "nodata": 5}},
        }
    )
    s = scored_config(cfg).scenes
    assert s.glob == "/b/*.tif" and s.allow_no_crs and s.bands == [1] and s.nodata == 5
    assert scored_config(parse_config({"scenes": {"glob": "/a/*.tif"}})).scenes.glob == "/a/*.tif"
