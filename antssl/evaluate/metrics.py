"""Clustering agreement and linear probes against tile labels (numpy + scikit-learn).

- :func:`cluster_scores`: NMI, ARI, purity and best-cluster purity of given cluster labels
  (from :func:`antssl.kmeans.fit_minibatch` at k = 2, 8, 16 in EVAL-PROTOCOL.md).
- :func:`linear_probe`: logistic regression fitted on one split of groups (scenes) and
  scored on another; standardisation and the choice of regularisation use the training
  split only (grouped cross-validation inside it).
- :func:`auc_standard_error`: the Hanley-McNeil standard error, to read AUC differences
  against their noise (EVAL-PROTOCOL.md: under ~0.05 AUC is noise with few positives).

Rows whose label is < 0 are left out everywhere (see :mod:`antssl.evaluate.labels`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_rand_score,
    balanced_accuracy_score,
    normalized_mutual_info_score,
    roc_auc_score,
)
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from antssl.evaluate import EvaluationError

__all__ = [
    "ClusterScores",
    "ProbeResult",
    "auc_standard_error",
    "cluster_scores",
    "linear_probe",
]

DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
"""Inverse regularisation strengths tried by :func:`linear_probe`."""


def _labelled(labels: np.ndarray, n: int, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel().astype(np.int64)
    if y.shape[0] != n:
        raise EvaluationError(f"{name} has {y.shape[0]} rows, expected {n}")
    keep = y >= 0
    if not keep.any():
        raise EvaluationError(f"no labelled rows in {name} (every label is < 0)")
    return y, keep


@dataclass(frozen=True)
class ClusterScores:
    """Agreement of clusters with labels, over the n labelled rows.

    Attributes:
        nmi: normalised mutual information, arithmetic mean normalisation,
            ``I(C; Y) / ((H(C) + H(Y)) / 2)`` (Strehl & Ghosh 2002; scikit-learn's default).
        ari: adjusted Rand index (Hubert & Arabie 1985).
        purity: ``(1/n) Σ_k max_c |k ∩ c|`` (Manning et al. 2008, ch. 16).
        classes: (c,) class values.
        best_purity: (c,) for class c, ``max_k |k ∩ c| / |k|`` over clusters with at least
            ``min_size`` rows: the share of c in the cluster richest in c.
        best_size: (c,) size of that cluster (0 when none qualifies).
        base_rate: (c,) share of c among all n rows, the best purity a random clustering
            would approach.
        n: labelled rows scored; n_clusters: non-empty clusters among them.
    """

    nmi: float
    ari: float
    purity: float
    classes: np.ndarray
    best_purity: np.ndarray
    best_size: np.ndarray
    base_rate: np.ndarray
    n: int
    n_clusters: int

    def figures(self, names: dict[int, str] | None = None) -> dict[str, tuple[float, str]]:
        """``{metric: (value, counts)}`` rows for :func:`antssl.evaluate.report.metrics_table`."""
        counts = f"n={self.n}, clusters={self.n_clusters}"
        out = {
            "NMI": (self.nmi, counts),
            "ARI": (self.ari, counts),
            "purity": (self.purity, counts),
        }
        for i, c in enumerate(self.classes):
            name = (names or {}).get(int(c), str(int(c)))
            out[f"best-cluster purity {name}"] = (
                float(self.best_purity[i]),
                f"size={self.best_size[i]}, base={self.base_rate[i]:.3f}",
            )
        return out


def cluster_scores(clusters: np.ndarray, labels: np.ndarray, min_size: int = 1) -> ClusterScores:
    """NMI, ARI, purity and per-class best-cluster purity of ``clusters`` against ``labels``.

    Args:
        clusters: (n,) integer cluster per row.
        labels: (n,) integer class per row; rows < 0 are left out.
        min_size: smallest cluster that counts for ``best_purity`` (a singleton is pure).
    """
    k = np.asarray(clusters).ravel()
    y, keep = _labelled(labels, k.shape[0])
    k, y = k[keep], y[keep]
    cl, k_idx = np.unique(k, return_inverse=True)
    classes, y_idx = np.unique(y, return_inverse=True)
    table = np.zeros((cl.size, classes.size), dtype=np.int64)
    np.add.at(table, (k_idx, y_idx), 1)
    sizes = table.sum(axis=1)
    big = sizes >= max(min_size, 1)
    share = table / sizes[:, None]
    best_purity = np.full(classes.size, np.nan)
    best_size = np.zeros(classes.size, dtype=np.int64)
    if big.any():
        masked = np.where(big[:, None], share, -1.0)
        top = masked.argmax(axis=0)
        best_purity = share[top, np.arange(classes.size)]
        best_size = sizes[top]
    return ClusterScores(
        nmi=float(normalized_mutual_info_score(y, k)),
        ari=float(adjusted_rand_score(y, k)),
        purity=float(table.max(axis=1).sum() / y.size),
        classes=classes,
        best_purity=best_purity,
        best_size=best_size,
        base_rate=table.sum(axis=0) / y.size,
        n=int(y.size),
        n_clusters=int(cl.size),
    )


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of a ROC AUC A (Hanley & McNeil 1982, Radiology 143:29-36).

    ``SE² = (A(1-A) + (n_p - 1)(Q1 - A²) + (n_n - 1)(Q2 - A²)) / (n_p n_n)`` with
    ``Q1 = A / (2 - A)`` and ``Q2 = 2A² / (1 + A)``. NaN when a class is empty.
    """
    if n_pos < 1 or n_neg < 1 or not 0.0 <= auc <= 1.0:
        return float("nan")
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)
    return math.sqrt(max(var, 0.0) / (n_pos * n_neg))


