"""The MOA recipe sweep behind bench/RESULTS.md "MOA quality": SSL variants in plain torch.

Trains the project's own model, augmentations and objectives (antssl.ssl) on the
data_trainset tiles of ../shared/data/moa125 held in memory (no Ray: many short runs on
2 cores), then scores them with the project's evaluation core (antssl.evaluate) by
EVAL-PROTOCOL.md on the pooled train+valid tiles (other-scene P@10, k-means NMI, probe
fitted on trainset scenes and scored on validset scenes). Retrieval z-scores each feature
dimension first (as for the baselines). The recipe chosen here is then run for real by
`antssl tiles/pretrain/evaluate --config configs/moa.yaml`.

    .venv/bin/python bench/moa_sweep.py --steps 300 --temp 0.5 --baselines
    .venv/bin/python bench/moa_sweep.py --steps 300 --norm global     # the pitfall

Flags: --norm tile|global, --steps, --batch, --width, --depth, --dim, --obj simclr|vicreg,
--lr, --temp, --crop (min crop area), --blur/--noise/--jitter (probabilities), --window N
(views are two N px windows at native scale), --ctx N (views are two 64 px windows of a
(64+N) px context: an overlapping-neighbour positive), --train_stride, --stem1 (stem
stride 1), --aux W (train.texture_weight), --seed, --device cuda (bf16 autocast, as the
Ray loop on a GPU), --json FILE (append the run's figures). Development only: needs
../shared/data (not shipped with the project) once, to make the tile cache
($ANTSSL_MOA_CACHE, default $TMPDIR/antssl-moa-tiles.npz); the cache alone then runs it
elsewhere (bench/moa_grid.sh runs a grid of these on a GPU).
"""

import argparse
import glob
import os
import time
import warnings

import numpy as np
import torch

from antssl.evaluate.baselines import compute_baselines
from antssl.evaluate.labels import binary_labels, cut_windows, nodata_free
from antssl.evaluate.metrics import cluster_scores, linear_probe
from antssl.evaluate.report import metrics_table
from antssl.evaluate.retrieval import retrieval_precision
from antssl.kmeans import fit_minibatch
from antssl.ssl import objectives
from antssl.ssl.augment import Augment, AugmentConfig
from antssl.ssl.backbones import build_backbone
from antssl.ssl.model import SSLModel
from antssl.ssl.step import forward_step
from antssl.ssl.texture import texture_target_dim

warnings.filterwarnings("ignore")
NUISANCE_PROBS = ("stretch_prob", "gradient_prob", "haze_prob", "stripe_prob", "resolution_prob")
ROOT = os.environ.get("ANTSSL_MOA", "../shared/data/moa125")
CACHE = os.environ.get(
    "ANTSSL_MOA_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), "antssl-moa-tiles.npz")
)


def load(split):
    T, Y, G, E = [], [], [], []
    for p in sorted(glob.glob(f"{ROOT}/{split}/fracture_*[0-9].tif")):
        img = read_scene(p)
        m = read_scene(p.replace(".tif", "_mask.tif"))
        r, c = np.meshgrid(
            np.arange(0, img.shape[0] - 63, 32), np.arange(0, img.shape[1] - 63, 32), indexing="ij"
        )
        r, c = r.ravel(), c.ravel()
        t = cut_windows(img, r, c, 64)
        keep = nodata_free(t)
        lab = binary_labels(cut_windows(m, r, c, 64)[keep]).label
        if not m.any():
            lab[:] = -1
        T.append(t[keep] / 65535.0)
        Y.append(lab)
        G += [split + "/" + os.path.basename(p)] * int(keep.sum())
        E.append(np.full(int(keep.sum()), bool(m.any())))
    return np.concatenate(T).astype(np.float32), np.concatenate(Y), np.array(G)


def read_scene(p):
    import rasterio  # only where the cache is made: the cache alone runs on a GPU machine

    with rasterio.open(p) as s:
        return s.read(1).astype(np.float32)


if not os.path.exists(CACHE):
    Tt, Yt, Gt = load("data_trainset")
    Tv, Yv, Gv = load("data_validset")
    scenes = sorted(glob.glob(f"{ROOT}/data_trainset/fracture_*[0-9].tif"))
    S = {f"scene{i}": read_scene(p).astype(np.uint16) for i, p in enumerate(scenes)}
    np.savez_compressed(CACHE, Tt=Tt, Yt=Yt, Gt=Gt, Tv=Tv, Yv=Yv, Gv=Gv, **S)
