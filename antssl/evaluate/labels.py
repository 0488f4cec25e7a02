"""Tile labels from label rasters aligned with scenes (pure numpy).

A label raster shares the scene's pixel grid, so the window ``[row:row+size, col:col+size]``
of the raster labels the tile cut at ``(row, col)`` (:func:`cut_windows`). Two kinds:

- class rasters (one integer class per pixel, with an ignore value): :func:`majority_labels`
  gives each tile its majority class and that class's purity;
- binary masks (0/255 or 0/1, any non-zero value is positive): :func:`positive_fraction`
  and :func:`binary_labels` give the positive fraction ``f`` and a two-threshold label.

Every labelling returns label ``-1`` for a tile that is left out (ambiguous, too few valid
pixels); the metrics in :mod:`antssl.evaluate.retrieval` and :mod:`antssl.evaluate.metrics`
ignore such rows. The defaults of :func:`binary_labels` are EVAL-PROTOCOL.md's: fractured
when ``f >= 0.05``, unfractured when ``f < 0.005``, left out in between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from antssl.evaluate import EvaluationError

__all__ = [
    "TileLabels",
    "binary_labels",
    "cut_windows",
    "groups_with_positives",
    "majority_labels",
    "nodata_free",
    "positive_fraction",
]

UNLABELLED = -1
"""Label of a tile that is left out of every metric."""


@dataclass(frozen=True)
class TileLabels:
    """Per-tile labels, all shape (n,).

    Attributes:
        label: int64 class, or ``-1`` (:data:`UNLABELLED`) for a tile left out.
        score: float64; the majority class's purity (class rasters) or the positive
            fraction ``f`` (binary masks); NaN where a tile has no valid pixel.
        valid: int64 number of pixels that were counted (not ignored) per tile.
    """

    label: np.ndarray
    score: np.ndarray
    valid: np.ndarray

    def counts(self) -> dict[int, int]:
        """Number of tiles per label (``-1`` included when present)."""
        values, n = np.unique(self.label, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, n, strict=True)}


def _windows(windows: np.ndarray, name: str = "windows") -> np.ndarray:
    arr = np.asarray(windows)
    if arr.ndim != 3:
        raise EvaluationError(f"{name} must have shape (n, H, W), got {arr.shape}")
    return arr


def cut_windows(raster: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Windows ``raster[r:r+size, c:c+size]`` for each tile offset ``(r, c)``.

    Args:
        raster: (H, W) label raster on the scene's pixel grid (any dtype).
        rows, cols: (n,) integer pixel offsets of the tile windows (catalog ``row``/``col``).
        size: tile edge in pixels.

    Returns:
        (n, size, size) array of ``raster``'s dtype (a copy).

    Raises:
        EvaluationError: a window reaches outside the raster, or shapes disagree.
    """
    raster = np.asarray(raster)
    r = np.asarray(rows, dtype=np.int64).ravel()
    c = np.asarray(cols, dtype=np.int64).ravel()
    if raster.ndim != 2 or r.shape != c.shape or size < 1:
        raise EvaluationError(
            f"need a 2-D raster, rows and cols of equal length and size >= 1; got raster "
            f"{raster.shape}, {r.shape[0]} rows, {c.shape[0]} cols, size={size}"
        )
    h, w = raster.shape
    bad = (r < 0) | (c < 0) | (r + size > h) | (c + size > w)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EvaluationError(
            f"window {i} at row={r[i]}, col={c[i]}, size={size} reaches outside the "
            f"{h}x{w} label raster; is the raster aligned with the scene?"
        )
    ii = r[:, None, None] + np.arange(size)[None, :, None]
    jj = c[:, None, None] + np.arange(size)[None, None, :]
    return raster[ii, jj]


def nodata_free(tiles: np.ndarray, nodata: float = 0) -> np.ndarray:
    """Tiles holding no nodata pixel in any band: (n,) bool.

    EVAL-PROTOCOL.md keeps only these, since a tile at the ice front is otherwise
    recognisable by its nodata fraction alone. ``tiles`` is (n, C, H, W) or (n, H, W);
    non-finite values count as nodata too.
    """
    arr = np.asarray(tiles)
    if arr.ndim not in (3, 4):
        raise EvaluationError(f"tiles must be (n, C, H, W) or (n, H, W), got {arr.shape}")
    flat = arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:])))
    bad = flat == nodata
    if np.issubdtype(flat.dtype, np.floating):
        bad |= ~np.isfinite(flat)
    return np.asarray(~bad.any(axis=1))


