"""Tiling arithmetic against the closed form and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from antssl import tiling


@pytest.mark.parametrize(
    ("length", "size", "stride", "expected"),
    [
        (256, 64, 32, 7),
        (255, 64, 32, 6),
        (64, 64, 32, 1),
        (63, 64, 32, 0),
        (100, 10, 10, 10),
        (101, 10, 3, 31),
    ],
)
def test_grid_shape_closed_form(length: int, size: int, stride: int, expected: int) -> None:
    assert tiling.grid_shape(length, length, size, stride) == (expected, expected)
    # brute force: every start s with s + size <= length, s a multiple of stride
    assert len([s for s in range(0, length, stride) if s + size <= length]) == expected


def test_grid_shape_rejects_bad_stride() -> None:
    with pytest.raises(ValueError, match="stride"):
        tiling.grid_shape(100, 100, 10, 0)


def test_window_sums_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    size, stride, h, w = 12, 8, 70, 90
    cell = tiling.cell_size(size, stride)
    n_rows, n_cols = tiling.grid_shape(h, w, size, stride)
    mask = rng.random((h, w)) > 0.6
    used = mask[: (n_rows - 1) * stride + size, : (n_cols - 1) * stride + size]
    sums = tiling.window_sums(
        tiling.cell_counts(used, cell), size // cell, stride // cell, n_rows, n_cols
    )
    brute = np.array(
        [
            [
                mask[i * stride : i * stride + size, j * stride : j * stride + size].sum()
                for j in range(n_cols)
            ]
            for i in range(n_rows)
        ]
    )
    np.testing.assert_array_equal(sums, brute)
    # edge tiles: the last row/col of tiles ends inside the scene
    assert (n_rows - 1) * stride + size <= h and n_rows * stride + size > h


def test_covered_cells_is_union_of_windows() -> None:
    rng = np.random.default_rng(1)
    keep = rng.random((6, 7)) > 0.5
    k, s = 4, 2
    shape = ((6 - 1) * s + k, (7 - 1) * s + k)
    brute = np.zeros(shape, dtype=bool)
    for i, j in zip(*np.nonzero(keep), strict=True):
        brute[i * s : i * s + k, j * s : j * s + k] = True
    np.testing.assert_array_equal(tiling.covered_cells(keep, k, s, shape), brute)


@pytest.mark.parametrize(("size", "stride"), [(64, 32), (64, 64), (48, 32), (64, 16)])
def test_read_rectangles_cover_union_exactly_once(size: int, stride: int) -> None:
    rng = np.random.default_rng(size + stride)
    n = 12
    keep = rng.random((n, n)) > 0.55
    ii, jj = np.nonzero(keep)
    rows, cols = ii * stride + 3 * stride, jj * stride + stride
    extent = (n + 4) * stride + size
    union = np.zeros((extent, extent), dtype=bool)
    for r, c in zip(rows, cols, strict=True):
        union[r : r + size, c : c + size] = True
    hits = np.zeros((extent, extent), dtype=np.int32)
    for r0, c0, h, w in tiling.read_rectangles(rows, cols, size, stride):
        hits[r0 : r0 + h, c0 : c0 + w] += 1
    assert hits.max() == 1, "a pixel is read twice"
    np.testing.assert_array_equal(hits.astype(bool), union)


def test_overlap_fraction_of_neighbours() -> None:
    """Horizontally adjacent tiles at stride = size/2 share exactly half their pixels."""
    size, stride = 64, 32
    a = np.zeros((64, 200), dtype=bool)
    b = np.zeros((64, 200), dtype=bool)
    a[:, 0:size] = True
    b[:, stride : stride + size] = True
    assert (a & b).sum() / a.sum() == 0.5
