"""Pretrain benchmark (issue 3): the Ray Train loop against the same loop in plain torch.

Usage::

    python bench/train.py [--quick] [--steps 40] [--no-two-workers] [--work DIR]

Both sides train the same model (``resnet_small``, width 32, depth 2, embed 128,
SimCLR) with the same augmentations, objective, AdamW + warm-up/cosine
schedule, global batch size and torch thread count:

- ``ray``: :func:`antssl.train.run` on sample scenes (``file://`` workspace,
  dataset materialised as the stage does by default), 1 worker × 1.5 CPU and
  2 workers × 0.75 CPU. The workers print ``tiles_per_s`` = tiles seen / time
  since the loop started every ``log_every`` steps; from two such reports the
  exact elapsed time at each is ``step · batch / tiles_per_s``, so the
  steady-state rate is taken between the first report at or after
  ``--skip`` steps and the last step (Ray start-up, dataset materialisation,
  worker start and the first steps are excluded; the per-report
  ``all_reduce`` and ``ray.train.report`` are included, as in real runs).
- ``torch``: the identical loop in this process on the same tiles held in
  memory as one tensor (random permutation batches), timed over the same
  steps. Run before and after the Ray runs so load drift on the machine shows.

Target: ray / torch >= 0.85 (the data path must not starve the model).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    CpuSampler,
    loadavg,
    machine,
    sample_workspace,
    start_ray,
    table,
    tee_stdout,
)

TARGET = 0.85
MODEL = {"backbone": "resnet_small", "width": 32, "depth": 2, "embed_dim": 128, "proj_dim": 128}
STEP_RE = re.compile(r"pretrain: step=(\d+) .*?tiles_per_s=([0-9.e+]+)")


def load_tiles(config: Any) -> np.ndarray:
    """Every catalog tile, normalised, as one (N, C, H, W) float32 array (via Ray Data)."""
    from antssl import catalog, storage, workspace
    from antssl.data import tile_dataset
    from antssl.reader import BandStats
    from antssl.scenes import load_infos

    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    stats = BandStats.from_json(storage.read_text(workspace.stats_uri(config), config.storage))
    ds = tile_dataset(cat, load_infos(config), config, stats).select_columns(["image"])
    return np.concatenate([b["image"] for b in ds.iter_batches(batch_size=None)])


def torch_loop(
    images: np.ndarray | torch.Tensor,
    config: Any,
    steps: int,
    skip: int,
    threads: int,
    device: str = "cpu",
) -> dict[str, Any]:
    """Steady-state tiles/s of pretrain.train_loop's body in plain torch (steps skip..steps),
    per wall second and per CPU second of this process, on ``device`` (tiles held there)."""
    from antssl.ssl import (
        Augment,
        augment_config,
        build_model,
        build_objective,
        forward_step,
        lr_lambda,
    )

    t = config.train
    dev = torch.device(device)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(t.seed)
        model = build_model(t, images.shape[1]).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(t.warmup_steps, t.steps))
        loss_fn = build_objective(t)
        augment = Augment(augment_config(t)).to(dev)
        gen = torch.Generator(device=dev)
        data = torch.as_tensor(images).to(dev)
        order = torch.randperm(len(data), device=dev)
        bs, pos, marks = t.batch_size, 0, {}
        for step in range(1, steps + 1):
            if pos + bs > len(order):
                order, pos = torch.randperm(len(data), device=dev), 0
            x = data[order[pos : pos + bs]]
            pos += bs
            gen.manual_seed(t.seed + 1_000_003 * step)
            loss, z1 = forward_step(model, loss_fn, augment, x, gen)
            if not torch.isfinite(loss):  # the loop's NaN check (a host sync, as there)
                raise RuntimeError(f"loss became {float(loss)} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % t.log_every == 0:  # the loop's metrics, minus ray.train.report
                with torch.no_grad():
                    torch.nn.functional.normalize(z1.float(), dim=1).std(dim=0).mean().item()
                float(loss.detach())
            if dev.type == "cuda":
                torch.cuda.synchronize()
            marks[step] = (time.perf_counter(), time.process_time())
        wall = marks[steps][0] - marks[skip][0]
        cpu = marks[steps][1] - marks[skip][1]
        tiles = (steps - skip) * bs
        return {
            "steady": tiles / wall,
            "per_cpu_s": tiles / cpu,
            "cores": cpu / wall,
            "load": loadavg(),
        }
    finally:
        torch.set_num_threads(old)


def data_path_cost(config: Any, batch: int) -> dict[str, float]:
    """tiles/s and tiles per CPU-s of the loop's data path alone, in this process:
    ``iter_torch_batches`` (local shuffle buffer 4 x batch, float32) over the materialised
    tile dataset, 3 epochs, no model. A lower bound of what the worker spends on data."""
    from antssl import catalog, storage, workspace
    from antssl.data import tile_dataset
    from antssl.reader import BandStats
    from antssl.scenes import load_infos

    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    stats = BandStats.from_json(storage.read_text(workspace.stats_uri(config), config.storage))
    ds = tile_dataset(cat, load_infos(config), config, stats).select_columns(["image"])
    ds = ds.materialize()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for _ in range(3):
        for b in ds.iter_torch_batches(
            batch_size=batch,
            drop_last=True,
            dtypes=torch.float32,
            local_shuffle_buffer_size=4 * batch,
        ):
            n += len(b["image"])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tiles_per_s": n / wall, "per_cpu_s": n / cpu}


def ray_run(
    data: dict[str, Any], workers: int, cpus: float, skip: int, sampler: CpuSampler
) -> dict[str, Any]:
    """pretrain.run with this scaling; steady-state tiles/s from the workers' printed reports.

    The CPU seconds of the whole local Ray instance (driver, GCS, raylet, every worker)
    over the same steps come from ``sampler``; the window's start in this process's clock
    is the earliest (arrival - elapsed) over the report lines (they arrive late, never early).
    """
    from antssl import storage, workspace
    from antssl.config import parse_config
    from antssl.stages import pretrain

    cfg = parse_config(
        {**data, "train": {**data["train"], "num_workers": workers, "cpus_per_worker": cpus}}
    )
    ckpts = storage.local_path(workspace.checkpoints_uri(cfg))
    shutil.rmtree(ckpts, ignore_errors=True)  # a finished run with this config would be skipped
    t0 = time.perf_counter()
    with tee_stdout(echo="pretrain:") as tee:
        pretrain.run(cfg)
        time.sleep(1.5)  # let the last forwarded worker lines arrive
    wall = time.perf_counter() - t0
    reports: dict[int, float] = {}
    arrival: dict[int, float] = {}
    for t_arr, line in tee.lines:
        m = STEP_RE.search(line)
        if m:
            reports[int(m.group(1))] = float(m.group(2))
            arrival.setdefault(int(m.group(1)), t_arr)
    bs, last = cfg.train.batch_size, cfg.train.steps
    if last not in reports:
        raise RuntimeError(f"no report of step {last} in the workers' output: {sorted(reports)}")
    first = min((s for s in reports if s >= skip), default=None)
    if first is None or first >= last:
        raise RuntimeError(f"need a report between step {skip} and {last}: {sorted(reports)}")
    elapsed = {s: s * bs / r for s, r in reports.items()}  # seconds since the loop began
    t_loop0 = min(arrival[s] - elapsed[s] for s in reports)
    procs = sampler.by_process(t_loop0 + elapsed[first], t_loop0 + elapsed[last])
    cpu = sum(procs.values())
    window = elapsed[last] - elapsed[first]
    tiles = (last - first) * bs
    return {
        "steady": tiles / window,
        "per_cpu_s": tiles / cpu,
        "cores": cpu / window,
        "procs": {k: v / window for k, v in procs.items() if v / window >= 0.005},
        "cumulative": reports[last],
        "first": first,
        "loop_s": elapsed[last],
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 scenes, 12 steps, 1 worker (~1 min)")
    p.add_argument("--scenes", type=int, default=6)
    p.add_argument("--size", type=int, default=512, help="scene edge in pixels")
    p.add_argument("--steps", type=int, default=40, help="training steps of each Ray run")
    p.add_argument("--baseline-steps", type=int, default=25, help="steps of each torch run")
    p.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the rate")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-two-workers", action="store_true", help="skip 2 workers x 0.75 CPU")
    p.add_argument("--work", help="scratch folder (a new temporary folder when unset)")
    args = p.parse_args(argv)
    if args.quick:
        args.scenes, args.steps, args.baseline_steps, args.skip = 2, 12, 12, 4
        args.no_two_workers = True
    log_every = args.skip if args.skip > 0 else 1
    import ray

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="antssl-bench-train-"))
    t_start, load_start = time.perf_counter(), loadavg()
    train_cfg = {
        **MODEL,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup_steps": min(4, args.steps - 1),
        "log_every": log_every,
        "checkpoint_every": args.steps,  # one checkpoint, after the measured steps
        "materialize": True,
    }
    threads1 = max(1, int(1.5))  # what train_loop gives a 1.5-CPU worker: int(cpus_per_worker)
    base: dict[str, dict[str, Any]] = {}
    results: dict[tuple[int, float], dict[str, Any]] = {}
    try:
        start_ray(num_cpus=2)
        data = sample_workspace(work, args.scenes, args.size, {"train": train_cfg})
        from antssl.config import parse_config

        config = parse_config(data)
        images = load_tiles(config)
        print(
            f"{len(images)} tiles {images.shape[1:]}; setup {time.perf_counter() - t_start:.0f} s"
        )

        def baseline(name: str, threads: int) -> None:
            base[name] = torch_loop(images, config, args.baseline_steps, args.skip, threads)
            print(f"torch {name}, {threads} thread(s): {base[name]}", flush=True)

        baseline("before", threads1)
        with CpuSampler() as sampler:
            for w, c in [(1, 1.5)] + ([] if args.no_two_workers else [(2, 0.75)]):
                results[(w, c)] = ray_run(data, w, c, args.skip, sampler)
                results[(w, c)]["load"] = loadavg()
                print(f"ray {w}x{c}: {results[(w, c)]}", flush=True)
        baseline("after", threads1)
        dp = data_path_cost(config, args.batch_size)
        print(f"data path alone: {dp}", flush=True)
        if not args.no_two_workers:
            baseline("2 threads", 2)
        ray.shutdown()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    ref = {k: (base["before"][k] + base["after"][k]) / 2 for k in ("steady", "per_cpu_s")}
    rows: list[list[Any]] = []
    for name, b in base.items():
        th = 2 if name == "2 threads" else threads1
        rows.append(
            [
                f"torch in-memory ({name})",
                th,
                f"{b['steady']:.1f}",
                f"{b['per_cpu_s']:.1f}",
                f"{b['cores']:.2f}",
                "",
                "",
                b["load"],
                "",
                "",
            ]
        )
    for (w, c), r in results.items():
        rows.append(
            [
                f"ray pretrain.run {w} worker(s) x {c} CPU",
                w * max(1, int(c)),
                f"{r['steady']:.1f}",
                f"{r['per_cpu_s']:.1f}",
                f"{r['cores']:.2f}",
                f"{r['cumulative']:.1f}",
                f"{r['loop_s']:.0f} / {r['wall_s']:.0f}",
                r["load"],
                f"{r['steady'] / ref['steady']:.2f}",
                f"{r['per_cpu_s'] / ref['per_cpu_s']:.2f}",
            ]
        )
    print()
    print(
        f"machine: {machine()}; load at start {load_start}; total "
        f"{time.perf_counter() - t_start:.0f} s"
    )
    print(
        f"{len(images)} tiles of {images.shape[1:]}, model {MODEL}, batch {args.batch_size}; "
        f"Ray runs {args.steps} steps, torch runs {args.baseline_steps}; steady state from "
        f"step {args.skip}"
    )
    print(
        table(
            [
                "run",
                "torch threads",
                "steady tiles/s",
                "tiles per CPU-s",
                "CPU cores busy",
                "cumulative tiles/s",
                "loop / pretrain.run wall s",
                "load (1/5/15) after",
                "wall ratio vs torch",
                "CPU-efficiency ratio vs torch",
            ],
            rows,
        )
    )
    print(
        f"(ratios against the mean of torch before/after: {ref['steady']:.1f} tiles/s, "
        f"{ref['per_cpu_s']:.1f} tiles per CPU-s; Ray CPU = the whole local Ray instance)"
    )
    for (w, c), r in results.items():
        procs = ", ".join(f"{k} {v:.3f}" for k, v in r["procs"].items())
        print(f"CPU cores busy by process, {w} worker(s) x {c} CPU, steady window: {procs}")
    print(
        f"data path alone (iter_torch_batches over the materialised dataset in the driver, "
        f"no model): {dp['tiles_per_s']:.0f} tiles/s, {dp['per_cpu_s']:.0f} tiles per CPU-s, "
        f"i.e. {100 * ref['per_cpu_s'] / dp['per_cpu_s']:.1f}% of the model's CPU per tile"
    )
    if "2 threads" in base and (2, 0.75) in results:
        b2, r2 = base["2 threads"], results[(2, 0.75)]
        print(
            f"2 workers x 0.75 CPU vs torch with 2 threads: wall ratio "
            f"{r2['steady'] / b2['steady']:.2f}, CPU-efficiency ratio "
            f"{r2['per_cpu_s'] / b2['per_cpu_s']:.2f}"
        )
    w1 = results[(1, 1.5)]
    for name, key in (("wall", "steady"), ("CPU-efficiency", "per_cpu_s")):
        ratio = w1[key] / ref[key]
        ok = "meets" if ratio >= TARGET else "misses"
        print(f"1 worker, {name} ratio {ratio:.2f} vs target >= {TARGET}: {ok} the target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
