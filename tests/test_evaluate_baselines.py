"""Baseline extractors: hand-computed LBP and GLCM, shapes, determinism, separation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from antssl.evaluate import EvaluationError
from antssl.evaluate.baselines import (
    compute_baselines,
    glcm_features,
    gradient_stats,
    intensity_stats,
    lbp_histogram,
    mean_brightness,
    pca_pixels,
    random_backbone_features,
    texture_features,
)
from antssl.evaluate.retrieval import retrieval_precision
from antssl.ssl.backbones import build_backbone


def _stripes_and_noise(n: int, size: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n striped tiles (random orientation, period, phase) and n white-noise tiles.

    Both sets get the same random per-tile gain and offset, so brightness carries no label.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    tiles = []
    for _ in range(n):
        theta, period, phase = rng.uniform(0, np.pi), rng.uniform(4, 8), rng.uniform(0, 6.3)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        tiles.append(np.sin(2 * np.pi * u / period + phase) + 0.1 * rng.normal(size=u.shape))
    tiles += [rng.normal(size=(size, size)) * 0.7 for _ in range(n)]
    gain, offset = rng.uniform(0.5, 2.0, 2 * n), rng.uniform(-3, 3, 2 * n)
    x = np.stack(tiles) * gain[:, None, None] + offset[:, None, None]
    return x[:, None].astype(np.float32), np.repeat([1, 0], n)


def test_lbp_hand_computed_codes() -> None:
    flat = np.ones((1, 1, 5, 5))
    np.testing.assert_allclose(lbp_histogram(flat, 8, 1.0)[0], np.eye(10)[8])  # all s_p = 1
    # P = 4, R = 1: neighbours right, up, left, down of the centre pixel (value 1)
    corner = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=float)  # 0,1,1,0: code 2
    line = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=float)  # 1,0,1,0: U=4 -> P+1
    np.testing.assert_allclose(lbp_histogram(corner[None], 4, 1.0)[0], np.eye(6)[2])
    np.testing.assert_allclose(lbp_histogram(line[None], 4, 1.0)[0], np.eye(6)[5])
    # P = 8: interpolated diagonals of [[0,0,0],[0,1,1],[0,0,0]] are 0.29 < 1 -> code 1
    spur = np.array([[0, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=float)
    np.testing.assert_allclose(lbp_histogram(spur[None], 8, 1.0)[0], np.eye(10)[1])
    # invariant to gain and offset; to any monotonic change where no interpolation is needed
    x, _ = _stripes_and_noise(3)
    np.testing.assert_allclose(lbp_histogram(x), lbp_histogram(3.0 * x + 7.0), atol=1e-6)
    np.testing.assert_allclose(lbp_histogram(x, 4), lbp_histogram(np.exp(x / 3), 4), atol=1e-6)


def test_glcm_hand_computed() -> None:
    tile = np.array([[[[0.0, 1.0], [0.0, 1.0]]]])
    # 0°: pairs (0,1) twice; 90°: (0,0), (1,1); 45°: (0,1); 135°: (1,0)
    # contrast (1 + 0 + 1 + 1) / 4; homogeneity (.5 + 1 + .5 + .5) / 4; energy sqrt(.5) each
    got = glcm_features(tile, levels=2, distances=(1,))
    np.testing.assert_allclose(got[0], [0.75, 0.625, np.sqrt(0.5)], rtol=1e-6)
    with pytest.raises(EvaluationError, match="too large"):
        glcm_features(tile, levels=2, distances=(2,))


def test_shapes_dtypes_and_determinism() -> None:
    x = np.random.default_rng(1).normal(size=(12, 2, 16, 16)).astype(np.float32)
    expected = {
        "pca": (pca_pixels(x, 64), (12, 12)),
        "intensity": (intensity_stats(x), (12, 14)),
        "gradient": (gradient_stats(x), (12, 10)),
        "lbp": (lbp_histogram(x), (12, 20)),
        "glcm": (glcm_features(x), (12, 12)),
        "texture": (texture_features(x), (12, 78)),
        "brightness": (mean_brightness(x), (12, 1)),
    }
    for name, (feat, shape) in expected.items():
        assert feat.shape == shape and feat.dtype == np.float32, name
        assert np.isfinite(feat).all(), name
    np.testing.assert_array_equal(pca_pixels(x, 5, seed=3), pca_pixels(x, 5, seed=3))
    np.testing.assert_allclose(lbp_histogram(x).reshape(12, 2, 10).sum(axis=2), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mean_brightness(x)[:, 0], x.mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(
        intensity_stats(x[:, :1])[:, 0], x[:, 0].mean(axis=(1, 2)), rtol=1e-5
    )
    with pytest.raises(EvaluationError, match="NaN"):
        intensity_stats(np.full((1, 1, 4, 4), np.nan))


def test_texture_separates_stripes_from_noise_better_than_brightness() -> None:
    x, y = _stripes_and_noise(20)
    group = np.tile(np.arange(4), 10)
    tex = texture_features(x)
    tex = (tex - tex.mean(axis=0)) / (tex.std(axis=0) + 1e-12)
    r_tex = retrieval_precision(tex, y, k=5, group=group)
    r_bright = retrieval_precision(mean_brightness(x), y, k=5, group=group, metric="euclidean")
    assert r_tex.balanced > 0.95
    assert r_bright.balanced < 0.75
    assert r_tex.balanced > r_bright.balanced + 0.25
    coherence = gradient_stats(x)[:, 4]
    assert coherence[y == 1].min() > coherence[y == 0].max()


def _factory() -> torch.nn.Module:
    return build_backbone("resnet_small", in_bands=1, width=4, depth=1, embed_dim=8)


def test_random_backbone_is_seeded_and_leaves_global_rng() -> None:
    x, _ = _stripes_and_noise(3, size=16)
    state = torch.get_rng_state()
    a = random_backbone_features(x, _factory, seed=0, batch_size=4)
    b = random_backbone_features(x, _factory, seed=0)
    c = random_backbone_features(x, _factory, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    assert a.shape == (6, 8) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, c)
    feats = compute_baselines(x, _factory)
    assert list(feats) == ["pca64", "intensity", "texture", "brightness", "random_backbone"]
    assert all(f.shape[0] == 6 and f.dtype == np.float32 for f in feats.values())