def majority_labels(
    windows: np.ndarray,
    ignore: int | None = None,
    min_valid: int = 1,
    min_purity: float = 0.0,
) -> TileLabels:
    """Majority class per tile and its purity.

    For tile t with valid pixels V_t (pixels != ``ignore``) and n_tc of them in class c:
    ``label_t = argmax_c n_tc`` (ties go to the smallest class) and
    ``purity_t = max_c n_tc / |V_t|``. The label is ``-1`` when ``|V_t| < min_valid`` or
    ``purity_t < min_purity``.

    Args:
        windows: (n, H, W) integer class per pixel; classes must be >= 0 (``ignore`` aside).
        ignore: the ignore / nodata value, or None when every pixel counts.
        min_valid: fewest valid pixels a labelled tile needs (>= 1).
        min_purity: lowest purity a labelled tile needs, in [0, 1].
    """
    arr = _windows(windows)
    if not np.issubdtype(arr.dtype, np.integer):
        raise EvaluationError(f"class windows must be integers, got dtype {arr.dtype}")
    if min_valid < 1 or not 0.0 <= min_purity <= 1.0:
        raise EvaluationError(
            f"need min_valid >= 1 and 0 <= min_purity <= 1, got {min_valid}, {min_purity}"
        )
    n = arr.shape[0]
    flat = arr.reshape(n, arr.shape[1] * arr.shape[2]).astype(np.int64)
    valid_px = np.ones_like(flat, dtype=bool) if ignore is None else flat != ignore
    if (flat[valid_px] < 0).any():
        raise EvaluationError(
            f"class values must be >= 0 (found {int(flat[valid_px].min())}); "
            "pass the nodata value as ignore="
        )
    n_classes = int(flat[valid_px].max()) + 1 if valid_px.any() else 1
    tile = np.broadcast_to(np.arange(n)[:, None], flat.shape)
    counts = np.bincount(
        tile[valid_px] * n_classes + flat[valid_px], minlength=n * n_classes
    ).reshape(n, n_classes)
    valid = counts.sum(axis=1)
    label = counts.argmax(axis=1).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = np.where(valid > 0, counts.max(axis=1) / np.maximum(valid, 1), np.nan)
    keep = (valid >= min_valid) & (purity >= min_purity)
    label[~keep] = UNLABELLED
    return TileLabels(label, purity.astype(np.float64), valid.astype(np.int64))


def positive_fraction(masks: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Positive fraction per tile of binary masks: (n,) float64.

    ``f_t = |{p in V_t : m_p != 0}| / |V_t|`` where V_t is every pixel of tile t, or the
    pixels where ``valid`` (same shape as ``masks``, bool) is True. Masks may be 0/255 or
    0/1 (any non-zero value is positive). NaN where a tile has no valid pixel.
    """
    arr = _windows(masks, "masks")
    n = arr.shape[0]
    pos = arr.reshape(n, arr.shape[1] * arr.shape[2]) != 0
    if valid is None:
        n_valid = np.full(n, pos.shape[1], dtype=np.int64)
    else:
        v = np.asarray(valid, dtype=bool)
        if v.shape != arr.shape:
            raise EvaluationError(f"valid must match masks {arr.shape}, got {v.shape}")
        v = v.reshape(pos.shape)
        pos &= v
        n_valid = v.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_valid > 0, pos.sum(axis=1) / np.maximum(n_valid, 1), np.nan)


def binary_labels(
    masks: np.ndarray,
    positive_at: float = 0.05,
    negative_below: float = 0.005,
    valid: np.ndarray | None = None,
) -> TileLabels:
    """Two-threshold binary tile labels from masks (EVAL-PROTOCOL.md defaults).

    With ``f`` from :func:`positive_fraction`: label 1 when ``f >= positive_at``, 0 when
    ``f < negative_below``, ``-1`` otherwise (and where ``f`` is NaN). The gap between the
    thresholds leaves out tiles whose label is unclear (a few marked pixels).
    """
    if not 0.0 <= negative_below <= positive_at <= 1.0:
        raise EvaluationError(
            f"need 0 <= negative_below <= positive_at <= 1, got {negative_below}, {positive_at}"
        )
    f = positive_fraction(masks, valid)
    label = np.full(f.shape, UNLABELLED, dtype=np.int64)
    label[f < negative_below] = 0
    label[f >= positive_at] = 1
    _, h, w = np.shape(masks)
    n_valid = (
        np.full(f.shape, h * w, dtype=np.int64)
        if valid is None
        else np.asarray(valid, dtype=bool).reshape(f.size, h * w).sum(axis=1).astype(np.int64)
    )
    return TileLabels(label, f, n_valid)


def groups_with_positives(fraction: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Tiles whose group (scene) has at least one positive pixel in any tile: (n,) bool.

    EVAL-PROTOCOL.md scores only scenes whose mask is not empty: an empty mask does not
    mean "no fractures". ``fraction`` is :func:`positive_fraction` per tile; this judges a
    scene by its tiles only, so when the whole mask raster is at hand, testing
    ``mask.any()`` per scene is the stricter form of the same rule.
    """
    f = np.asarray(fraction, dtype=np.float64).ravel()
    g = np.asarray(group).ravel()
    if f.shape != g.shape:
        raise EvaluationError(f"fraction {f.shape} and group {g.shape} must have the same shape")
    names, inverse = np.unique(g, return_inverse=True)
    has = np.zeros(len(names), dtype=bool)
    np.logical_or.at(has, inverse, np.nan_to_num(f) > 0)
    return has[inverse]