@dataclass(frozen=True)
class ProbeResult:
    """A linear probe's test scores with its counts.

    Attributes:
        auc: ROC AUC of the decision function (binary), or macro one-vs-rest AUC
            (multi-class, NaN unless every class is in the test split).
        auc_se: Hanley-McNeil standard error of ``auc`` (binary only, else NaN).
        balanced_accuracy: mean per-class recall on the test split.
        c: the inverse regularisation strength chosen on the training split.
        cv_score: its mean score across the training split's folds (NaN: none scored).
        classes: (c,) class values; train_counts / test_counts: (c,) rows per class.
    """

    auc: float
    auc_se: float
    balanced_accuracy: float
    c: float
    cv_score: float
    classes: np.ndarray
    train_counts: np.ndarray
    test_counts: np.ndarray

    def figures(self, names: dict[int, str] | None = None) -> dict[str, tuple[float, str]]:
        """``{metric: (value, counts)}`` rows for :func:`antssl.evaluate.report.metrics_table`."""
        test = "+".join(str(int(v)) for v in self.test_counts)
        train = "+".join(str(int(v)) for v in self.train_counts)
        se = "" if math.isnan(self.auc_se) else f"±{self.auc_se:.3f}, "
        return {
            "probe AUC": (self.auc, f"{se}test={test}, train={train}"),
            "probe balanced acc": (self.balanced_accuracy, f"test={test}, C={self.c:g}"),
        }


