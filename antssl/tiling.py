"""Tiling arithmetic: where overlapping square tiles lie and how much of each is coastal.

Pure numpy, no I/O. A scene of ``H × W`` pixels holds tiles of ``size`` px
every ``stride`` px, each fully inside the scene::

    n_rows = floor((H - size) / stride) + 1      (0 when H < size)
    n_cols = floor((W - size) / stride) + 1
    tile (i, j) covers rows [i·stride, i·stride + size) and cols [j·stride, j·stride + size)

Fractions are computed exactly on a grid of *cells* of ``c = gcd(size, stride)``
pixels: every tile is a union of ``(size/c)²`` whole cells, so per-cell pixel
counts summed with an integral image give each tile's exact count in O(1).
"""

from __future__ import annotations

import math

import numpy as np


def grid_shape(height: int, width: int, size: int, stride: int) -> tuple[int, int]:
    """Tile rows and columns: ``floor((L - size) / stride) + 1`` per axis (0 if L < size)."""
    if size <= 0 or stride <= 0:
        raise ValueError(f"size and stride must be > 0, got size={size}, stride={stride}")

    def n(length: int) -> int:
        return 0 if length < size else (length - size) // stride + 1

    return n(height), n(width)


def cell_size(size: int, stride: int) -> int:
    """Edge of the cells tiles are made of: ``gcd(size, stride)`` px."""
    return math.gcd(size, stride)


def cell_counts(mask: np.ndarray, cell: int) -> np.ndarray:
    """Count true pixels per ``cell × cell`` block: bool (h, w) → int32 (h // cell, w // cell).

    ``h`` and ``w`` must be multiples of ``cell``.
    """
    h, w = mask.shape
    if h % cell or w % cell:
        raise ValueError(f"mask shape {mask.shape} is not a multiple of the cell size {cell}")
    return mask.reshape(h // cell, cell, w // cell, cell).sum(axis=(1, 3), dtype=np.int32)


def window_sums(
    cells: np.ndarray, size_cells: int, stride_cells: int, n_rows: int, n_cols: int
) -> np.ndarray:
    """Sum of ``cells`` over every tile window: (n_rows, n_cols) int64.

    Tile (i, j) covers cells ``[i·s, i·s + k) × [j·s, j·s + k)`` with ``k = size_cells``,
    ``s = stride_cells``; sums come from an integral image ``I`` as
    ``I[r1, c1] - I[r0, c1] - I[r1, c0] + I[r0, c0]``.
    """
    integral = np.zeros((cells.shape[0] + 1, cells.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(cells, axis=0, dtype=np.int64), axis=1, out=integral[1:, 1:])
    r0 = np.arange(n_rows) * stride_cells
    c0 = np.arange(n_cols) * stride_cells
    r1, c1 = r0 + size_cells, c0 + size_cells
    return (
        integral[np.ix_(r1, c1)]
        - integral[np.ix_(r0, c1)]
        - integral[np.ix_(r1, c0)]
        + integral[np.ix_(r0, c0)]
    )


def covered_cells(
    keep: np.ndarray, size_cells: int, stride_cells: int, shape: tuple[int, int]
) -> np.ndarray:
    """Cells covered by at least one kept tile: bool ``shape`` (cell grid).

    ``keep`` is bool (n_rows, n_cols). Uses a 2-D difference array, so the cost is
    O(tiles + cells), not O(tiles · size²).
    """
    diff = np.zeros((shape[0] + 1, shape[1] + 1), dtype=np.int32)
    ii, jj = np.nonzero(keep)
    r0, c0 = ii * stride_cells, jj * stride_cells
    r1, c1 = r0 + size_cells, c0 + size_cells
    np.add.at(diff, (r0, c0), 1)
    np.add.at(diff, (r0, c1), -1)
    np.add.at(diff, (r1, c0), -1)
    np.add.at(diff, (r1, c1), 1)
    return np.cumsum(np.cumsum(diff, axis=0), axis=1)[: shape[0], : shape[1]] > 0


def read_rectangles(
    rows: np.ndarray, cols: np.ndarray, size: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """Rectangles covering exactly the union of tile windows (at cell granularity).

    ``rows``/``cols`` are the tiles' pixel offsets (all multiples of ``stride``).
    Returns ``(row0, col0, height, width)`` pixel rectangles, relative to the scene,
    that do not overlap: per cell-row the union of the tiles' column intervals is
    split into runs, and consecutive cell-rows with the same runs are merged. Reading
    them reads every pixel of the union once and nothing else.
    """
    if len(rows) == 0:
        return []
    cell = cell_size(size, stride)
    k = size // cell
    rmin, cmin = int(rows.min()), int(cols.min())
    keep_shape = ((int(rows.max()) - rmin) // stride + 1, (int(cols.max()) - cmin) // stride + 1)
    keep = np.zeros(keep_shape, dtype=bool)
    keep[(rows - rmin) // stride, (cols - cmin) // stride] = True
    s = stride // cell
    grid = ((keep_shape[0] - 1) * s + k, (keep_shape[1] - 1) * s + k)
    cov = covered_cells(keep, k, s, grid)
    rects: list[tuple[int, int, int, int]] = []
    open_runs: dict[tuple[int, int], int] = {}  # (c0, c1) -> start cell row
    for r in range(grid[0] + 1):
        runs = _runs(cov[r]) if r < grid[0] else set()
        for run in list(open_runs):
            if run not in runs:
                start = open_runs.pop(run)
                rects.append(
                    (
                        rmin + start * cell,
                        cmin + run[0] * cell,
                        (r - start) * cell,
                        (run[1] - run[0]) * cell,
                    )
                )
        for run in runs:
            open_runs.setdefault(run, r)
    return sorted(rects)


def _runs(line: np.ndarray) -> set[tuple[int, int]]:
    """Half-open [start, end) runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], line, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return {(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)}
