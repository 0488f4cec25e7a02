"""Scene discovery leaves out label and mask rasters beside the scenes (scenes.exclude), and
a band-count mismatch names the odd files and the option that leaves them out."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from antssl import scenes
from antssl.config import parse_config
from antssl.demo import sample_config
from antssl.errors import ConfigError


def _folder(sample, root: Path) -> Path:
    """Two scenes (3 bands) beside their label rasters, a mask and a label raster named as
    evaluate.labels names them (all 1 band), as an archive often holds them."""
    root.mkdir()
    for i, scene in enumerate(sample.scenes):
        shutil.copy(scene, root / scene.name)
        shutil.copy(sample.labels[i], root / sample.labels[i].name)  # scene_00i_labels.tif
    shutil.copy(sample.mask, root / "scene_000_MASK.tif")  # case differs
    shutil.copy(sample.labels[0], root / "scene_000_classes.tif")
    return root


def _config(sample, folder: Path, **scenes_over):
    data = sample_config(sample.root, folder / "ws")
    data["scenes"] = {"glob": f"file://{folder}/*.tif", **scenes_over}
    data.setdefault("evaluate", {})["labels"] = "{scene_id}_classes.tif"
    return parse_config(data)


def _infos(cfg) -> dict[str, scenes.SceneInfo]:
    return {sid: scenes.read_info(sid, uri, cfg) for sid, uri in scenes.discover(cfg)}


def test_glob_leaves_out_label_and_mask_rasters_and_says_how_many(
    sample, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(sample, tmp_path / "archive")
    cfg = _config(sample, folder)
    with caplog.at_level(logging.INFO, logger="antssl"):
        found = scenes.discover(cfg)
    assert [sid for sid, _ in found] == ["scene_000", "scene_001"]
    (line,) = [r.getMessage() for r in caplog.records if "scenes.exclude" in r.getMessage()]
    assert "left out 4 raster(s)" in line and "scene_000_labels.tif" in line
    scenes.check_bands(_infos(cfg))  # one band count: no error


def test_band_count_error_names_the_odd_files_and_scenes_exclude(sample, tmp_path: Path) -> None:
    folder = _folder(sample, tmp_path / "archive")
    cfg = _config(sample, folder, exclude=[])
    infos = _infos(cfg)
    # scenes.exclude emptied: only evaluate.labels' files (always labels) are left out.
    assert sorted(infos) == [
        "scene_000",
        "scene_000_MASK",
        "scene_000_labels",
        "scene_001",
        "scene_001_labels",
    ]
    with pytest.raises(ConfigError) as err:
        scenes.check_bands(infos)
    msg = str(err.value)
    # Each group lists its files with their URIs: "<n> band(s): id (uri), id (uri); ...".
    one = msg.split("1 band(s): ")[1].split(";")[0]
    three = msg.split("3 band(s): ")[1].split(". If")[0]
    for sid in ("scene_000_labels", "scene_001_labels", "scene_000_MASK"):
        assert f"{sid} (file://{folder}/{sid}.tif)" in one, msg
    for sid in ("scene_000", "scene_001"):
        assert f"{sid} (file://{folder}/{sid}.tif)" in three, msg
    assert "scenes.exclude" in msg and "scenes.bands" in msg


def test_exclude_leaves_nothing_is_a_config_error(sample, tmp_path: Path) -> None:
    folder = _folder(sample, tmp_path / "archive")
    cfg = _config(sample, folder, exclude=["*.tif"])
    with pytest.raises(ConfigError, match=r"outside scenes.exclude \['\*\.tif'"):
        scenes.discover(cfg)
