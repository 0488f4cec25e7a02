"""A scene that becomes unreadable after `antssl tiles` (a truncated GeoTIFF) follows
scenes.on_bad_scene in pretrain and embed, and a run's console holds antssl's lines only.

One small workspace: two real sample scenes (copies), tiled; then one copy is truncated.
pretrain and embed run as the command line does (subprocesses connected to the session's
Ray instance, as a job on a cluster is), so their console output is what a user sees.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from antssl.cli import main
from antssl.config import parse_config
from antssl.demo import sample_config
from antssl.stages import tiles
from tests.conftest import TINY_TRAIN

ANTSSL = str(Path(sys.executable).parent / "antssl")
# What Ray, GDAL and rasterio print when left alone, and our own calls' deprecations.
NOT_OURS = re.compile(
    r"Running Dataset|Starting execution|execution finished|Execution plan|ray-data\.log"
    r"|Reporting training result|NotGeoreferencedWarning|Cannot modify tag|TIFFSetField"
    r"|[Dd]eprecat|FutureWarning|Tasks: \d+|Queued blocks|Traceback"
)


@pytest.fixture(scope="module")
def workspace(sample, tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> dict:
    root = tmp_path_factory.mktemp("late")
    scenes = root / "scenes"
    scenes.mkdir()
    for p in sample.scenes:
        shutil.copy(p, scenes / p.name)
    data = sample_config(sample.root, root / "ws")
    data["scenes"] = {"glob": f"file://{scenes}/scene_*.tif"}
    data["train"] = {**TINY_TRAIN}
    data["embed"] = {**data.get("embed", {}), "chunk_rows": 16}  # chunks of one scene each
    tiles.run(parse_config(data))
    bad = scenes / sample.scenes[1].name  # planned and counted, then cut short
    os.truncate(bad, bad.stat().st_size * 2 // 3)
    return {"root": root, "data": data, "bad_id": bad.stem, "bad_uri": f"file://{bad}"}


def _config(ws: dict, on_bad_scene: str) -> Path:
    data = {**ws["data"], "scenes": {**ws["data"]["scenes"], "on_bad_scene": on_bad_scene}}
    path = ws["root"] / f"config-{on_bad_scene}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line, connected to the session's Ray instance as a job (as `ray job
    submit` or KubeRay would connect it): one Ray instance on the machine, no start-up."""
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    return subprocess.run([ANTSSL, *args], capture_output=True, text=True, timeout=300, env=env)


def _console(proc: subprocess.CompletedProcess[str]) -> list[str]:
    text = (proc.stdout + proc.stderr).replace("\r", "\n")
    return [ln for ln in text.splitlines() if ln.strip()]


ANSI = re.compile(r"\x1b\[[0-9;]*m")
WORKER = re.compile(r"^\((\w+) pid=\d+(?:, ip=[\d.]+)?\) ")  # Ray's prefix on workers' lines
RAY_LOG = re.compile(r"^\[?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+")  # Ray's own format


def _foreign(line: str) -> bool:
    """Not an antssl line: a worker's line that is not antssl's (Ray's train workers,
    controllers, Ray Data's coordinators), a line in Ray's log format, or known noise.
    None is allowed: Ray's notice about Ray Train's PreemptionWatcher (ray#53727) and the
    placement-group cleaner's state-API warnings are kept off the console by
    runtime.drop_known_ray_notices."""
    text = ANSI.sub("", line)
    worker = WORKER.match(text)
    if worker:
        return not text[worker.end() :].startswith(("pretrain:", "antssl:"))
    return bool(RAY_LOG.match(text) or NOT_OURS.search(text) or "repeated" in text)


def _assert_only_antssl_lines(lines: list[str]) -> None:
    noise = [ln for ln in lines if _foreign(ln)]
    assert not noise, "not antssl's lines on the console:\n" + "\n".join(noise[:30])
    repeated = {ln for ln in lines if lines.count(ln) > 1 and not ln.startswith("embed")}
    assert not repeated, "duplicated lines:\n" + "\n".join(sorted(repeated))


def test_fail_stops_pretrain_with_one_error_naming_scene_uri_and_cause(
    workspace: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pretrain", "--config", str(_config(workspace, "fail"))]) == 2
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("antssl: error:")]
    assert f"scene {workspace['bad_id']}" in line and workspace["bad_uri"] in line, line
    assert "TIFFFillTile" in line  # GDAL's cause, not rasterio's "Read failed"
    assert "on_bad_scene: skip" in line
    assert "Traceback" not in err


def test_skip_trains_on_the_other_scene_with_one_warning_and_a_quiet_console(
    workspace: dict,
) -> None:
    proc = _run("pretrain", "--config", str(_config(workspace, "skip")))
    lines = _console(proc)
    assert proc.returncode == 0, "\n".join(lines[-40:])
    warnings = [ln for ln in lines if ln.startswith("antssl: warning:")]
    (warning,) = [ln for ln in warnings if workspace["bad_id"] in ln]
    assert workspace["bad_uri"] in warning and "TIFFFillTile" in warning, warning
    assert any("pretrain: step=" in ln for ln in lines)  # the workers' progress reached us
    _assert_only_antssl_lines(lines)


def test_embed_fails_or_skips_the_scene_and_keeps_the_rest(workspace: dict) -> None:
    fail = _run("embed", "--config", str(_config(workspace, "fail")))
    (line,) = [ln for ln in _console(fail) if ln.startswith("antssl: error:")]
    assert fail.returncode == 2 and workspace["bad_uri"] in line and "TIFFFillTile" in line

    proc = _run("embed", "--config", str(_config(workspace, "skip")))
    lines = _console(proc)
    assert proc.returncode == 2, "\n".join(lines[-40:])
    (warning,) = [ln for ln in lines if ln.startswith("antssl: warning:")]
    assert workspace["bad_id"] in warning and workspace["bad_uri"] in warning
    (error,) = [ln for ln in lines if ln.startswith("antssl: error:")]
    assert f"skipped scene(s) {workspace['bad_id']}" in error and "stay pending" in error
    _assert_only_antssl_lines([ln for ln in lines if ln != error])
    # The good scene's tiles are embedded: only chunks with the bad scene's tiles are pending.
    from antssl import catalog, store
    from antssl import workspace as ws_mod

    cfg = parse_config(workspace["data"])
    cat = catalog.read(ws_mod.catalog_uri(cfg), cfg.storage)
    rows = cfg.embed.chunk_rows
    bad_chunks = set((cat.index[cat["scene_id"] == workspace["bad_id"]] // rows).tolist())
    group = store.open_group(ws_mod.embeddings_uri(cfg), cfg.storage)
    assert set(store.pending_chunks(group)) == bad_chunks
    assert len(bad_chunks) < store.n_chunks(len(cat), rows)  # and the others were written
