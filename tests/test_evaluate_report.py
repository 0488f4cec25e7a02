"""Report outputs: the Markdown table's exact text, and decodable PNG figures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib import image

from antssl.evaluate import EvaluationError
from antssl.evaluate.report import metrics_table, projection_png, query_strip_png
from antssl.evaluate.retrieval import nearest_neighbours

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return image.imread(io.BytesIO(png), format="png")


def test_metrics_table_text() -> None:
    table = metrics_table(
        {
            "ssl": {"P@10 balanced": (0.61234, "q=40+300"), "AUC": 0.9},
            "brightness": {"P@10 balanced": (float("nan"), "a|b"), "NMI": 0.1},
        },
        digits=2,
    )
    assert table == (
        "| metric | ssl | brightness |\n"
        "|---|---|---|\n"
        "| P@10 balanced | 0.61 (q=40+300) | n/a (a\\|b) |\n"
        "| AUC | 0.90 |  |\n"
        "| NMI |  | 0.10 |\n"
    )
    assert metrics_table({"m": {"a": 1.0, "b": 2.0}}, metrics=["b"]).count("\n") == 3
    with pytest.raises(EvaluationError):
        metrics_table({})


def test_projection_png_decodes() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, -1], 50)
    x = rng.normal(size=(150, 6)) + 3 * y[:, None]
    img = _decode(projection_png(x, y, names={0: "calm", 1: "fractured"}, max_points=120))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.05  # not a blank canvas
    _decode(projection_png(x[:, :1], y))  # a 1-D feature still plots


def test_query_strip_png_decodes() -> None:
    rng = np.random.default_rng(1)
    tiles = rng.normal(size=(8, 2, 12, 12))
    labels = np.array([0, 1] * 4)
    group = np.array(list("aabbccdd"))
    idx, score = nearest_neighbours(tiles.reshape(8, -1), 3, group=group, queries=np.array([0, 1]))
    idx[1, 2] = -1  # an empty cell
    png = query_strip_png(tiles, [0, 1], idx, labels, group, score, {1: "frac"}, title="demo")
    img = _decode(png)
    assert img.shape[1] > img.shape[0]  # 4 columns, 2 rows
    with pytest.raises(EvaluationError):
        query_strip_png(tiles, [9], idx[:1])