def _score(model: Pipeline, x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    if classes.size == 2:
        if np.unique(y).size < 2:
            return float("nan")
        return float(roc_auc_score(y == classes[1], model.decision_function(x)))
    return float(balanced_accuracy_score(y, model.predict(x)))


def _probe(c: float, seed: int, max_iter: int, balanced: bool) -> Pipeline:
    weight = "balanced" if balanced else None
    clf = LogisticRegression(C=c, class_weight=weight, max_iter=max_iter, random_state=seed)
    return make_pipeline(StandardScaler(), clf)


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    groups_train: np.ndarray | None = None,
    cs: Sequence[float] = DEFAULT_CS,
    folds: int = 5,
    class_weight_balanced: bool = True,
    max_iter: int = 2000,
    seed: int = 0,
) -> ProbeResult:
    """Logistic-regression probe: fit on the training split, score on the test split.

    The pipeline is ``StandardScaler -> LogisticRegression(C)`` (L2), so the scaling is
    fitted on training rows only. C is chosen from ``cs`` by cross-validation inside the
    training split: ``GroupKFold`` over ``groups_train`` (scenes; min(folds, n_groups)
    folds) when given, so no scene is in both halves of a fold, else ``StratifiedKFold``.
    The criterion is ROC AUC for two classes and balanced accuracy otherwise; ties go to
    the smaller C. The chosen C is then refitted on all training rows. Folds whose
    training part lacks a class, or (binary) whose validation part lacks one, are skipped;
    when none is left, C is the middle of ``cs`` and ``cv_score`` is NaN.

    Args:
        x_train, x_test: (n, d) features. y_train, y_test: (n,) labels, rows < 0 dropped.
        groups_train: (n_train,) group per training row, or None.
        class_weight_balanced: weight classes by inverse frequency (rare fractured tiles).
    """
    xtr = np.asarray(x_train, dtype=np.float64)
    xte = np.asarray(x_test, dtype=np.float64)
    ytr, ktr = _labelled(y_train, xtr.shape[0], "y_train")
    yte, kte = _labelled(y_test, xte.shape[0], "y_test")
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise EvaluationError(f"train {xtr.shape} and test {xte.shape} must be (n, d), same d")
    if not (np.isfinite(xtr).all() and np.isfinite(xte).all()):
        raise EvaluationError("probe features hold NaN or inf")
    xtr, ytr, xte, yte = xtr[ktr], ytr[ktr], xte[kte], yte[kte]
    classes = np.unique(ytr)
    if classes.size < 2:
        raise EvaluationError(f"the training split holds one class only ({classes.tolist()})")
    splits: list[tuple[np.ndarray, np.ndarray]]
    if groups_train is not None:
        g = np.asarray(groups_train).ravel()
        if g.shape[0] != ktr.shape[0]:
            raise EvaluationError(f"groups_train has {g.shape[0]} rows, x_train {ktr.shape[0]}")
        g = g[ktr]
        n_splits = min(folds, np.unique(g).size)
        if n_splits < 2:
            raise EvaluationError("groups_train needs at least 2 groups to choose C")
        splits = list(GroupKFold(n_splits=n_splits).split(xtr, ytr, g))
    else:
        n_splits = min(folds, int(np.bincount(np.unique(ytr, return_inverse=True)[1]).min()))
        if n_splits < 2:
            raise EvaluationError("each class needs at least 2 training rows to choose C")
        splits = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(xtr, ytr))
    if not cs:
        raise EvaluationError("cs must hold at least one regularisation strength")
    best_c, best = float(cs[len(cs) // 2]), -np.inf  # kept when no fold can be scored
    for c in cs:
        vals = []
        for tr, va in splits:
            if np.unique(ytr[tr]).size < classes.size:
                continue
            model = _probe(c, seed, max_iter, class_weight_balanced).fit(xtr[tr], ytr[tr])
            vals.append(_score(model, xtr[va], ytr[va], classes))
        mean = float(np.nanmean(vals)) if vals and not np.isnan(vals).all() else -np.inf
        if mean > best:
            best_c, best = float(c), mean
    model = _probe(best_c, seed, max_iter, class_weight_balanced).fit(xtr, ytr)
    test_counts = np.array([(yte == c).sum() for c in classes], dtype=np.int64)
    if classes.size == 2:
        auc = _score(model, xte, yte, classes)
        se = auc_standard_error(auc, int(test_counts[1]), int(test_counts[0]))
    else:
        present = set(np.unique(yte)) == set(classes)
        auc = (
            float(roc_auc_score(yte, model.predict_proba(xte), multi_class="ovr"))
            if present
            else float("nan")
        )
        se = float("nan")
    return ProbeResult(
        auc=auc,
        auc_se=se,
        balanced_accuracy=float(balanced_accuracy_score(yte, model.predict(xte))),
        c=best_c,
        cv_score=float(best) if np.isfinite(best) else float("nan"),
        classes=classes,
        train_counts=np.array([(ytr == c).sum() for c in classes], dtype=np.int64),
        test_counts=test_counts,
    )
