"""Tile labels from label windows: majority class, purity and two-threshold binary labels."""

from __future__ import annotations

import numpy as np
import pytest

from antssl.evaluate import EvaluationError
from antssl.evaluate.labels import (
    binary_labels,
    cut_windows,
    groups_with_positives,
    majority_labels,
    nodata_free,
    positive_fraction,
)


def test_majority_labels_hand_computed() -> None:
    w = np.array(
        [
            [[1, 1], [2, 255]],  # 3 valid: class 1 twice -> purity 2/3
            [[255, 255], [255, 255]],  # nothing valid
            [[0, 3], [3, 0]],  # tie 0/3 -> smallest class, purity 1/2
            [[4, 4], [4, 4]],
        ],
        dtype=np.uint8,
    )
    lab = majority_labels(w, ignore=255)
    np.testing.assert_array_equal(lab.label, [1, -1, 0, 4])
    np.testing.assert_allclose(lab.score, [2 / 3, np.nan, 0.5, 1.0])
    np.testing.assert_array_equal(lab.valid, [3, 0, 4, 4])
    assert lab.counts() == {-1: 1, 0: 1, 1: 1, 4: 1}
    strict = majority_labels(w, ignore=255, min_purity=0.6, min_valid=4)
    np.testing.assert_array_equal(strict.label, [-1, -1, -1, 4])


def test_majority_labels_rejects_negative_classes_and_floats() -> None:
    with pytest.raises(EvaluationError, match="ignore="):
        majority_labels(np.full((1, 2, 2), -9))
    with pytest.raises(ValueError, match="integers"):
        majority_labels(np.zeros((1, 2, 2), dtype=np.float32))


@pytest.mark.parametrize("positive", [1, 255])
def test_binary_labels_thresholds(positive: int) -> None:
    masks = np.zeros((5, 20, 20), dtype=np.uint8)  # 400 px per tile
    for t, count in enumerate([20, 1, 2, 19, 400]):
        masks[t].ravel()[:count] = positive
    lab = binary_labels(masks)  # fractured f >= 0.05, unfractured f < 0.005
    np.testing.assert_allclose(lab.score, [0.05, 0.0025, 0.005, 0.0475, 1.0])
    np.testing.assert_array_equal(lab.label, [1, 0, -1, -1, 1])
    np.testing.assert_array_equal(lab.valid, [400] * 5)


def test_positive_fraction_with_valid_pixels() -> None:
    masks = np.array([[[255, 0], [255, 0]], [[0, 0], [0, 0]]])
    valid = np.array([[[True, True], [False, False]], [[False] * 2] * 2])
    np.testing.assert_allclose(positive_fraction(masks, valid), [0.5, np.nan])
    lab = binary_labels(masks, valid=valid)
    np.testing.assert_array_equal(lab.label, [1, -1])
    np.testing.assert_array_equal(lab.valid, [2, 0])


def test_nodata_free_and_cut_windows() -> None:
    raster = np.arange(36).reshape(6, 6)
    win = cut_windows(raster, np.array([0, 2]), np.array([3, 1]), 3)
    np.testing.assert_array_equal(win[0], raster[0:3, 3:6])
    np.testing.assert_array_equal(win[1], raster[2:5, 1:4])
    assert nodata_free(win).tolist() == [True, True]
    assert nodata_free(win[:, None]).tolist() == [True, True]
    assert nodata_free(np.array([[[0.5, np.nan]]])).tolist() == [False]
    assert nodata_free(raster[None, :3, :3]).tolist() == [False]  # holds the 0 at (0, 0)
    with pytest.raises(EvaluationError, match="outside"):
        cut_windows(raster, np.array([4]), np.array([0]), 3)


def test_groups_with_positives() -> None:
    f = np.array([0.0, 0.2, 0.0, 0.0, np.nan])
    g = np.array(["a", "a", "b", "b", "c"])
    assert groups_with_positives(f, g).tolist() == [True, True, False, False, False]
