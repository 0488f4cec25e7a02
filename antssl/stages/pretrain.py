"""The pretrain stage: self-supervised pretraining with Ray Train (TorchTrainer, DDP).

``run(config, force=False) -> URI of the final checkpoint`` (``force``: train this
config's run again from step 0, discarding its checkpoints). The tile stream of the tiles
stage is sharded to ``train.num_workers`` workers (GPU + NCCL on a cluster,
CPU + gloo here). Every ``train.checkpoint_every`` steps rank 0 writes a
weights-only checkpoint (state dict, model spec, normalisation stats, optimizer
state) and publishes it under ``<workspace>/checkpoints/<run>/`` itself, write then
publish (:mod:`antssl.ssl.checkpoint_store`: ``meta.json`` last), before Ray Train
registers it; an incomplete checkpoint is never registered, read or resumed from. The run
name is derived from the config, so re-running the same config resumes from the last
complete checkpoint (incomplete ones are removed), and ``FailureConfig`` restarts the
worker group from it when a worker dies. A failed checkpoint write (full disk, lost
permission, an object store refusing it) stops every worker at once, without Ray Train's
retries (they would fail the same way), and raises one StorageError naming the URI, the
cause and the fix. ``checkpoints/latest.json`` is the completion marker the embed stage
reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import ray.data
import ray.train
import torch
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    CheckpointUploadMode,
    ControllerError,
    DataConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
    WorkerGroupError,
)
from ray.train.torch import TorchTrainer

from antssl import cache, catalog, logs, storage, workspace
from antssl.cache import normalise_torch
from antssl.config import Config
from antssl.data import cache_dataset, readable_scenes, tile_dataset
from antssl.encoder import latest_uri, read_latest, relative_ref
from antssl.errors import (
    AntsslError,
    ConfigError,
    StageOrderError,
    StorageError,
    TrainingDivergedError,
)
from antssl.reader import BandStats
from antssl.runtime import ensure_ray, quiet_train_worker, verbose
from antssl.scenes import SceneInfo, load_infos
from antssl.ssl import (
    Augment,
    all_reduce_mean,
    augment_config,
    build_model,
    build_objective,
    forward_step,
    load_checkpoint,
    load_training_state,
    lr_lambda,
    model_spec,
    read_meta,
    save_checkpoint,
)
from antssl.ssl.checkpoint_store import PREFIX, StoredCheckpoint, complete_checkpoints, publish

log = logging.getLogger(__name__)
# What defines a model: adding scenes (scale-out) must not retrain it.
DIGEST_SECTIONS = ("tiling", "train")


def run_name(config: Config) -> str:
    """The Ray Train run name: same model settings and bands → same run (resume / skip)."""
    bands = ",".join(map(str, config.scenes.bands or []))
    return f"pretrain-{config.digest(*DIGEST_SECTIONS)[:12]}-b{bands or 'all'}"


def diverged_uri(config: Config) -> str:
    """Where a worker records that the loss of this config's run became NaN/inf."""
    return storage.join(workspace.checkpoints_uri(config), run_name(config), "diverged.json")


def _check_resources(config: Config) -> None:
    t = config.train
    res = ray.cluster_resources()
    need_cpu = t.num_workers * t.cpus_per_worker
    if t.use_gpu and res.get("GPU", 0) < t.num_workers and not os.environ.get("RAY_ADDRESS"):
        raise ConfigError(
            f"train.num_workers={t.num_workers} with use_gpu needs {t.num_workers} GPU(s); "
            f"the cluster has {res.get('GPU', 0):g}. Lower train.num_workers or add GPU nodes"
        )
    if res.get("CPU", 0) < need_cpu + 0.5:
        if os.environ.get("RAY_ADDRESS"):  # a cluster may autoscale: let Ray Train wait
            log.warning("train asks for %g CPU; the cluster has %g now", need_cpu, res.get("CPU"))
            return
        raise ConfigError(
            f"train.num_workers × train.cpus_per_worker = {need_cpu:g} CPU, but the cluster has "
            f"{res.get('CPU', 0):g} and Ray Data needs some to read tiles; lower "
            "train.cpus_per_worker (e.g. 0.5) or train.num_workers"
        )


