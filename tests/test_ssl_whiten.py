"""Post-hoc embedding transforms: fitted properties, JSON round trip, unseen scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from antssl.errors import ConfigError
from antssl.ssl.whiten import Whitening, fit_whitening


def planted(n_per: int = 60, scenes: int = 5, d: int = 8, seed: int = 0):
    """Rows = class signal on axis 0 + a per-scene offset along a random direction + noise."""
    rng = np.random.default_rng(seed)
    nuisance = rng.normal(size=d)
    nuisance /= np.linalg.norm(nuisance)
    x, s, y = [], [], []
    for k in range(scenes):
        cls = rng.integers(0, 2, n_per)
        rows = rng.normal(0, 0.3, (n_per, d)) + 3.0 * rng.normal() * nuisance
        rows[:, 0] += 2.0 * cls
        x.append(rows)
        s += [f"scene_{k}"] * n_per
        y.append(cls)
    return np.concatenate(x).astype(np.float32), np.array(s), np.concatenate(y), nuisance


def test_global_whitening_gives_identity_covariance() -> None:
    x, _, _, _ = planted()
    w = fit_whitening(x, center="global", shrink=1e-6)
    z = w.apply(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(x.shape[1]), atol=1e-3)
    assert fit_whitening(x, dims=3).apply(x).shape == (len(x), 3)


def test_scene_centring_zeroes_each_scene_mean_and_unseen_scenes_get_the_global_mean() -> None:
    x, s, _, _ = planted()
    w = fit_whitening(x, s, center="scene", whiten=False)
    z = w.apply(x, s)
    for sid in np.unique(s):
        np.testing.assert_allclose(z[s == sid].mean(axis=0), 0, atol=1e-5)
    unseen = w.apply(x[:3], ["elsewhere"] * 3)
    np.testing.assert_allclose(unseen, x[:3] - x.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(w.apply(x[:3]), unseen, atol=1e-6)  # scene=None: unknown


def test_nuisance_projection_removes_the_scene_direction_for_any_row() -> None:
    x, s, y, nuisance = planted()
    w = fit_whitening(x, s, center="global", nuisance_dims=1, whiten=False)
    u = w.nuisance[:, 0]
    assert abs(abs(float(u @ nuisance)) - 1.0) < 0.05  # found the planted direction
    z = w.apply(x)  # no scene ids needed
    scene_means = np.stack([z[s == k].mean(axis=0) for k in np.unique(s)])
    assert np.abs(scene_means @ nuisance).max() < 0.3  # offsets up to ~3 before
    # the class signal survives: class means still differ along axis 0
    assert z[y == 1, 0].mean() - z[y == 0, 0].mean() > 1.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"center": "none", "whiten": True},
        {"center": "global", "whiten": True, "dims": 4},
        {"center": "scene", "whiten": True},
        {"center": "global", "nuisance_dims": 2, "whiten": True},
        {"center": "scene", "nuisance_dims": 1, "whiten": False},
    ],
)
def test_round_trip_through_json(kwargs: dict) -> None:
    x, s, _, _ = planted(d=6)
    w = fit_whitening(x, s, **kwargs)
    doc = json.loads(json.dumps(w.to_dict()))
    back = Whitening.from_dict(doc)
    assert back.center == w.center and back.dim_in == 6 and back.dim_out == w.dim_out
    assert back.n_fit == len(x) and sorted(back.scene_means) == sorted(w.scene_means)
    probe = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    ids = ["scene_1"] * 3 + ["new"] * 4
    np.testing.assert_array_equal(back.apply(probe, ids), w.apply(probe, ids))
    np.testing.assert_array_equal(back.apply(x, s), w.apply(x, s))
    assert len(json.dumps(doc)) < 4000  # small enough for Zarr attrs


def test_bad_inputs_and_records_are_refused() -> None:
    x, s, _, _ = planted(d=4)
    with pytest.raises(ConfigError, match="scene id"):
        fit_whitening(x, center="scene")
    with pytest.raises(ConfigError, match="at least 6 scenes"):
        fit_whitening(x, s, nuisance_dims=5)
    with pytest.raises(ConfigError, match="center"):
        fit_whitening(x, center="median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="finite"):
        fit_whitening(np.full((4, 2), np.nan))
    w = fit_whitening(x)
    with pytest.raises(ConfigError, match=r"\(n, 4\)"):
        w.apply(np.zeros((2, 5)))
    with pytest.raises(ConfigError, match="version"):
        Whitening.from_dict({"version": 99})
    doc = w.to_dict()
    doc["mean"] = {"shape": [4], "f32le": "not base64!"}
    with pytest.raises(ConfigError, match="mean"):
        Whitening.from_dict(doc)
