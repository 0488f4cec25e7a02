"""GPU benchmark and check (issue 3): the pretraining step and the embedding pass on CUDA.

Usage (on a machine with a CUDA GPU; needs torch, numpy, pydantic, pyyaml, not Ray)::

    python bench/gpu.py [--quick] [--json OUT.json]

Ray is not needed: the step timed is :func:`antssl.ssl.forward_step` plus the
optimiser, exactly the body of :func:`antssl.train.train_loop` (bf16 autocast on CUDA,
the NaN check, the collapse monitor every ``log_every`` steps), via
``bench/train.py``'s ``torch_loop`` with the tiles held on the device. Three parts:

1. **Checks** (exit status 1 when one fails): for each model variant the project
   ships (avg/stats pooling, dataset/tile input normalisation, SimCLR/VICReg), the
   same weights and views give the same loss on CUDA (bf16 autocast) as on the CPU
   (float32) within bf16 tolerance; gradients are finite; ``model.embed`` agrees
   (cosine ≥ 0.99 per tile); 30 CUDA steps lower the loss; a checkpoint saved from
   CUDA loads on the CPU with ``weights_only=True`` and embeds the same.
2. **Training throughput**: steady-state tiles/s of the step on CUDA against the
   same loop on every CPU core of the same machine; the ratio is printed.
3. **Embedding throughput**: tiles/s of ``model.embed`` (inference, bf16 on CUDA)
   against the CPU, as the embed stage's ``Embedder`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table
from train import torch_loop

from antssl.config import parse_config
from antssl.ssl import (
    Augment,
    augment_config,
    build_model,
    build_objective,
    forward_step,
    load_checkpoint,
    model_spec,
    save_checkpoint,
)

DEVICE = "cuda"  # --device cpu: a smoke run of this script where there is no GPU

# The variants checked on the device: the bench model, the MOA recipe, the demo's, VICReg.
VARIANTS: dict[str, dict[str, Any]] = {
    "bench (resnet_small w32 d2, avg, SimCLR)": {
        "backbone": "resnet_small",
        "width": 32,
        "depth": 2,
        "embed_dim": 128,
        "proj_dim": 128,
    },
    "moa (w16 d1, pool stats, input_norm tile)": {
        "backbone": "resnet_small",
        "width": 16,
        "depth": 1,
        "embed_dim": 256,
        "proj_dim": 64,
        "pool": "stats",
        "input_norm": "tile",
        "temperature": 0.5,
    },
    "resnet18 w32, VICReg": {
        "backbone": "resnet18",
        "width": 32,
        "depth": 2,
        "embed_dim": 256,
        "proj_dim": 256,
        "objective": "vicreg",
    },
}


def train_config(model: dict[str, Any], batch: int, steps: int) -> Any:
    train = {**model, "batch_size": batch, "steps": steps, "warmup_steps": 2, "log_every": 10}
    return parse_config({"train": train}).train


def check_variant(name: str, model_cfg: dict[str, Any], bands: int, size: int) -> dict[str, Any]:
    """CPU float32 against CUDA bf16 for one variant; raises AssertionError on a failure."""
    t = train_config(model_cfg, 64, 30)
    cuda = torch.device(DEVICE)
    torch.manual_seed(0)
    x = torch.rand(64, bands, size, size) * 2 - 1
    cpu_model = build_model(t, bands)
    gpu_model = build_model(t, bands).to(cuda)
    gpu_model.load_state_dict(cpu_model.state_dict())
    loss_fn, augment = build_objective(t), Augment(augment_config(t))
    # same views on both devices: draw them once on the CPU
    v1, v2 = augment.two_views(x, 1234)
    loss_cpu = loss_fn(*(cpu_model(v) for v in (v1, v2)))
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
        z1, z2 = gpu_model(v1.to(cuda)), gpu_model(v2.to(cuda))
        loss_gpu = loss_fn(z1.float(), z2.float())
    loss_gpu.backward()
    grads_finite = all(
        torch.isfinite(p.grad).all().item() for p in gpu_model.parameters() if p.grad is not None
    )
    loss_cpu, loss_gpu = loss_cpu.detach(), loss_gpu.detach()
    rel = abs(float(loss_gpu) - float(loss_cpu)) / max(1e-6, abs(float(loss_cpu)))
    cpu_model.eval(), gpu_model.eval()
    with torch.inference_mode():
        e_cpu = cpu_model.embed(x)
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
            e_gpu = gpu_model.embed(x.to(cuda)).float().cpu()
    cos = torch.nn.functional.cosine_similarity(e_cpu, e_gpu, dim=1)
    # training on the device lowers the loss (the loop's own step, augmentations on CUDA)
    gpu_model.train()
    opt = torch.optim.AdamW(gpu_model.parameters(), lr=1e-3)
    gen = torch.Generator(device=cuda)
    aug_gpu = augment.to(cuda)
    xg = x.to(cuda)
    losses = []
    for step in range(t.steps):
        gen.manual_seed(step)
        loss, _ = forward_step(gpu_model, loss_fn, aug_gpu, xg, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # a checkpoint written from CUDA loads on the CPU (weights only) and embeds the same
    gpu_model.eval()
    with tempfile.TemporaryDirectory() as d:
        stats = {"mean": [0.0] * bands, "std": [1.0] * bands}
        save_checkpoint(Path(d), gpu_model, model_spec(t, bands), stats, t.steps)
        loaded, _ = load_checkpoint(Path(d), map_location="cpu")
    loaded.eval()
    with torch.inference_mode():
        e_loaded = loaded.embed(x)
        e_trained = gpu_model.embed(x.to(cuda)).cpu()
    ckpt_cos = torch.nn.functional.cosine_similarity(e_loaded, e_trained, dim=1)
    row = {
        "variant": name,
        "loss cpu fp32": round(float(loss_cpu), 4),
        "loss cuda bf16": round(float(loss_gpu), 4),
        "rel diff": round(rel, 4),
        "grads finite": grads_finite,
        "embed cos min": round(float(cos.min()), 4),
        "loss first→last 5": f"{np.mean(losses[:5]):.3f}→{np.mean(losses[-5:]):.3f}",
        "ckpt cpu cos min": round(float(ckpt_cos.min()), 5),
    }
    ok = (
        rel < 0.05
        and grads_finite
        and float(cos.min()) >= 0.99
        and np.mean(losses[-5:]) < np.mean(losses[:5])
        and float(ckpt_cos.min()) > 0.999
    )
    row["ok"] = bool(ok)
    return row


def embed_rate(
    model: torch.nn.Module, x: torch.Tensor, device: str, batch: int, reps: int
) -> float:
    """tiles/s of model.embed on ``device`` (host tensors in, host numpy out, as Embedder)."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    amp = dev.type == "cuda"

    def one_pass() -> None:
        for s in range(0, len(x), batch):
            xb = x[s : s + batch].to(dev, non_blocking=True)
            with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=amp):
                model.embed(xb).float().cpu().numpy()

    one_pass()  # warm-up (cuDNN autotuning, allocator)
    t0 = time.perf_counter()
    for _ in range(reps):
        one_pass()
    return reps * len(x) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and sizes")
    p.add_argument("--json", help="write every figure here too")
    p.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cuda", help="cpu: smoke-run the script without a GPU")
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark measures the GPU path", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "none (cpu smoke run)"
    print(
        f"device: {gpu}; torch {torch.__version__}; {os.cpu_count()} CPU cores; {platform.node()}"
    )
    out: dict[str, Any] = {"gpu": gpu, "torch": torch.__version__, "cpu_cores": os.cpu_count()}

    checks = [check_variant(n, m, 3, 64) for n, m in VARIANTS.items()]
    print("\n## Checks: CUDA bf16 against CPU float32\n")
    print(table(list(checks[0]), [list(c.values()) for c in checks]), flush=True)
    out["checks"] = checks

    # (model, tile px, bands, batch); the CPU baseline runs the same loop on all cores
    cases = [("bench (resnet_small w32 d2, avg, SimCLR)", 64, 3, 256)]
    cases += [("moa (w16 d1, pool stats, input_norm tile)", 64, 1, 256)]
    if not args.quick:
        cases += [("bench (resnet_small w32 d2, avg, SimCLR)", 64, 3, 1024)]
        cases += [("resnet18 w32, VICReg", 128, 3, 256)]
    steps, skip = (30, 10) if args.quick else (80, 20)
    cpu_steps, cpu_skip = (8, 3) if args.quick else (12, 4)
    rows, train_rows = [], []
    for name, size, bands, batch in cases:
        t = train_config(VARIANTS[name], batch, max(steps, cpu_steps))
        cfg = type("C", (), {"train": t})()
        images = torch.rand(max(4096, 4 * batch), bands, size, size) * 2 - 1
        g = torch_loop(images, cfg, steps, skip, args.cpu_threads, device=DEVICE)
        c = torch_loop(images, cfg, cpu_steps, cpu_skip, args.cpu_threads, device="cpu")
        r = {
            "model": name,
            "tile": f"{bands}×{size}²",
            "batch": batch,
            "cuda tiles/s": round(g["steady"]),
            f"cpu ({args.cpu_threads} threads) tiles/s": round(c["steady"], 1),
            "ratio": round(g["steady"] / c["steady"], 1),
        }
        train_rows.append(r)
        rows.append(list(r.values()))
        print(r, flush=True)
    print("\n## Training step (forward_step + AdamW), steady state\n")
    print(table(list(train_rows[0]), rows))
    out["train"] = train_rows

    embed_rows = []
    for name, size, bands, batch in [(n, s, b, 1024) for n, s, b, _ in cases[:2]] + (
        [] if args.quick else [("resnet18 w32, VICReg", 128, 3, 512)]
    ):
        t = train_config(VARIANTS[name], 64, 10)
        model = build_model(t, bands)
        x = torch.rand(16384 if not args.quick else 4096, bands, size, size)
        gr = embed_rate(model, x, DEVICE, batch, 3)
        torch.set_num_threads(args.cpu_threads)
        cr = embed_rate(model, x[:2048], "cpu", 256, 1)
        embed_rows.append(
            {
                "model": name,
                "tile": f"{bands}×{size}²",
                "cuda tiles/s": round(gr),
                "cpu tiles/s": round(cr),
                "ratio": round(gr / cr, 1),
            }
        )
        print(embed_rows[-1], flush=True)
    print("\n## Embedding (model.embed, inference; host in → host out)\n")
    print(table(list(embed_rows[0]), [list(r.values()) for r in embed_rows]))
    out["embed"] = embed_rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    failed = [c["variant"] for c in checks if not c["ok"]]
    if failed:
        print(f"FAILED checks: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