d = np.load(CACHE)
Tt, Yt, Gt, Tv, Yv, Gv = (d[k] for k in ("Tt", "Yt", "Gt", "Tv", "Yv", "Gv"))
train_scenes = [d[k].astype(np.float32) for k in sorted(d.files, key=str) if k.startswith("scene")]

ap = argparse.ArgumentParser()
ap.add_argument("--norm", default="tile")  # tile | global
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--batch", type=int, default=256)
ap.add_argument("--width", type=int, default=16)
ap.add_argument("--depth", type=int, default=1)
ap.add_argument("--dim", type=int, default=128)
ap.add_argument("--obj", default="simclr")
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--temp", type=float, default=0.2)
ap.add_argument("--crop", type=float, default=0.35)
ap.add_argument("--feat", default="embed")
ap.add_argument("--window", type=int, default=0)
ap.add_argument("--ctx", type=int, default=0)
ap.add_argument("--stem1", action="store_true")
ap.add_argument("--pool", default="avg")  # avg | multi (stats + linear) | stats (as train.pool)
ap.add_argument("--train_stride", type=int, default=32)
ap.add_argument("--blur", type=float, default=0.5)
ap.add_argument("--noise", type=float, default=0.5)
ap.add_argument("--jitter", type=float, default=0.8)  # embed | pool
ap.add_argument("--baselines", action="store_true")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--tag", default="")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--aux", type=float, default=0.0)  # train.texture_weight (antssl.ssl.texture)
ap.add_argument("--device", default="cpu")  # cuda: bf16 autocast, as the Ray loop on a GPU
ap.add_argument("--nuisance", action="store_true", help="+ stretch/gradient/haze/stripe/resolution")
ap.add_argument("--json", help="append this run's args and figures (one JSON line) here")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
dev = torch.device(a.device)

mu, sd = float(Tt.mean()), float(Tt.std())


def norm(x):
    if a.norm == "tile":
        m = x.mean(axis=(-2, -1), keepdims=True)
        s = x.std(axis=(-2, -1), keepdims=True)
        return (x - m) / (s + 1e-6)
    return (x - mu) / sd


class Cfg:
    pass


cfg = Cfg()
cfg.objective = a.obj
cfg.temperature = a.temp
if a.pool == "stats":  # the project's pool: stats (standardised statistics, no linear layer)
    a.dim = 2 * a.width * 2**3
enc = build_backbone(
    "resnet_small", 1, a.width, a.depth, a.dim, "stats" if a.pool == "stats" else "avg"
)


def stage_stats(enc, x):
    """Mean + std of the stem's and every block's maps (unstandardised)."""
    h = enc.stem(x)
    outs = [h]
    for blk in enc.stages:
        h = blk(h)
        outs.append(h)
    return torch.cat([o.mean(dim=(2, 3)) for o in outs] + [o.std(dim=(2, 3)) for o in outs], 1)


if a.pool == "multi":  # trained on the statistics through a linear layer (the sweep's rows)
    import types

    n_feat = 2 * (a.width + sum(blk.conv2.out_channels for blk in enc.stages))
    enc.fc = torch.nn.Linear(n_feat, a.dim)
    enc.forward = types.MethodType(lambda self, x: self.fc(stage_stats(self, x)), enc)
if a.stem1:
    enc.stem[0].stride = (1, 1)
model = SSLModel(enc, a.dim, 64, texture_dim=texture_target_dim(1) if a.aux else 0)
aug = Augment(
    AugmentConfig(
        crop_prob=0.0 if a.window else 1.0,
        crop_scale=(a.crop, 1.0),
        blur_prob=a.blur,
        noise_prob=a.noise,
        jitter_prob=a.jitter,
        # the multi-band default's scene-nuisance models (issue 13) only with --nuisance;
        # without it, the augmentations every figure above was measured with
        **({} if a.nuisance else {k: 0.0 for k in NUISANCE_PROBS}),
    )
)
loss_fn = objectives.SimCLRLoss(a.temp) if a.obj == "simclr" else objectives.VICRegLoss()

opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
if a.ctx or a.train_stride != 32:
    C = 64 + a.ctx
    P = []
    for img in train_scenes:
        r, c = np.meshgrid(
            np.arange(0, img.shape[0] - C + 1, a.train_stride),
            np.arange(0, img.shape[1] - C + 1, a.train_stride),
            indexing="ij",
        )
        t = cut_windows(img, r.ravel(), c.ravel(), C)
        P.append(t[nodata_free(t)] / 65535.0)
    Xtr = torch.from_numpy(norm(np.concatenate(P).astype(np.float32)))[:, None]
    print("context windows", Xtr.shape, flush=True)
else:
    Xtr = torch.from_numpy(norm(Tt))[:, None]

model, aug, Xtr = model.to(dev), aug.to(dev), Xtr.to(dev)
g = torch.Generator(device=dev).manual_seed(a.seed)
t0 = time.time()
model.train()
for step in range(a.steps):
    idx = torch.randint(0, len(Xtr), (a.batch,), generator=g, device=dev)
    xb = Xtr[idx]
    if a.window or a.ctx:

        def win(x):
            B, _C, H, W = x.shape
            w = a.window or 64
            r0 = torch.randint(0, H - w + 1, (B,), generator=g, device=dev)
            c0 = torch.randint(0, W - w + 1, (B,), generator=g, device=dev)
            rows = r0[:, None] + torch.arange(w, device=dev)
            cols = c0[:, None] + torch.arange(w, device=dev)
            y = (
                x[torch.arange(B, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
                .permute(0, 3, 1, 2)
                .contiguous()
            )
            if a.norm == "tile":
                y = (y - y.mean(dim=(-2, -1), keepdim=True)) / (
                    y.std(dim=(-2, -1), keepdim=True) + 1e-6
                )
            return y

        v1, v2 = aug(win(xb), g), aug(win(xb), g)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = loss_fn(model(v1).float(), model(v2).float())
    else:
        loss, _ = forward_step(model, loss_fn, aug, xb, g, a.aux)  # the Ray loop's step
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if step % 50 == 0 or step == a.steps - 1:
        print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
train_s = time.time() - t0


def embed(T, feat):
    model.eval()
    out = []
    X = torch.from_numpy(norm(T))[:, None]
    with torch.no_grad():
        for s in range(0, len(X), 512):
            x = X[s : s + 512].to(dev)
            if feat == "multi":  # mean + std of the stem's and every block's maps
                out.append(stage_stats(enc, x).float().cpu().numpy())
            else:
                out.append(model.embed(x).float().cpu().numpy())
    return np.concatenate(out)


keep_t, keep_v = Yt >= 0, Yv >= 0
T = np.concatenate([Tt[keep_t], Tv[keep_v]])
Y = np.concatenate([Yt[keep_t], Yv[keep_v]])
G = np.concatenate([Gt[keep_t], Gv[keep_v]])
nt = int(keep_t.sum())
feats = {"ssl": embed(T, "embed"), "ssl_multi": embed(T, "multi")}
if a.baselines:

    def fac():
        return SSLModel(build_backbone("resnet_small", 1, a.width, a.depth, a.dim), a.dim, 64)

    feats.update(compute_baselines(T, fac, model_tiles=norm(T)[:, None]))
res = {}
for name, x in feats.items():
    metric = "euclidean" if x.shape[1] == 1 else "cosine"
    z = (x - x.mean(0)) / (x.std(0) + 1e-12)
    r = retrieval_precision(z, Y, 10, group=G, metric=metric)
    row = {**r.figures({0: "unfrac", 1: "frac"})}
    for k in (2, 8, 16):
        km = fit_minibatch(z.astype(np.float32), k, seed=0)
        cs = cluster_scores(km.labels, Y, 10).figures({0: "unfrac", 1: "frac"})
        row.update({f"k={k} {m}": v for m, v in cs.items() if m.startswith(("NMI", "ARI"))})
    p = linear_probe(x[:nt], Y[:nt], x[nt:], Y[nt:], groups_train=G[:nt])
    row.update(p.figures())
    res[name] = row
print(f"args {vars(a)} train_s {train_s:.0f}")
if a.json:
    import json

    with open(a.json, "a") as f:
        f.write(json.dumps({"args": vars(a), "train_s": train_s, "res": res}, default=float) + "\n")

print(metrics_table(res))