def run(config: Config, force: bool = False) -> str:
    """Pretrain the encoder; returns the URI of the final checkpoint."""
    t = config.train
    done = read_latest(config)
    finished = done and done.get("run") == run_name(config) and done.get("step") == t.steps
    if done and finished and not force:
        log.info("pretrain: %s is complete for this config; skipping", done["checkpoint"])
        return str(done["checkpoint"])
    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    if not storage.exists(workspace.stats_uri(config), config.storage):
        raise StageOrderError("no stats.json in the workspace: run `antssl tiles --config …`")
    stats = BandStats.from_json(storage.read_text(workspace.stats_uri(config), config.storage))
    infos = load_infos(config)
    full = cat
    cat, _ = readable_scenes(cat, infos, config, "pretrain")  # scenes.on_bad_scene
    in_bands = len(stats.bands)
    if t.batch_size > len(cat):
        raise ConfigError(
            f"train.batch_size {t.batch_size} is larger than the {len(cat)} tiles in the catalog"
        )
    build_model(t, in_bands)  # unknown backbone → ConfigError before any worker starts
    augment_config(t)
    build_objective(t)
    ensure_ray(config)
    _check_resources(config)

    cached = cache.usable(config, full, infos, "pretrain")
    ds = training_dataset(cat, infos, config, stats, cached=cached)
    ckpt_root = workspace.checkpoints_uri(config)
    run_uri = storage.join(ckpt_root, run_name(config))
    if force:
        _discard_run(config)
    storage.check_writable(ckpt_root, config.storage)
    resume = resume_point(config)
    pa_fs, pa_path = storage.pyarrow_filesystem(ckpt_root, config.storage)
    trainer = TorchTrainer(
        train_loop,  # type: ignore[arg-type]  # V2 returns rank 0's value (Result.return_value)
        train_loop_config={
            "config": config,
            "stats": stats,
            "in_bands": in_bands,
            "run": run_name(config),
            "cached": cached,
            "resume": (resume.uri, resume.step) if resume else None,
        },
        scaling_config=ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=run_name(config),
            storage_path=pa_path,
            storage_filesystem=pa_fs,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.num_to_keep),
            worker_runtime_env={"env_vars": storage.worker_env(config.storage)},
            # Ray Train's own INFO/WARNING lines to its log files, not the console (-v: all).
            logging_config=LoggingConfig(log_level="DEBUG" if verbose() else "ERROR"),
        ),
        datasets={"train": ds},
        dataset_config=DataConfig(execution_options=ordered_ingest()),
    )
    log.info(
        "pretrain: %s on %d tiles, %d worker(s), %d steps; checkpoints under %s/%s/",
        t.objective,
        len(cat),
        t.num_workers,
        t.steps,
        ckpt_root,
        run_name(config),
    )
    marker = diverged_uri(config)
    if storage.exists(marker, config.storage):  # a retry after changing nothing starts clean
        storage.remove(marker, config.storage)
    try:
        result = trainer.fit()
    except TrainingFailedError as err:
        cause = _project_error(err, run_uri)
        if cause is None:
            raise
        raise cause from None
    stopped = getattr(result, "return_value", None)  # rank 0's (ray.train.v2 Result)
    stopped = stopped if isinstance(stopped, dict) else {}
    if stopped.get("write_error"):
        raise _write_failure(config, str(stopped["write_error"]), stopped.get("step"))
    metrics = result.metrics or {}
    ckpt = result.checkpoint
    # Result.metrics belongs to the latest *checkpoint*, not the last report, so the
    # workers' own marker (written before they stop) is what says the run diverged.
    if storage.exists(marker, config.storage):
        bad = json.loads(storage.read_text(marker, config.storage))
        last = ckpt.path if ckpt else "none"
        raise TrainingDivergedError(
            f"loss became NaN/inf at step {bad.get('step')}; last good checkpoint: {last}. "
            "Lower train.lr or check the tiles' statistics"
        )
    if ckpt is not None:
        prefix = "file://" if storage.scheme_of(ckpt_root) == "file" else "s3://"
        ckpt_uri = prefix + ckpt.path.lstrip("/") if prefix == "s3://" else prefix + ckpt.path
        step, loss = int(metrics["step"]), metrics.get("loss")
    elif resume is not None and resume.step >= t.steps:
        # the final checkpoint is complete but Ray Train lost its record of it (its run
        # snapshot was cut short, e.g. by a full disk): nothing was left to train
        ckpt_uri, step, loss = resume.uri, resume.step, None
    else:
        raise TrainingDivergedError("training finished without a checkpoint")
    done_marker = {
        "run": run_name(config),
        "checkpoint": relative_ref(ckpt_uri, config.workspace),  # portable workspaces
        "step": step,
        "loss": loss,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_text(latest_uri(config), json.dumps(done_marker, indent=2), config.storage)
    shown = "n/a" if loss is None else f"{loss:.4f}"
    log.info("pretrain: step %d, loss %s; checkpoint %s", step, shown, ckpt_uri)
    return ckpt_uri


def training_dataset(
    cat: pd.DataFrame,
    infos: dict[str, SceneInfo],
    config: Config,
    stats: BandStats,
    cached: bool = False,
) -> ray.data.Dataset:
    """The tiles pretraining reads: an ``image`` column (and ``scene``, each tile's scene as
    an integer, when ``train.cross_scene_weight`` or ``train.scene_negatives_weight`` > 0
    or the prototype codes are balanced per scene)
    in an order that mixes scenes in a batch (with the loop's local shuffle buffer,
    ``train.shuffle_buffer``) rather than walking the catalog scene by scene.

    ``cached``: read the tile cache (:mod:`antssl.cache`): raw pixels and a ``valid``
    column that the loop normalises on its device; whole shards in a seeded random order,
    rows shuffled within each. Else the stream from the scenes, normalised by the read
    tasks, held in the object store when ``train.materialize``, its blocks in a random
    order."""
    t = config.train
    with_scene = t.needs_scene_ids
    scenes = sorted(cat["scene_id"].unique()) if with_scene else []
    index = {sid: i for i, sid in enumerate(scenes)}  # each tile's scene as an integer
    if cached:
        scene = cat["scene_id"].map(index).to_numpy(np.int64) if with_scene else None
        return cache_dataset(config, cat, infos, scene=scene, shuffle_seed=t.seed)
    ds = tile_dataset(
        cat, infos, config, stats, columns=["image", "scene_id"] if with_scene else ["image"]
    )
    if with_scene:

        def scene_index(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            scene = np.fromiter(
                (index[s] for s in batch["scene_id"]), np.int64, len(batch["scene_id"])
            )
            return {"image": batch["image"], "scene": scene}

        ds = ds.map_batches(scene_index, batch_format="numpy", batch_size=None)
    ds.context.execution_options.preserve_order = True  # materialised in catalog order
    if t.materialize:
        ds = ds.materialize()
    return ds.randomize_block_order(seed=t.seed)


def ordered_ingest() -> ray.data.ExecutionOptions:
    """Ray Train's default ingest options with the block order kept: the seeded order of
    :func:`training_dataset` reaches the workers as planned, whichever read finishes first
    (else a run's batches, and so its weights, differ between runs of the same config)."""
    # DataConfig.default_ingest_options() with preserve_order, built here: Ray's own copies
    # the deprecated ``exclude_resources`` (a RayDeprecationWarning on the console)
    current = ray.data.DataContext.get_current().execution_options
    return ray.data.ExecutionOptions(
        resource_limits=current.resource_limits,
        preserve_order=True,
        verbose_progress=current.verbose_progress,
        label_selector=current.label_selector,
    )


def resume_point(config: Config) -> StoredCheckpoint | None:
    """The last complete checkpoint of this config's run on the workspace (None: none yet),
    after removing the incomplete ones and a Ray Train run snapshot that cannot be read
    (a write cut short), so that Ray Train neither trips over them nor starts from step 0."""
    run_uri = storage.join(workspace.checkpoints_uri(config), run_name(config))
    found = complete_checkpoints(run_uri, config.storage, clean=True)
    snapshot = storage.join(run_uri, "checkpoint_manager_snapshot.json")
    if storage.exists(snapshot, config.storage):
        try:
            json.loads(storage.read_text(snapshot, config.storage))
        except (StorageError, ValueError):
            log.warning("pretrain: removing unreadable run snapshot %s", snapshot)
            storage.remove(snapshot, config.storage)
    if found:
        log.info("pretrain: last complete checkpoint: step %d (%s)", found[-1].step, found[-1].uri)
    return found[-1] if found else None


def _write_failure(config: Config, message: str, step: Any) -> StorageError:
    """The error of a run stopped by a failed checkpoint write: the write's own message,
    then where the next run resumes."""
    last = None
    with contextlib.suppress(AntsslError):  # the storage may refuse listings too
        run_uri = storage.join(workspace.checkpoints_uri(config), run_name(config))
        found = complete_checkpoints(run_uri, config.storage, clean=True)
        last = found[-1] if found else None
    where = (
        f"the next run resumes from the last complete checkpoint (step {last.step}, {last.uri})"
        if last
        else "no checkpoint was complete, so the next run starts from step 0"
    )
    return StorageError(f"{message.rstrip('.')}. Training stopped at step {step}; {where}")


def _project_error(err: TrainingFailedError, run_uri: str) -> AntsslError | None:
    """The antssl error behind a failed Ray Train run (a worker's AntsslError, or a write
    error of Ray Train's own files under ``run_uri``), or None."""
    if isinstance(err, WorkerGroupError):
        causes = [getattr(e, "_base_exc", e) for e in err.worker_failures.values()]
    elif isinstance(err, ControllerError):
        causes = [err.controller_failure]
    else:
        causes = []
    for cause in causes:
        seen: BaseException | None = cause
        while seen is not None:
            if isinstance(seen, AntsslError):
                return seen
            if storage.is_write_refusal(seen):
                return storage.write_error(run_uri, seen)
            seen = seen.__cause__ or seen.__context__
    return None


def _discard_run(config: Config) -> None:
    """Forget this config's run (its checkpoints, and the marker when it names the run), so
    Ray Train starts it from step 0."""
    run_dir = storage.join(workspace.checkpoints_uri(config), run_name(config))
    if storage.exists(run_dir, config.storage):
        storage.remove(run_dir, config.storage, recursive=True)
    done = read_latest(config)
    if done and done.get("run") == run_name(config):
        storage.remove(latest_uri(config), config.storage)
    log.info("pretrain: --force: training %s again from step 0", run_name(config))


def _start_checkpoint(
    stack: contextlib.ExitStack, loop_config: dict[str, Any], config: Config
) -> tuple[Path | None, str | None]:
    """The local folder of the checkpoint to start from and its location, or (None, None):
    the later of Ray Train's (its latest registered one: a restart after a worker died, or
    the run's snapshot) and the last complete one on the workspace. The workspace is listed
    here, on the worker, not only by the driver before training: a worker that dies right
    after a report can take its group down before Ray Train registers the checkpoint that
    rank 0 had already published, and the restarted group must not begin at step 0."""
    restored = ray.train.get_checkpoint()
    resume = loop_config.get("resume")
    run_uri = storage.join(workspace.checkpoints_uri(config), loop_config["run"])
    found = complete_checkpoints(run_uri, config.storage)
    if found and (resume is None or found[-1].step > resume[1]):
        resume = (found[-1].uri, found[-1].step)
    if restored is not None:
        local = Path(stack.enter_context(restored.as_directory()))
        if resume is None or int(read_meta(local)["step"]) >= resume[1]:
            return local, str(restored.path)
    if resume is not None:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        return storage.download_dir(resume[0], tmp, config.storage), str(resume[0])
    return None, None


def train_loop(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    """Per-worker training loop (runs inside Ray Train workers).

    Returns (rank 0) ``{"write_error": message, "step": step}`` when a checkpoint could not
    be written: every worker stops there, and the driver raises it."""
    config: Config = loop_config["config"]
    stats: BandStats = loop_config["stats"]
    t = config.train
    # A worker's stdout reaches the driver's console; Ray Train's root handler would print
    # each line a second time, and its per-report line is chatter (runtime.quiet_train_worker).
    logs.configure(stream=sys.stdout, propagate=False)
    quiet_train_worker()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(t.cpus_per_worker)))
    torch.manual_seed(t.seed)
    spec = model_spec(t, loop_config["in_bands"])
    model = build_model(t, loop_config["in_bands"])
    step, resumed_from = 0, None
    with contextlib.ExitStack() as stack:
        start, source = _start_checkpoint(stack, loop_config, config)
        if start is not None:
            model.load_state_dict(load_checkpoint(start, expect_spec=spec)[0].state_dict())
        if world > 1 and device.type == "cuda":  # SyncBatchNorm is GPU-only; CPU keeps local BN
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(t.warmup_steps, t.steps))
        if start is not None:
            step = resumed_from = load_training_state(start, opt, sched)
            if rank == 0:
                log.info("pretrain: resumed from step %d (%s)", step, source)
    model = ray.train.torch.prepare_model(model)
    loss_fn = build_objective(t)
    augment = Augment(augment_config(t)).to(device)
    gen = torch.Generator(device=device)
    local_bs = t.batch_size // world
    shard = ray.train.get_dataset_shard("train")
    # The cache's read tasks already mix scenes and shuffle (cache.CacheDatasource); the
    # stream needs the local buffer.
    buffer = None if loop_config.get("cached") or not t.shuffle_buffer else t.shuffle_buffer
    tiles_seen, t0 = 0, time.perf_counter()
    while step < t.steps:
        for batch in shard.iter_torch_batches(
            batch_size=local_bs,
            drop_last=True,
            device=device,
            local_shuffle_buffer_size=max(buffer, local_bs) if buffer else None,
            local_shuffle_seed=t.seed + 7919 * rank + step if buffer else None,
        ):
            gen.manual_seed(t.seed + 1_000_003 * step + rank)
            x, scene = batch["image"], batch.get("scene")
            if "valid" in batch:  # raw pixels from the tile cache: normalise on the device
                x = normalise_torch(x, batch["valid"], stats.mean, stats.std)
            loss, z1 = forward_step(
                model,
                loss_fn,
                augment,
                x,
                gen,
                t.texture_weight,
                None if scene is None else scene.long(),
                t.cross_scene_weight,
                scene_negatives_weight=t.scene_negatives_weight,
                prototype_weight=t.swav_weight,
                prototype_balance=t.prototype_balance,
            )
            if not torch.isfinite(loss):
                if rank == 0:
                    info = {"step": step, "loss": str(float(loss))}
                    storage.write_text(diverged_uri(config), json.dumps(info), config.storage)
                ray.train.report({"step": step, "diverged": True, "loss": float("nan")})
                return None
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            tiles_seen += x.shape[0] * world
            if step % t.log_every and step % t.checkpoint_every and step != t.steps:
                continue
            with torch.no_grad():
                std = torch.nn.functional.normalize(z1.float(), dim=1).std(dim=0).mean()
            metrics = {
                "step": step,
                "loss": float(all_reduce_mean(loss.detach())),
                "lr": sched.get_last_lr()[0],
                "embedding_std": float(all_reduce_mean(std)),
                "tiles_per_s": tiles_seen / (time.perf_counter() - t0),
                "diverged": False,
            }
            if rank == 0:
                log.info(
                    "pretrain: "
                    + " ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in metrics.items()
                    )
                )
            if step % t.checkpoint_every == 0 or step == t.steps:
                extra = {"run": loop_config["run"], "resumed_from": resumed_from}
                error = _report_checkpoint(
                    model, spec, stats, step, opt, sched, metrics, extra, rank, config, device
                )
                if error is not None:  # every rank stops here, without an exception
                    return {"write_error": error, "step": step} if rank == 0 else None
            else:
                ray.train.report(metrics)
            _maybe_fail(t.inject_failure_at_step, step, rank, world, start is not None)
            if step >= t.steps:
                break
    return None


