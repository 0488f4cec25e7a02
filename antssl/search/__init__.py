"""Similarity search over tile embeddings: exact cosine top-k that returns distinct places.

Pure numpy (plus pyproj for lon/lat look-ups): no Ray, no storage, no HTTP. The Serve
deployment builds one :class:`SearchIndex` from the catalog and ``embeddings.zarr`` and
calls :meth:`SearchIndex.query` / :meth:`SearchIndex.nearest_tile` / :func:`to_geojson`.

One query (row i of the embeddings = catalog row i = tile i):

1. Query ``q = unit(unit(mean unit(P)) - beta * mean unit(N))`` for positives P (Q, D) and
   optional negatives N (M, D) (Rocchio 1971, alpha = 1, gamma = beta); ``unit(v) = v/||v||``.
2. Score of tile i: cosine ``s_i = e_i . q``, e_i the L2-normalised embedding (zero or
   non-finite rows stay zero and never match).
3. Filters: ``scenes``; ``bbox`` on lon/lat; the example tiles (unless ``include_self``)
   and every tile whose centre lies within ``exclude_radius_km`` of any example.
4. Ranking by s_i descending, ties by row; ``include_self`` puts the examples first. With
   ``distinct``, greedy non-maximum suppression drops each tile whose footprint overlaps an
   accepted result's (same CRS, or same scene without CRS), counted in its ``merged``.

With ``candidates`` (an ANN index, :mod:`antssl.search.ann`), steps 2-4 run on the rows it
proposes for q instead of on all N rows: scores stay exact, only which tiles are found
can be approximate; ``bbox`` / ``scenes`` queries stay exact (see :meth:`SearchIndex.ranked`).

Distances between centres: Euclidean in a shared projected CRS (in metres), else haversine
on lon/lat; tiles without a CRS compare only within their scene, in pixels (1 px taken as
1 m, no ground scale being known), and are infinitely far from everything else.

Modules (all of the project's search lives here; no Ray, no HTTP):

- :mod:`antssl.search.places`: tiles, hits, distances, GeoJSON;
- :mod:`antssl.search.exact`: query vectors, unit rows and :class:`SearchIndex`; its public
  names are importable from this package;
- :mod:`antssl.search.ann`: the faiss ANN index (IVF, HNSW), its file format, recall;
- :mod:`antssl.search.manifest`: the index manifest and the store / embeddings versions;
- :mod:`antssl.search.service`: :class:`~antssl.search.service.ServiceIndex`, one loaded
  version of a workspace (catalog, embeddings, clusters, ANN index) and the queries the
  service answers, used by the Serve app; the index stage (:mod:`antssl.stages.index`)
  writes what it loads.
"""

from antssl.errors import SearchError
from antssl.search.exact import Candidates, SearchIndex, query_vector, recall_at_k, unit_rows
from antssl.search.places import (
    EARTH_RADIUS_M,
    Hit,
    TileTable,
    haversine_m,
    tile_edges,
    to_geojson,
)

__all__ = [
    "EARTH_RADIUS_M",
    "Candidates",
    "Hit",
    "SearchError",
    "SearchIndex",
    "TileTable",
    "haversine_m",
    "query_vector",
    "recall_at_k",
    "tile_edges",
    "to_geojson",
    "unit_rows",
]
