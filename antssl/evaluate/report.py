"""Evaluation reports: a Markdown table of metrics x methods and PNG figures (matplotlib Agg).

Figures are returned as PNG bytes, not written: the caller stores them under the workspace
through :mod:`antssl.storage` (the workspace may be ``s3://``). Matplotlib is driven through
``Figure`` + ``FigureCanvasAgg`` directly, so no pyplot state or display backend is touched.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from antssl.evaluate import EvaluationError

__all__ = ["Cell", "metrics_table", "projection_png", "query_strip_png"]

Cell = float | tuple[float, str] | None
"""A table cell: a value, or ``(value, counts)`` as the results' ``figures()`` give."""

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
_UNLABELLED = "#b0b0b0"


def _cell(value: Cell, digits: int) -> str:
    if value is None:
        return ""
    v, counts = value if isinstance(value, tuple) else (value, "")
    text = "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"
    if counts:
        text += f" ({counts})"
    return text.replace("|", "\\|")


def metrics_table(
    results: Mapping[str, Mapping[str, Cell]],
    metrics: Sequence[str] | None = None,
    digits: int = 3,
) -> str:
    """A GitHub-flavoured Markdown table: one row per metric, one column per method.

    Args:
        results: ``{method: {metric: value | (value, counts)}}``, e.g. built by merging
            ``RetrievalResult.figures()``, ``ClusterScores.figures()`` and
            ``ProbeResult.figures()`` per method. Counts are printed beside each value.
        metrics: row order (default: first appearance across methods).
        digits: decimals of the values; NaN prints as ``n/a``, a missing cell as blank.

    Returns:
        The table, ending with a newline.
    """
    if not results:
        raise EvaluationError("metrics_table needs at least one method")
    methods = list(results)
    if metrics is None:
        metrics = list(dict.fromkeys(m for method in methods for m in results[method]))
    lines = [
        "| metric | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for metric in metrics:
        cells = [_cell(results[m].get(metric), digits) for m in methods]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _png(fig: Figure, dpi: int) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _names(labels: np.ndarray, names: Mapping[int, str] | None) -> dict[int, str]:
    return {int(c): (names or {}).get(int(c), str(int(c))) for c in np.unique(labels)}


def projection_png(
    features: np.ndarray,
    labels: np.ndarray,
    names: Mapping[int, str] | None = None,
    title: str = "",
    max_points: int = 5000,
    seed: int = 0,
    dpi: int = 110,
) -> bytes:
    """Scatter of the features' first two principal components, coloured by label (PNG).

    Features are z-scored, then projected by PCA to 2-D (axis labels give the explained
    variance). Above ``max_points`` rows a fixed-seed random subset is drawn; rows with
    label < 0 are drawn grey, underneath. The legend counts the points of each class.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).ravel().astype(np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise EvaluationError(f"need features (n >= 2, d) and n labels, got {x.shape}, {y.shape}")
    if x.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False))
        x, y = x[keep], y[keep]
    z = StandardScaler().fit_transform(x)
    if z.shape[1] >= 2:
        pca = PCA(n_components=2, random_state=seed).fit(z)
        xy, var = pca.transform(z), pca.explained_variance_ratio_
    else:
        xy, var = np.column_stack([z[:, 0], np.zeros(len(z))]), np.array([1.0, 0.0])
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    label_names = _names(y, names)
    for i, (c, name) in enumerate(sorted(label_names.items())):
        m = y == c
        colour = _UNLABELLED if c < 0 else _PALETTE[i % len(_PALETTE)]
        ax.scatter(
            xy[m, 0], xy[m, 1], s=6, alpha=0.6, c=colour, label=f"{name} (n={int(m.sum())})", lw=0
        )
    ax.set_xlabel(f"PC1 ({100 * var[0]:.1f}% var)")
    ax.set_ylabel(f"PC2 ({100 * var[1]:.1f}% var)")
    ax.set_title(title or f"PCA of {x.shape[1]}-D features")
    ax.legend(loc="best", fontsize=8, markerscale=2)
    fig.tight_layout()
    return _png(fig, dpi)


def _stretch(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [2, 98])
    return np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)


def query_strip_png(
    tiles: np.ndarray,
    queries: Sequence[int],
    answers: np.ndarray,
    labels: np.ndarray | None = None,
    group: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    names: Mapping[int, str] | None = None,
    band: int = 0,
    title: str = "",
    dpi: int = 90,
) -> bytes:
    """A grid of example queries (first column) and their answers, best first (PNG).

    Args:
        tiles: (n, C, H, W) or (n, H, W) pixels; ``band`` is shown, each tile stretched
            between its own 2nd and 98th percentiles.
        queries: (q,) row of each query.
        answers: (q, k) rows of the answers (as :func:`~antssl.evaluate.retrieval.
            nearest_neighbours` returns; -1 cells are left empty).
        labels, group: (n,) class and scene per row, printed under each tile; with labels
            an answer's frame is green when its class matches the query's, red otherwise.
        scores: (q, k) similarity of each answer, printed above it.
    """
    arr = np.asarray(tiles)
    arr = arr[:, band] if arr.ndim == 4 else arr
    q = np.asarray(queries, dtype=np.int64).ravel()
    ans = np.asarray(answers, dtype=np.int64).reshape(q.size, -1)
    if arr.ndim != 3 or q.size == 0 or (q >= arr.shape[0]).any() or (ans >= arr.shape[0]).any():
        raise EvaluationError(
            f"need tiles (n, [C,] H, W), >= 1 query and rows < n; got tiles {np.shape(tiles)}, "
            f"queries {q.tolist()[:5]}, answers max {int(ans.max(initial=-1))}"
        )
    k = ans.shape[1]
    fig = Figure(figsize=(1.4 * (k + 1), 1.8 * q.size))
    axes = fig.subplots(q.size, k + 1, squeeze=False)
    for r, qi in enumerate(q):
        for c in range(k + 1):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            row = int(qi) if c == 0 else int(ans[r, c - 1])
            if row < 0:
                ax.set_axis_off()
                continue
            ax.imshow(_stretch(arr[row].astype(np.float64)), cmap="gray", vmin=0, vmax=1)
            text = []
            if labels is not None:
                text.append(str((names or {}).get(int(labels[row]), int(labels[row]))))
            if group is not None:
                text.append(str(group[row]))
            ax.set_xlabel(" · ".join(text), fontsize=6)
            head = "query" if c == 0 else f"#{c}"
            if c > 0 and scores is not None:
                head += f" {float(scores[r, c - 1]):.2f}"
            ax.set_title(head, fontsize=7)
            colour = "black"
            if labels is not None and c > 0:
                colour = "#2ca02c" if labels[row] == labels[qi] else "#d62728"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2.5 if c > 0 and labels is not None else 1.0)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig, dpi)
