"""Write failures (a full disk, a file size limit, an object store refusing writes) end with
one `antssl: error:` line naming the URI, the cause and the fix; no incomplete checkpoint is
left visible or read; the next run resumes from the last complete checkpoint.

The failures are real: a process under RLIMIT_FSIZE (EFBIG part-way through a file), the
local S3 server asked to write into a bucket that does not exist, and pretraining from the
command line onto a small tmpfs that fills up (mounted when the tests may mount, as root in a
container; skipped otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from antssl import storage
from antssl.config import StorageConfig, parse_config
from antssl.demo import sample_config
from antssl.errors import StorageError
from antssl.ssl import build_model, model_spec, save_checkpoint
from antssl.ssl.checkpoint_store import complete_checkpoints, publish
from tests.conftest import TINY_TRAIN
from tests.test_late_bad_scene import _assert_only_antssl_lines, _console

ANTSSL = str(Path(sys.executable).parent / "antssl")


def _local_checkpoint(path: Path, step: int = 3) -> Path:
    """A real checkpoint (model, optimizer state after one step, meta) of a tiny model."""
    cfg = parse_config({"train": TINY_TRAIN})
    model = build_model(cfg.train, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(2, 3, 64, 64)).sum().backward()
    opt.step()
    spec = model_spec(cfg.train, 3)
    stats = {"mean": [0.0] * 3, "std": [1.0] * 3, "bands": [1, 2, 3]}
    return save_checkpoint(path, model, spec, stats, step, optimizer=opt)


def test_publish_cut_short_by_a_file_size_limit_leaves_nothing_to_read(tmp_path: Path) -> None:
    local = _local_checkpoint(tmp_path / "local")
    run = f"file://{tmp_path}/ws/checkpoints/run"
    # model.pt is written whole, then optim.pt (the larger) stops part-way: EFBIG
    limit = (local / "model.pt").stat().st_size + 1024
    assert (local / "optim.pt").stat().st_size > limit
    code = (
        "import resource, sys\n"
        "from antssl.config import StorageConfig\n"
        "from antssl.ssl.checkpoint_store import publish\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        f"try:\n    publish({str(local)!r}, {run + '/checkpoint_0000003-a'!r}, StorageConfig())\n"
        "except Exception as err:\n    print(type(err).__name__, err)\n    sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    message = proc.stdout.strip()
    assert message.startswith("StorageError cannot write "), message
    assert f"{run}/checkpoint_0000003-a/optim.pt" in message and "[EFBIG]" in message
    assert "file size limit" in message and "run the command again" in message
    # the folder was removed: nothing half-written is visible, nothing would be resumed from
    assert not (tmp_path / "ws/checkpoints/run/checkpoint_0000003-a").exists()
    assert complete_checkpoints(run, StorageConfig()) == []
    # a publish that goes through is complete, meta.json last
    uri = publish(local, f"{run}/checkpoint_0000003-b", StorageConfig())
    (found,) = complete_checkpoints(run, StorageConfig())
    assert found.uri == uri and found.step == 3


def test_incomplete_checkpoints_are_never_listed_and_are_cleaned(tmp_path: Path) -> None:
    """What a full disk left in the user's report: an empty meta.json and zero-byte weights,
    and a folder whose meta.json never came."""
    cfg = StorageConfig()
    run_dir = tmp_path / "run"
    good = publish(_local_checkpoint(tmp_path / "local", 4), f"file://{run_dir}/checkpoint_4", cfg)
    broken = run_dir / "checkpoint_8"
    broken.mkdir()
    (broken / "meta.json").write_text("")
    (broken / "model.pt").write_bytes(b"")
    (broken / "optim.pt").write_bytes(b"")
    no_meta = run_dir / "checkpoint_12"
    no_meta.mkdir()
    (no_meta / "model.pt").write_bytes(b"\0" * 100)
    (run_dir / "checkpoint_16").mkdir()  # created, nothing written yet
    found = complete_checkpoints(f"file://{run_dir}", cfg)
    assert [(c.uri, c.step) for c in found] == [(good, 4)]
    assert broken.exists()  # listing alone removes nothing
    complete_checkpoints(f"file://{run_dir}", cfg, clean=True)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint_4"]


def test_s3_server_refusing_the_write_is_one_error_naming_the_uri(
    tmp_path: Path, s3_endpoint: str
) -> None:
    cfg = StorageConfig(endpoint_url=s3_endpoint)
    local = _local_checkpoint(tmp_path / "local")
    uri = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/ws/checkpoints/run/checkpoint_1"
    with pytest.raises(StorageError) as err:
        publish(local, uri, cfg)
    message = str(err.value)
    assert message.startswith(f"cannot write {uri}/model.pt: "), message
    assert "s3:PutObject" in message
    # the same mapping for every stage's writes through antssl.storage
    with pytest.raises(StorageError, match=r"cannot write s3://no-such-bucket-\w+/x\.json: "):
        storage.write_text(uri.split("/ws/")[0] + "/x.json", "{}", cfg)


# --- end to end: `antssl pretrain` onto a small filesystem that fills up -------------------


def _mount_tmpfs(where: Path, size: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN): {proc.stderr}"
        )


def _pages(n: int) -> int:
    return -(-n // 4096)


@pytest.fixture
def small_disk_workspace(sample, tmp_path: Path, ray_local: None):
    """A tiled workspace whose checkpoints/ folder is a tmpfs with room for one checkpoint
    (and Ray Train's small files) but not two."""
    from antssl.stages import tiles

    data = sample_config(sample.root, tmp_path / "ws")
    data["train"] = {**TINY_TRAIN, "steps": 6, "checkpoint_every": 2, "log_every": 2}
    tiles.run(parse_config(data))
    probe = _local_checkpoint(tmp_path / "probe")
    pages = sum(_pages(p.stat().st_size) for p in probe.iterdir())
    ckpts = tmp_path / "ws" / "checkpoints"
    _mount_tmpfs(ckpts, 4096 * (pages + pages // 2 + 4))
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    try:
        yield {"config": cfg_path, "checkpoints": ckpts, "cfg": parse_config(data)}
    finally:
        subprocess.run(["umount", "-l", str(ckpts)], check=False)


def _antssl(*args: str) -> subprocess.CompletedProcess[str]:
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    return subprocess.run([ANTSSL, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_full_disk_in_pretrain_is_one_error_and_the_rerun_resumes(small_disk_workspace) -> None:
    from antssl.stages import pretrain

    ws = small_disk_workspace
    cfg = ws["cfg"]
    run_dir = ws["checkpoints"] / pretrain.run_name(cfg)
    proc = _antssl("pretrain", "--config", str(ws["config"]))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    (line,) = [ln for ln in out.splitlines() if ln.startswith("antssl: error:")]
    assert f"cannot write file://{run_dir}/checkpoint_0000004-" in line, line
    assert "No space left on device [ENOSPC]" in line and "free space on the volume" in line
    assert "Training stopped at step 4" in line
    assert "resumes from the last complete checkpoint (step 2" in line, line
    # (Ray Train's placement-group cleaner logs its own tracebacks when it cannot reach the
    # state API or sees a second Ray instance on the machine: not ours, checked below)
    ours = "\n".join(ln for ln in out.splitlines() if "PlacementGroupCleaner" not in ln)
    assert "Traceback" not in ours, out[-3000:]
    # no Ray retry chatter, no worker traceback; Ray Train's placement-group cleaner is left
    # out: its thread polls the state API and logs a traceback of its own when another Ray
    # instance runs on the machine (the suite's `antssl serve` fixtures start their own)
    cleaner = [ln for ln in _console(proc) if "(PlacementGroupCleaner pid=" not in ln]
    _assert_only_antssl_lines(cleaner)
    # only the complete checkpoint is left, nothing half-written; no finished-run marker
    folders = sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint_0"))
    assert len(folders) == 1 and folders[0].startswith("checkpoint_0000002-"), folders
    assert sorted(os.listdir(run_dir / folders[0])) == ["meta.json", "model.pt", "optim.pt"]
    assert not (ws["checkpoints"] / "latest.json").exists()

    # as in the user's report, Ray Train's run snapshot was cut short too (an empty file):
    # resuming does not depend on it
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    assert snapshot.exists()
    snapshot.write_text("")
    # space freed: the same command resumes from step 2 and finishes
    subprocess.run(["mount", "-o", "remount,size=64m", str(ws["checkpoints"])], check=True)
    proc = _antssl("pretrain", "--config", str(ws["config"]))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "resumed from step 2" in out, out[-3000:]
    latest = json.loads((ws["checkpoints"] / "latest.json").read_text())
    assert latest["step"] == 6
    meta = json.loads(
        (
            ws["checkpoints"] / latest["checkpoint"].split("checkpoints/", 1)[1] / "meta.json"
        ).read_text()
    )
    assert meta["step"] == 6 and meta["extra"]["resumed_from"] == 2
