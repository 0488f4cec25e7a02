"""Baseline features on raw tiles, to compare learned embeddings against (EVAL-PROTOCOL.md).

Every extractor takes tiles ``(n, C, H, W)`` (or ``(n, H, W)``, one band), finite floats,
and returns ``(n, d)`` float32, deterministic for a given input and seed. Features are not
standardised here; z-score them (fitted on the evaluated tiles) before cosine retrieval, and
use Euclidean neighbours for the 1-D :func:`mean_brightness` shortcut.

- :func:`pca_pixels`: raw pixels projected on their first principal components (Pearson
  1901), fitted on the evaluated tiles themselves (no labels are used).
- :func:`intensity_stats`: per band mean, standard deviation and percentiles.
- :func:`gradient_stats`: gradient-magnitude statistics and structure-tensor coherence
  (Bigün & Granlund 1987), high for straight parallel structure such as fractures.
- :func:`lbp_histogram`: rotation-invariant uniform local binary patterns, LBP^{riu2}_{P,R}
  (Ojala, Pietikäinen & Mäenpää 2002, IEEE TPAMI 24(7):971-987).
- :func:`glcm_features`: grey-level co-occurrence contrast, homogeneity and energy
  (Haralick, Shanmugam & Dinstein 1973, IEEE TSMC 3(6):610-621).
- :func:`mean_brightness`: the shortcut, one number per tile.
- :func:`random_backbone_features`: the evaluated architecture with random weights
  (:func:`model_features`: any model's embeddings in batches, the encoder's too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA

from antssl.evaluate import EvaluationError
from antssl.ssl.descriptor import lbp_histogram as lbp_histogram_torch

__all__ = [
    "compute_baselines",
    "glcm_features",
    "gradient_stats",
    "intensity_stats",
    "lbp_histogram",
    "mean_brightness",
    "model_features",
    "pca_pixels",
    "random_backbone_features",
    "texture_features",
]

_BATCH = 256  # tiles per batch in the texture extractors (bounds temporary memory)


def _tiles(tiles: np.ndarray) -> np.ndarray:
    arr = np.asarray(tiles)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or 0 in arr.shape:
        raise EvaluationError(
            f"tiles must be (n, C, H, W) or (n, H, W), non-empty; got {arr.shape}"
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise EvaluationError("tiles hold NaN or inf; drop tiles with nodata first")
    return arr


def _per_band(fn: Callable[[np.ndarray], np.ndarray], tiles: np.ndarray) -> np.ndarray:
    """Apply ``fn`` ((m, H, W) -> (m, f)) to each band, in batches; (n, C * f) float32."""
    arr = _tiles(tiles)
    out = [
        np.concatenate([fn(arr[s : s + _BATCH, b]) for s in range(0, arr.shape[0], _BATCH)])
        for b in range(arr.shape[1])
    ]
    return np.concatenate(out, axis=1).astype(np.float32)


def pca_pixels(
    tiles: np.ndarray, n_components: int = 64, seed: int = 0, fit: np.ndarray | None = None
) -> np.ndarray:
    """Raw pixels (flattened ``C*H*W``) projected on ``min(n_components, m, C*H*W)`` PCs.

    The PCs are fitted on the rows ``fit`` (bool or indices; default all n, m of them) and
    every row is projected on them.
    """
    arr = _tiles(tiles)
    flat = arr.reshape(arr.shape[0], -1)
    ref = flat if fit is None else flat[fit]
    m = min(n_components, *ref.shape)
    pca = PCA(n_components=m, random_state=seed).fit(ref)
    return pca.transform(flat).astype(np.float32)


def intensity_stats(
    tiles: np.ndarray, percentiles: Sequence[float] = (5, 25, 50, 75, 95)
) -> np.ndarray:
    """Per band: mean, standard deviation, then the given percentiles; (n, C * (2 + p))."""

    def stats(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(x.shape[0], -1)
        pct = np.percentile(flat, list(percentiles), axis=1).T
        return np.column_stack([flat.mean(axis=1), flat.std(axis=1), pct])

    return _per_band(stats, tiles)


def mean_brightness(tiles: np.ndarray) -> np.ndarray:
    """Mean over all bands and pixels: (n, 1). The shortcut a scene-specific stretch rewards."""
    arr = _tiles(tiles)
    return arr.reshape(arr.shape[0], -1).mean(axis=1, keepdims=True).astype(np.float32)


def _gradients(x: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(x, axis=(1, 2))
    mag = np.hypot(gx, gy).reshape(x.shape[0], -1)
    jxx = (gx * gx).sum(axis=(1, 2))
    jyy = (gy * gy).sum(axis=(1, 2))
    jxy = (gx * gy).sum(axis=(1, 2))
    tr = jxx + jyy
    coherence = np.where(tr > 0, np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / np.maximum(tr, 1e-300), 0)
    p50, p90 = np.percentile(mag, [50, 90], axis=1)
    return np.column_stack([mag.mean(axis=1), mag.std(axis=1), p50, p90, coherence])


def gradient_stats(tiles: np.ndarray) -> np.ndarray:
    """Per band: mean, std, median, 90th percentile of ``|∇I|``, and coherence; (n, 5C).

    ``∇I`` by central differences (``np.gradient``). Coherence of the tile's structure
    tensor ``J = Σ ∇I ∇Iᵀ``: ``(λ1 - λ2) / (λ1 + λ2) = sqrt((Jxx - Jyy)² + 4 Jxy²) /
    (Jxx + Jyy)``, 1 for one dominant orientation, near 0 for isotropic texture.
    """
    return _per_band(_gradients, tiles)


def lbp_histogram(tiles: np.ndarray, points: int = 8, radius: float = 1.0) -> np.ndarray:
    """Per band: normalised histogram of LBP^{riu2}_{P,R} codes; (n, C * (P + 2)).

    Neighbour p of pixel (y, x) lies at ``(y - R sin(2πp/P), x + R cos(2πp/P))``, bilinearly
    interpolated; ``s_p = [g_p >= g_c]``; ``U = Σ_p |s_p - s_{p-1}|`` (circular). The code
    is ``Σ_p s_p`` when ``U <= 2`` (a uniform pattern) and ``P + 1`` otherwise (Ojala et
    al. 2002, eq. 10). Only pixels at least ``ceil(R)`` from the border are coded. Invariant
    to gain and offset (so to a scene's linear contrast stretch); to any monotonic
    grey-scale change only where no neighbour is interpolated (e.g. P = 4, R = 1).
    """
    if points < 1 or radius <= 0:
        raise EvaluationError(f"LBP needs points >= 1 and radius > 0, got {points}, {radius}")

    def hist(x: np.ndarray) -> np.ndarray:
        # one implementation, the model's (antssl.ssl.descriptor, float64 like the rest here)
        try:
            return lbp_histogram_torch(torch.from_numpy(x), points, radius).numpy()
        except ValueError as e:
            raise EvaluationError(str(e)) from None

    return _per_band(hist, tiles)


def _quantise(x: np.ndarray, levels: int) -> np.ndarray:
    """Per image min-max quantisation to ``0..levels-1`` (constant images map to 0)."""
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    q = np.floor(levels * (x - lo) / np.where(span > 0, span, 1.0))
    return np.clip(q, 0, levels - 1).astype(np.int64)


def glcm_features(
    tiles: np.ndarray, levels: int = 16, distances: Sequence[int] = (1, 2)
) -> np.ndarray:
    """Per band and distance: GLCM contrast, homogeneity and energy; (n, C * 3 * len(d)).

    Each tile is quantised to ``levels`` grey levels between its own min and max (so a
    scene's contrast stretch does not matter). For offset δ, the symmetric normalised
    co-occurrence matrix is ``P = (M + Mᵀ) / Σ(M + Mᵀ)`` with ``M_ij = #{x : q(x) = i,
    q(x + δ) = j}``; then contrast ``Σ P_ij (i - j)²``, homogeneity ``Σ P_ij / (1 +
    (i - j)²)`` and energy ``sqrt(Σ P_ij²)`` (Haralick et al. 1973; the homogeneity and
    energy forms of scikit-image's ``graycoprops``), each averaged over the four
    directions 0°, 45°, 90° and 135° at distance d.
    """
    if levels < 2 or not distances or min(distances) < 1:
        raise EvaluationError(
            f"GLCM needs levels >= 2 and distances >= 1, got {levels}, {distances}"
        )
    i, j = np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij")
    diff2 = ((i - j) ** 2).ravel()

    def feats(x: np.ndarray) -> np.ndarray:
        q = _quantise(x, levels)
        m, h, w = q.shape
        if max(distances) >= min(h, w):
            raise EvaluationError(f"GLCM distance {max(distances)} too large for {h}x{w} tiles")
        offsets = np.arange(m)[:, None, None] * levels * levels
        cols = []
        for d in distances:
            acc = np.zeros((m, 3))
            for dy, dx in ((0, d), (-d, d), (-d, 0), (-d, -d)):
                a = q[:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
                b = q[:, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
                mm = np.bincount((offsets + a * levels + b).ravel(), minlength=m * levels**2)
                mm = mm.reshape(m, levels, levels).astype(np.float64)
                p = (mm + mm.transpose(0, 2, 1)).reshape(m, -1)
                p = p / p.sum(axis=1, keepdims=True)
                acc += np.column_stack(
                    [p @ diff2, p @ (1.0 / (1.0 + diff2)), np.sqrt((p * p).sum(axis=1))]
                )
            cols.append(acc / 4)
        return np.concatenate(cols, axis=1)

    return _per_band(feats, tiles)


def texture_features(tiles: np.ndarray) -> np.ndarray:
    """Gradient statistics, LBP (8, 1) and (16, 2) histograms and GLCM (d = 1, 2); (n, 39C)."""
    return np.concatenate(
        [
            gradient_stats(tiles),
            lbp_histogram(tiles, 8, 1.0),
            lbp_histogram(tiles, 16, 2.0),
            glcm_features(tiles),
        ],
        axis=1,
    )


def random_backbone_features(
    tiles: np.ndarray,
    model_factory: Callable[[], torch.nn.Module],
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """Embeddings from a freshly initialised model: the "same backbone, random weights" baseline.

    ``model_factory()`` is called under ``torch.manual_seed(seed)`` inside a forked RNG (the
    global torch RNG is left as it was), so equal seeds give equal weights. The model runs
    in eval mode (BatchNorm uses its initial running statistics, so no tile's features
    depend on its batch); ``model.embed(x)`` is used when the model has it (an
    ``SSLModel``), else ``model(x)``. Pass tiles normalised as the trained model sees them.
    Returns (n, D) float32.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_factory()
    return model_features(model, tiles, batch_size, device)


def model_features(
    model: torch.nn.Module, tiles: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> np.ndarray:
    """``model.embed(x)`` (else ``model(x)``) of tiles (n, C, H, W), in eval mode and in
    batches on ``device``: (n, D) float32."""
    arr = _tiles(tiles).astype(np.float32)
    model = model.to(device).eval()
    forward = getattr(model, "embed", model)
    out = []
    with torch.no_grad():
        for s in range(0, arr.shape[0], batch_size):
            x = torch.from_numpy(arr[s : s + batch_size]).to(device)
            out.append(forward(x).float().reshape(x.shape[0], -1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def compute_baselines(
    tiles: np.ndarray,
    model_factory: Callable[[], torch.nn.Module] | None = None,
    seed: int = 0,
    model_tiles: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every baseline of EVAL-PROTOCOL.md on the same tiles: ``{name: (n, d) float32}``.

    Names: ``pca64``, ``intensity``, ``texture``, ``brightness`` and, when a model factory
    is given, ``random_backbone``, computed on ``model_tiles`` (the same tiles normalised as
    the trained model sees them; default ``tiles``).
    """
    out = {
        "pca64": pca_pixels(tiles, 64, seed),
        "intensity": intensity_stats(tiles),
        "texture": texture_features(tiles),
        "brightness": mean_brightness(tiles),
    }
    if model_factory is not None:
        seen = tiles if model_tiles is None else model_tiles
        if np.shape(seen)[0] != np.shape(tiles)[0]:
            raise EvaluationError(f"model_tiles has {np.shape(seen)[0]} tiles, tiles {len(tiles)}")
        out["random_backbone"] = random_backbone_features(seen, model_factory, seed)
    return out
