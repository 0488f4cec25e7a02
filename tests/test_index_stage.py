"""The index stage on a small generated store (file://, no Ray): build, manifest, idempotence,
auto/exact, errors. The s3:// workspace and the service using the index: tests/test_serve.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from antssl import store, workspace
from antssl.config import Config, parse_config
from antssl.errors import ConfigError, StageOrderError
from antssl.search import manifest
from antssl.search.manifest import store_version
from antssl.stages import index as index_stage

N, D, CHUNK = 3000, 16, 1024


def _config(ws: Path, **index) -> Config:
    return parse_config({"workspace": ws.as_uri(), "index": index})


def _store(cfg: Config, n: int = N, pending: bool = False) -> np.ndarray:
    """Clustered vectors (40 centres + noise) written as a complete embeddings store."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, D))
    emb = (centres[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, D))).astype(np.float32)
    emb[5] = 0.0  # a tile without a valid embedding
    uri = workspace.embeddings_uri(cfg)
    store.create(uri, cfg.storage, n, D, CHUNK, "float32", {"tile_ids_sha256": "x"})
    for c in range(store.n_chunks(n, CHUNK) - (1 if pending else 0)):
        store.write_chunk(uri, cfg.storage, c, emb[c * CHUNK : (c + 1) * CHUNK])
    return emb


def _files(ws: Path) -> list[str]:
    return sorted(p.name for p in (ws / "index").iterdir())


def test_ivf_index_manifest_recall_and_idempotence(tmp_path: Path, stage_log) -> None:
    cfg = _config(tmp_path, kind="ivf", nlist=32, target_recall=0.95, recall_queries=100)
    emb = _store(cfg)
    out = index_stage.run(cfg)
    assert out == workspace.index_uri(cfg) + "/manifest.json"
    m = manifest.read_manifest(cfg)
    assert m is not None and m["kind"] == "ivf" and (m["n"], m["dim"]) == (N, D)
    attrs = dict(store.open_group(workspace.embeddings_uri(cfg), cfg.storage).attrs)
    assert m["store_version"] == store_version(attrs)
    assert m["embeddings_version"] == manifest.embeddings_version(attrs)
    assert m["params"]["nlist"] == 32 and m["recall_at_10"] >= 0.95
    assert m["calibration"][str(m["params"]["nprobe"])] == m["recall_at_10"]
    assert _files(tmp_path) == sorted([m["file"], "manifest.json"])
    # the file is a working index over the normalised rows, searched at the calibrated nprobe
    nn = manifest.load_index(cfg, m)
    assert len(nn) == N and nn.params["nprobe"] == m["params"]["nprobe"]
    unit = manifest.unit_rows(emb)
    assert not unit[5].any() and np.allclose(np.linalg.norm(unit[6:], axis=1), 1, atol=1e-5)
    assert nn.search(unit[10], 1)[1][0, 0] == 10
    assert "recall@10" in stage_log.text
    # a second run keeps it; --force (or other settings) replaces it and removes the old file
    stage_log.clear()
    index_stage.run(cfg)
    assert "nothing to do" in stage_log.text
    assert manifest.read_manifest(cfg) == m
    index_stage.run(cfg, force=True)
    m2 = manifest.read_manifest(cfg)
    assert m2 is not None and m2["file"] != m["file"]
    assert _files(tmp_path) == sorted([m2["file"], "manifest.json"])
    fixed = _config(tmp_path, kind="ivf", nlist=32, nprobe=32, recall_queries=50)
    index_stage.run(fixed)
    m3 = manifest.read_manifest(fixed)
    assert m3 is not None and m3["params"]["nprobe"] == 32 and m3["recall_at_10"] == 1.0
    assert m3["calibration"] == {}


def test_hnsw_and_auto_below_min_rows(tmp_path: Path) -> None:
    cfg = _config(tmp_path, kind="hnsw", hnsw_m=8, ef_construction=40, recall_queries=50)
    _store(cfg, n=800)
    index_stage.run(cfg)
    m = manifest.read_manifest(cfg)
    assert m is not None and m["kind"] == "hnsw" and m["params"]["M"] == 8
    assert m["recall_at_10"] >= 0.97 and "ef_search" in m["params"]
    auto = _config(tmp_path, kind="auto", min_rows=801)
    index_stage.run(auto)
    m = manifest.read_manifest(auto)
    assert m is not None and m["kind"] == "exact" and m["file"] is None
    assert m["recall_at_10"] == 1.0 and _files(tmp_path) == ["manifest.json"]
    index_stage.run(_config(tmp_path, kind="auto", min_rows=800))
    assert manifest.read_manifest(auto)["kind"] == "ivf"  # type: ignore[index]


def test_errors_name_the_stage_to_run_and_the_bad_setting(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "a", kind="ivf")
    with pytest.raises(StageOrderError, match="antssl embed"):
        index_stage.run(cfg)
    _store(cfg, pending=True)
    with pytest.raises(StageOrderError, match=r"1 chunk\(s\) not embedded yet.*antssl embed"):
        index_stage.run(cfg)
    assert manifest.read_manifest(cfg) is None
    for bad, field in [
        ({"kind": "annoy"}, "index.kind"),
        ({"nprobe": 0}, "index.nprobe"),
        ({"target_recall": 1.5}, "index.target_recall"),
        ({"nlists": 4}, "nlists"),
    ]:
        with pytest.raises(ConfigError, match=field):
            _config(tmp_path, **bad)


def test_bad_manifest_is_a_clear_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "manifest.json").write_text("{half")
    with pytest.raises(Exception, match="re-run `antssl index`"):
        manifest.read_manifest(cfg)
    (tmp_path / "index" / "manifest.json").write_text(json.dumps({"kind": "exact"}))
    assert manifest.read_manifest(cfg) == {"kind": "exact"}
