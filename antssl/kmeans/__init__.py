"""Mini-batch k-means as pure numpy, split so that the reductions can be distributed.

Sculley's mini-batch k-means (D. Sculley, "Web-scale k-means clustering", WWW 2010):
per-centre counts ``n_c`` and learning rate ``1 / n_c``, seeded by greedy k-means++
(D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007).
A worker calls :func:`partial_stats` on its rows of a mini-batch (or of all the data, for
a Lloyd pass) and returns a small :class:`PartialStats`; the driver merges them in a fixed
order and applies :func:`sculley_update` or :func:`lloyd_update`, stopping by
:class:`MiniBatchMonitor`. :func:`fit_minibatch` is that loop in one process.

Data are float32 (n, d); sums, counts and the centroid state are float64 / int64.
Metrics: ``"euclidean"``, ``dist2 = ||x - c||²``; ``"cosine"``, rows and centroids are unit
vectors (:func:`normalize_rows`) and ``dist2 = 2 - 2 x·c``, the squared chord between them
(2 for a zero row). Inertia is always ``Σ dist2``: cosine is spherical k-means.

Modules: :mod:`antssl.kmeans.core` (the building blocks) and :mod:`antssl.kmeans.fit` (the
driver over any :class:`RowSource`); everything public is importable from here.
"""

from antssl.kmeans.core import (
    Metric,
    MiniBatchMonitor,
    PartialStats,
    assign,
    inertia,
    kmeans_plusplus,
    lloyd_update,
    normalize_rows,
    partial_stats,
    reseed_empty,
    sculley_update,
)
from antssl.kmeans.fit import (
    ArraySource,
    FitResult,
    KMeansResult,
    RowSource,
    fit,
    fit_minibatch,
)

__all__ = [
    "ArraySource",
    "FitResult",
    "KMeansResult",
    "Metric",
    "MiniBatchMonitor",
    "PartialStats",
    "RowSource",
    "assign",
    "fit",
    "fit_minibatch",
    "inertia",
    "kmeans_plusplus",
    "lloyd_update",
    "normalize_rows",
    "partial_stats",
    "reseed_empty",
    "sculley_update",
]
