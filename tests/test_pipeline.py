"""The whole pipeline on the embedded default, then scale-out with a second batch of scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from antssl import catalog, store, workspace
from antssl.cli import main
from antssl.config import TrainConfig, load_config
from antssl.demo import sample_config
from antssl.errors import ConfigError, StorageError
from antssl.stages import cluster, embed

pytestmark = pytest.mark.usefixtures("ray_local")

FAST = {
    "train": {
        "width": 8,
        "depth": 1,
        "embed_dim": 16,
        "proj_dim": 16,
        "steps": 6,
        "warmup_steps": 1,
        "batch_size": 16,
        "checkpoint_every": 6,
        "num_workers": 1,
        "cpus_per_worker": 0.5,
    },
    "embed": {"chunk_rows": 64, "batch_size": 64, "cpus_per_actor": 0.5},
    "cluster": {"k": 3, "batch_size": 128, "max_iter": 20, "num_actors": 1},
}


def test_pipeline_then_scale_out(tmp_path: Path, capsys, monkeypatch) -> None:
    from antssl.sample import write_sample_data

    data = write_sample_data(tmp_path / "sample", n_scenes=2, size=384)
    cfg_path = tmp_path / "config.yaml"
    # a workspace relative to where the command runs, as configs/moa.yaml has it: Ray
    # Train's workers run in their own directories and must still write it here
    monkeypatch.chdir(tmp_path)
    relative = {**sample_config(data.root, tmp_path / "ws"), "workspace": "ws", **FAST}
    cfg_path.write_text(yaml.safe_dump(relative))
    assert main(["pipeline", "--config", str(cfg_path)]) == 0
    out = "".join(capsys.readouterr())  # the summary on stdout, progress (logging) on stderr
    assert "pipeline: done" in out and "embeddings.zarr" in out
    # pretrain and embed read the tile cache the pipeline wrote, not the scenes
    assert "pretrain: reading tiles from the cache" in out
    assert "embed: reading tiles from the cache" in out
    ws = tmp_path / "ws"
    for name in (
        "tiles.parquet",
        "stats.json",
        "checkpoints/latest.json",
        "maps/overview.png",
        "maps/gallery.png",
        "maps/scene_000.tif",
        "maps/scene_001.png",
        "maps/clusters.json",
    ):
        assert (ws / name).exists(), name
    latest = json.loads((ws / "checkpoints/latest.json").read_text())
    assert (ws / latest["checkpoint"] / "meta.json").exists()  # the checkpoint itself
    cfg = load_config(cfg_path)
    group = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)
    labels = group["cluster"][:]
    n1 = len(labels)
    # the default embedding: each tile's softmax over the default 32 learned prototypes
    dim = group["embedding"].shape[1]
    assert dim == TrainConfig().prototypes == 32
    rows = group["embedding"][:]
    assert (rows >= 0).all()
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-4)
    assert (labels >= 0).all() and group["centroids"].shape == (3, dim)
    # the cluster map: scene CRS, one pixel per stride, value = the tile's cluster
    cat = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    with rasterio.open(ws / "maps" / "scene_000.tif") as m, rasterio.open(data.scenes[0]) as s:
        assert m.crs == s.crs and m.res == (s.res[0] * 32, s.res[1] * 32)
        grid = m.read(1)
        sub = cat[cat["scene_id"] == "scene_000"]
        np.testing.assert_array_equal(
            grid[sub["row"] // 32, sub["col"] // 32], labels[sub.index.to_numpy()]
        )
    # re-running finished stages does nothing
    assert main(["pipeline", "--config", str(cfg_path)]) == 0
    out = "".join(capsys.readouterr())
    assert "nothing to do" in out and "keeping it" in out
    # every stage on its own: done, it leaves its output alone; --force writes it again
    _each_stage_skips_when_done_and_reruns_when_forced(cfg_path, ws)
    capsys.readouterr()
    labels = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)["cluster"][:]
    # scale out: a second batch of scenes along the same coast
    write_sample_data(tmp_path / "sample", n_scenes=2, size=384, first_scene=2)
    assert main(["pipeline", "--config", str(cfg_path)]) == 0
    out = "".join(capsys.readouterr())
    assert "appending the new rows" in out and "assigned" in out
    assert "cache: catalog grew" in out  # the cache took the new scenes' tiles too
    group = store.open_group(workspace.embeddings_uri(cfg), cfg.storage)
    labels2 = group["cluster"][:]
    cat2 = catalog.read(workspace.catalog_uri(cfg), cfg.storage)
    assert len(labels2) == len(cat2) > n1
    assert set(cat2["scene_id"].iloc[n1:]) == {"scene_002", "scene_003"}
    np.testing.assert_array_equal(labels2[:n1], labels)  # old tiles keep their clusters
    assert (labels2 >= 0).all()
    summary = json.loads((ws / "maps" / "clusters.json").read_text())
    assert summary["tiles"] == len(cat2) and (ws / "maps" / "scene_003.tif").exists()
    _store_reads_as_a_labelled_xarray_dataset(ws / "embeddings.zarr", cat2, labels2)
    # another clustering setting is refused unless asked to overwrite
    other = load_config(cfg_path, {"cluster": {"k": 4}})
    with pytest.raises(ConfigError, match=r"cluster\.overwrite"):
        cluster.run(other)
    # an unreachable workspace is named
    bad = load_config(
        cfg_path,
        {
            "workspace": "s3://no-such-bucket-antssl/ws",
            "storage": {"endpoint_url": "http://127.0.0.1:9", "max_retries": 0},
        },
    )
    with pytest.raises(StorageError, match="no-such-bucket-antssl"):
        embed.run(bad)


# The file each stage writes last (its completion marker, or an output only it rewrites).
MARKERS = {
    "tiles": "tiles.json",
    "cache": "tiles.zarr/zarr.json",
    "pretrain": "checkpoints/latest.json",
    "embed": "embeddings.zarr/embedding/zarr.json",
    "cluster": "embeddings.zarr/centroids/zarr.json",
    "maps": "maps/clusters.json",
    "index": "index/manifest.json",
}


def _each_stage_skips_when_done_and_reruns_when_forced(cfg_path: Path, ws: Path) -> None:
    from antssl.stages import PIPELINE

    assert [s.name for s in PIPELINE] == list(MARKERS)

    def stamps() -> dict[str, int | None]:
        return {
            s: (ws / f).stat().st_mtime_ns if (ws / f).exists() else None
            for s, f in MARKERS.items()
        }

    before = stamps()
    assert None not in before.values()
    for stage in PIPELINE:  # done: each stage leaves its output alone
        assert main([stage.name, "--config", str(cfg_path)]) == 0, stage.name
    assert stamps() == before
    for stage in PIPELINE:  # --force: each stage writes its output again
        assert main([stage.name, "--config", str(cfg_path), "--force"]) == 0, stage.name
        now = stamps()
        assert now[stage.name] is not None and now[stage.name] != before[stage.name], stage.name
        before = now


def _store_reads_as_a_labelled_xarray_dataset(path: Path, cat, labels: np.ndarray) -> None:
    """Consolidated metadata, per-tile coordinates (also for appended rows), no dimension
    shared by the per-tile labels and the centroids."""
    import warnings

    import xarray as xr

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(path)  # consolidated=None: warns when there is none to read
    assert not [w for w in caught if "consolidated" in str(w.message).lower()], caught
    assert ds.embedding.dims == ("tile", "feature") and ds.cluster.dims == ("tile",)
    assert {"tile_id", "x", "y", "lon", "lat"} <= set(ds.coords)
    assert ds.centroids.dims == ("centroid", "feature")
    assert ds.tile_id.values.tolist() == cat["tile_id"].tolist()
    np.testing.assert_allclose(ds.lon.values, cat["lon"].to_numpy())
    np.testing.assert_allclose(ds.y.values, cat["y"].to_numpy())
    np.testing.assert_array_equal(ds.cluster.values, labels)
    one = ds.sel(tile=int(np.flatnonzero(cat["scene_id"].to_numpy() == "scene_003")[0]))
    assert str(one.tile_id.values).startswith("scene_003/")