def _report_checkpoint(
    model: torch.nn.Module,
    spec: dict[str, Any],
    stats: BandStats,
    step: int,
    opt: torch.optim.Optimizer,
    sched: Any,
    metrics: dict[str, Any],
    extra: dict[str, Any],
    rank: int,
    config: Config,
    device: torch.device,
) -> str | None:
    """Rank 0 writes the checkpoint locally, then publishes it on the workspace (meta.json
    last); only then is it reported to Ray Train (which registers it without copying it).

    Returns None, or the message of a failed write on every rank (a collective: all ranks
    learn it together and stop, none waits for a report that does not come)."""
    ckpt, error = None, ""
    if rank == 0:
        run = str(extra["run"])
        name = f"{PREFIX}{step:07d}-{uuid.uuid4().hex[:6]}"
        uri = storage.join(workspace.checkpoints_uri(config), run, name)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    save_checkpoint(
                        tmp,
                        model,
                        spec,
                        stats.__dict__,
                        step,
                        extra,
                        optimizer=opt,
                        scheduler=sched,
                    )
                except OSError as err:
                    raise storage.write_error(f"file://{tmp}", err) from err
                publish(tmp, uri, config.storage)
        except StorageError as err:
            error = str(err)
        else:
            where = ray.train.get_context().get_storage()
            ckpt = Checkpoint(
                path=f"{where.experiment_fs_path}/{name}", filesystem=where.storage_filesystem
            )
    failed = float(all_reduce_mean(torch.tensor(float(bool(error)), device=device))) > 0
    if failed:
        return error or "the checkpoint write failed on rank 0"
    ray.train.report(
        metrics, checkpoint=ckpt, checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD
    )
    return None


def _maybe_fail(at: int | None, step: int, rank: int, world: int, resumed: bool) -> None:
    """Fault-tolerance drill: the last worker dies abruptly once, on the first attempt."""
    if at is not None and step == at and rank == world - 1 and not resumed:
        log.warning("pretrain: injected failure on rank %d at step %d", rank, step)
        os._exit(1)
