"""Approximate nearest-neighbour (ANN) candidates over L2-normalised embeddings (faiss).

Pure numpy + faiss: no Ray, no storage URIs, no HTTP. The exact search
(:mod:`antssl.search`) scores every tile, O(N D) per query; this module finds a
short candidate list in sub-linear time, and :func:`candidates_then_exact`
re-scores those candidates exactly, so the scores a caller sees are the true
cosines and only *which* tiles are found can be approximate.

Scores are inner products ``s_i = e_i . q`` of unit rows ``e_i`` (cosine
similarity; faiss ``METRIC_INNER_PRODUCT``). Two index kinds (faiss: Douze et
al. 2024, "The Faiss library", arXiv:2401.08281):

``kind="ivf"`` (the default) — ``IndexIVFFlat``: k-means partitions the vectors
into ``nlist`` cells (inverted lists); a query scans the ``nprobe`` cells whose
centroids score highest (Jégou, Douze & Schmid 2011, IEEE TPAMI 33(1)).
  - ``nlist`` (default ``4 sqrt(N)``, 4000 at 1e6, at most ``N / 40``): cells.
    Memory ``N (4 D + 8)`` bytes, ~520 MB at 1e6 x 128.
  - ``nprobe`` (default 32): cells scanned per query, about ``nprobe / nlist`` of
    the data. The recall/latency knob; changeable per call.
  - ``train_size`` (default ``40 nlist``), ``niter`` (default 10), ``seed`` (0):
    k-means on a seeded sample of the rows.
  Build = k-means + one assignment pass (O(N nlist D)), parallel over threads:
  43 s for 1e6 x 128 on 2 busy cores.

``kind="hnsw"`` — ``IndexHNSWFlat``, a Hierarchical Navigable Small World graph
(Malkov & Yashunin 2020, IEEE TPAMI 42(4)) over the float32 vectors.
  - ``M`` (default 32): graph links per node (2 M on the bottom layer). Memory
    ``N (4 D + 8 M)`` bytes, ~770 MB at 1e6 x 128.
  - ``ef_construction`` (default 100): candidate list while inserting; build time
    grows about linearly with it.
  - ``ef_search`` (default 64): candidate list while searching; a search for m
    candidates uses ``max(ef_search, m)``. Changeable per call.
  No training, but inserting is slow (5-9 min for 1e6 x 128 on 2 busy cores), and too
  sparse a graph strands whole clusters: M=16, ef_construction=40 gave recall@10
  0.72 at ef_search=64 on the clustered data below, with many queries at recall 0.

Defaults were tuned on 1e6 x 128 synthetic clustered unit vectors (bench/serve.py:
1024 clusters, an 8-D linear manifold in each plus isotropic noise), where both kinds
reach recall@10 >= 0.99 at < 0.5 ms per query (one thread; exact: ~40 ms); see
bench/RESULTS.md ("Serve and ANN search"). Real embeddings differ: :func:`calibrate`
measures recall on a sample of the indexed rows and sets the smallest ``nprobe`` /
``ef_search`` that reaches a target, so the build job (antssl.stages.index) calls it
before saving.

Threads: faiss uses OpenMP; :func:`set_threads` sets its (process-wide) thread
count. One thread suits single-query latency in a service replica; the build job
should use every core it was given.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import faiss as _faiss
import numpy as np

from antssl.errors import AnnError, StorageError

faiss: Any = _faiss  # its bundled stubs lack the SWIG names used here (SearchParameters...)

__all__ = [
    "AnnError",
    "AnnIndex",
    "build",
    "calibrate",
    "candidates_then_exact",
    "measure_recall",
    "set_threads",
]

KINDS = ("ivf", "hnsw")
DEFAULTS: dict[str, dict[str, int]] = {
    "ivf": {"nprobe": 32, "niter": 10, "seed": 0},  # nlist, train_size: from N (module doc)
    "hnsw": {"M": 32, "ef_construction": 100, "ef_search": 64},
}
SEARCH_KEY = {"ivf": "nprobe", "hnsw": "ef_search"}
_MAGIC = b"ANTSSLANN"  # file: magic, uint32 format, uint32 header length, JSON header, faiss
_FORMAT = 1
_UNIT_TOL = 1e-3  # |norm - 1| allowed for rows called unit (float32 rounding)
_CHUNK = 1 << 16  # rows checked / added at a time


def set_threads(n: int) -> None:
    """Set faiss's OpenMP thread count (process-wide): 1 in a latency-bound replica."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise AnnError(f"threads={n!r} must be a positive integer")
    faiss.omp_set_num_threads(n)


def _matrix(a: Any, name: str, dim: int | None = None) -> np.ndarray:
    """``a`` as a C-contiguous (n, dim) float32 matrix of finite values (1-D -> one row)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise AnnError(f"{name} has dtype {arr.dtype}; pass float32 vectors")
    arr = arr[None, :] if arr.ndim == 1 else arr
    want = f"(n, {dim})" if dim else "(n, D)"
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0 or (dim and arr.shape[1] != dim):
        raise AnnError(f"{name} has shape {np.shape(a)}, expected {want} with n >= 1")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    for s in range(0, len(out), _CHUNK):
        if not np.isfinite(out[s : s + _CHUNK]).all():
            raise AnnError(f"{name} holds NaN or inf values; pass finite vectors")
    return out


def _count(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
        raise AnnError(f"{name}={v!r} must be a positive integer")
    return int(v)


class AnnIndex:
    """A faiss index over N unit vectors (row i = tile i) and how it was built.

    ``kind``: "hnsw" or "ivf"; ``params``: the resolved build and search parameters;
    ``meta``: caller metadata stored with it (e.g. the store version it indexes).
    Searches do not change the index, so threads may search it at the same time.
    """

    def __init__(
        self, index: Any, kind: str, params: Mapping[str, int], meta: Mapping[str, Any]
    ) -> None:
        self.index, self.kind, self.params, self.meta = index, kind, dict(params), dict(meta)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Vector dimension D."""
        return int(self.index.d)

    def __repr__(self) -> str:
        return f"AnnIndex(kind={self.kind!r}, n={len(self)}, dim={self.dim}, params={self.params})"

    def search(
        self,
        q: Any,
        m: int,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` best candidate rows for each query row of ``q`` (Q, D) or (D,).

        Returns ``(scores, ids)``: (Q, m) float32 inner products (approximate only in which
        rows are found, exact for those found) best first, and (Q, m) int64 rows, -1 with
        score -inf where fewer than ``m`` were found. ``ef_search`` (hnsw) or ``nprobe``
        (ivf) override the built-in search setting for this call.
        """
        m = _count(m, "m")
        x = _matrix(q, "q", self.dim)
        if self.kind == "hnsw":
            if nprobe is not None:
                raise AnnError("nprobe applies to kind='ivf'; this index is 'hnsw' (ef_search)")
            ef = _count(self.params["ef_search"] if ef_search is None else ef_search, "ef_search")
            sp = faiss.SearchParametersHNSW()
            sp.efSearch = max(ef, m)
        else:
            if ef_search is not None:
                raise AnnError("ef_search applies to kind='hnsw'; this index is 'ivf' (nprobe)")
            sp = faiss.SearchParametersIVF()
            sp.nprobe = min(
                _count(self.params["nprobe"] if nprobe is None else nprobe, "nprobe"),
                self.params["nlist"],
            )
        scores, ids = self.index.search(x, m, params=sp)
        ids = ids.astype(np.int64, copy=False)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids

    # -- persistence -------------------------------------------------------------------------

    def write(self, f: BinaryIO) -> None:
        """Write the index to a binary file object (format: see :meth:`read`)."""
        header = json.dumps(
            {
                "kind": self.kind,
                "params": self.params,
                "meta": self.meta,
                "n": len(self),
                "dim": self.dim,
                "faiss": faiss.__version__,
            },
            sort_keys=True,
        ).encode()
        f.write(_MAGIC + struct.pack("<II", _FORMAT, len(header)) + header)
        faiss.write_index(self.index, faiss.PyCallbackIOWriter(f.write))

    @classmethod
    def read(cls, f: BinaryIO, name: str = "<stream>") -> AnnIndex:
        """Read an index written by :meth:`write`: ``ANTSSLANN``, uint32 format, uint32
        header length (little-endian), a JSON header (kind, params, meta, n, dim, faiss
        version), then faiss's own serialisation."""
        head = f.read(len(_MAGIC) + 8)
        if len(head) < len(_MAGIC) + 8 or head[: len(_MAGIC)] != _MAGIC:
            raise AnnError(f"{name} is not an antssl ANN index file (no {_MAGIC!r} header)")
        fmt, size = struct.unpack("<II", head[len(_MAGIC) :])
        if fmt != _FORMAT:
            raise AnnError(f"{name} has index format {fmt}; this antssl reads {_FORMAT}: rebuild")
        try:
            h = json.loads(f.read(size))
            kind, n, dim, params, meta = h["kind"], h["n"], h["dim"], h["params"], h["meta"]
            index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
        except (ValueError, RuntimeError, KeyError, TypeError) as err:
            raise AnnError(f"{name} is truncated or corrupt ({err}): rebuild the index") from None
        if kind not in KINDS or (int(index.ntotal), int(index.d)) != (n, dim):
            raise AnnError(f"{name}: the header does not match the faiss index: rebuild")
        return cls(index, kind, params, meta)

    def to_bytes(self) -> bytes:
        """The file bytes :meth:`save` writes (to put on the workspace storage)."""
        buf = io.BytesIO()
        self.write(buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> AnnIndex:
        return cls.read(io.BytesIO(data), "<bytes>")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to the local file ``path`` atomically (temporary name, then rename)."""
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                self.write(f)
            os.replace(tmp, p)
        except OSError as err:
            raise StorageError(f"cannot write the ANN index to {p}: {err}") from err
        finally:
            tmp.unlink(missing_ok=True)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnnIndex:
        """Read a local file written by :meth:`save`."""
        try:
            with open(path, "rb") as f:
                return cls.read(f, str(path))
        except FileNotFoundError as err:
            raise StorageError(f"no ANN index at {path}: build it first") from err


def _ivf_params(n: int, params: dict[str, Any]) -> dict[str, int]:
    nlist = params.pop("nlist", None)
    if nlist is None:
        nlist = max(1, min(round(4 * math.sqrt(n)), n // 40))
    nlist = _count(nlist, "nlist")
    if nlist > n:
        raise AnnError(f"nlist={nlist} exceeds the {n} vectors; use nlist <= N (about 4 sqrt(N))")
    out = {**DEFAULTS["ivf"], "nlist": nlist, "train_size": min(n, 40 * nlist)}
    out.update(params)
    return out


def build(
    embeddings_unit: Any,
    kind: str = "ivf",
    *,
    meta: Mapping[str, Any] | None = None,
    **params: int,
) -> AnnIndex:
    """An ANN index over ``embeddings_unit`` (N, D) float32 rows of unit L2 norm (zero rows
    allowed: tiles without a valid embedding; they score 0 and :func:`candidates_then_exact`
    never returns them). Row i of the input is id i.

    ``kind`` "ivf" takes ``nlist``, ``nprobe``, ``train_size``, ``niter``, ``seed``; "hnsw"
    takes ``M``, ``ef_construction``, ``ef_search`` (see the module doc for meanings and
    defaults).
    ``meta`` (JSON-able) is stored with the index.
    """
    if kind not in KINDS:
        raise AnnError(f"kind={kind!r}: choose one of {', '.join(KINDS)}")
    x = _matrix(embeddings_unit, "embeddings_unit")
    n, dim = x.shape
    for s in range(0, n, _CHUNK):
        norm = np.sqrt(np.einsum("ij,ij->i", x[s : s + _CHUNK], x[s : s + _CHUNK]))
        bad = (np.abs(norm - 1) > _UNIT_TOL) & (norm > 0)
        if bad.any():
            i = s + int(np.flatnonzero(bad)[0])
            raise AnnError(
                f"embeddings_unit row {i} has L2 norm {norm[i - s]:.4g}, not 1: normalise the "
                "rows first (cosine search needs unit vectors)"
            )
    known = set(DEFAULTS[kind]) | ({"nlist", "train_size"} if kind == "ivf" else set())
    if unknown := sorted(set(params) - known):
        raise AnnError(f"unknown {kind} parameters {unknown}; allowed: {sorted(known)}")
    for key, v in params.items():
        if key != "seed":
            _count(v, key)
        elif isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise AnnError(f"seed={v!r} must be an integer >= 0")
    if kind == "hnsw":
        p = {**DEFAULTS["hnsw"], **params}
        index = faiss.IndexHNSWFlat(dim, p["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p["ef_construction"]
        index.hnsw.efSearch = p["ef_search"]
        for s in range(0, n, _CHUNK):
            index.add(x[s : s + _CHUNK])
    else:
        p = _ivf_params(n, dict(params))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, p["nlist"], faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(p["seed"])
        sample = np.sort(rng.choice(n, size=min(n, p["train_size"]), replace=False))
        index.cp.seed, index.cp.niter = p["seed"], p["niter"]
        index.train(x[sample])
        for s in range(0, n, _CHUNK):
            index.add(x[s : s + _CHUNK])
        index.nprobe = min(p["nprobe"], p["nlist"])
    json.dumps(dict(meta or {}))  # fail now, not at save time, on non-JSON meta
    return AnnIndex(index, kind, p, meta or {})


def candidates_then_exact(
    index: AnnIndex, emb: Any, q: Any, k: int, m: int, **search: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows by exact cosine among the ``m`` ANN candidates of each query.

    ``emb``: the (N, D) float32 unit rows the index was built on (the caller's copy, e.g.
    :attr:`antssl.search.SearchIndex.embeddings`); ``q``: (Q, D) or (D,) query vectors
    (normalised here). ``m >= k`` candidates per query, e.g. 16 k, then
    ``s_i = e_i . unit(q)`` for each candidate, ranked by score descending, ties by row.
    Zero rows of ``emb`` never match. ``search`` (``ef_search`` / ``nprobe``) goes to
    :meth:`AnnIndex.search`. Returns ``(scores, ids)``, (Q, k) float32 / int64,
    padded with -inf / -1 when fewer than ``k`` candidates exist.
    """
    k, m = _count(k, "k"), _count(m, "m")
    if m < k:
        raise AnnError(f"m={m} candidates cannot give k={k} results: use m >= k (e.g. 16 k)")
    e = np.asarray(emb)
    if e.ndim != 2 or e.shape != (len(index), index.dim):
        raise AnnError(f"emb has shape {e.shape}; the index holds ({len(index)}, {index.dim})")
    x = _matrix(q, "q", index.dim)
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise AnnError("q has a zero vector; pass non-zero query vectors")
    x = x / norms[:, None]
    _, cand = index.search(x, m, **search)
    rows = np.where(cand >= 0, cand, 0)
    vecs = e[rows]  # (Q, m, D) gathered rows
    exact = np.einsum("qmd,qd->qm", vecs, x, dtype=np.float32)
    ok = (cand >= 0) & (np.einsum("qmd,qmd->qm", vecs, vecs) > 0)
    exact = np.where(ok, exact, -np.inf).astype(np.float32)
    big = np.iinfo(np.int64).max
    order = np.lexsort((np.where(ok, cand, big), -exact), axis=1)[:, :k]
    ids = np.where(np.take_along_axis(ok, order, 1), np.take_along_axis(cand, order, 1), -1)
    return np.take_along_axis(exact, order, 1), ids.astype(np.int64)


def _exact_top(emb: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k) exact top-k rows by inner product for stored rows ``rows`` as queries,
    each query's own row and zero rows excluded (blocks of 64 queries bound memory)."""
    zero = np.flatnonzero(np.einsum("ij,ij->i", emb, emb) == 0)
    out = np.empty((len(rows), k), np.int64)
    for s in range(0, len(rows), 64):
        r = rows[s : s + 64]
        sc = emb[r] @ emb.T
        sc[:, zero] = -np.inf
        sc[np.arange(len(r)), r] = -np.inf
        out[s : s + 64] = np.argpartition(-sc, k - 1, axis=1)[:, :k]
    return out


def _recall_queries(
    index: AnnIndex, emb: Any, k: int, queries: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(emb, query rows, their exact top k): ``queries`` distinct non-zero rows of ``emb``."""
    k, queries = _count(k, "k"), _count(queries, "queries")
    e = np.asarray(emb)
    if e.ndim != 2 or e.shape != (len(index), index.dim):
        raise AnnError(f"emb has shape {e.shape}; the index holds ({len(index)}, {index.dim})")
    valid = np.flatnonzero(np.einsum("ij,ij->i", e, e) > 0)
    if len(valid) <= k:
        raise AnnError(f"measuring recall@{k} needs more than {k} non-zero rows")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(valid, size=min(queries, len(valid)), replace=False))
    return e, rows, _exact_top(e, rows, k)


# A returned row as similar to the query as the exact k-th neighbour, to within float32
# rounding, is a hit: among tied rows (near-duplicates, or rows near one vertex of the
# prototype simplex) which k make the exact top k is decided by summation order, not by
# the index (as ann-benchmarks counts recall, with a distance threshold).
RECALL_TIE_TOL = 1e-5


def _recall(
    index: AnnIndex, e: np.ndarray, rows: np.ndarray, exact: np.ndarray, **kw: int
) -> float:
    k = exact.shape[1]
    _, ids = index.search(e[rows], k + 1, **kw)
    hits = []
    for got, r, ex in zip(ids, rows, exact, strict=True):
        got = got[(got != r) & (got >= 0)][:k]
        q = e[r].astype(np.float64)
        kth = float((e[ex].astype(np.float64) @ q).min())  # the exact k-th similarity
        tied = got[e[got].astype(np.float64) @ q >= kth - RECALL_TIE_TOL]
        hits.append(len((set(got.tolist()) & set(ex.tolist())) | set(tied.tolist())))
    return float(np.mean(hits)) / k


def measure_recall(
    index: AnnIndex, emb: Any, *, k: int = 10, queries: int = 200, seed: int = 0
) -> float:
    """Mean recall@k of a plain top-k search at the index's current search setting, for
    ``queries`` stored rows of ``emb`` (each excluding itself) against the exact top k
    (see :func:`calibrate`). Costs ``queries`` exact scans."""
    e, rows, exact = _recall_queries(index, emb, k, queries, seed)
    return _recall(index, e, rows, exact)


def calibrate(
    index: AnnIndex,
    emb: Any,
    *,
    target: float = 0.95,
    k: int = 10,
    queries: int = 200,
    seed: int = 0,
) -> dict[int, float]:
    """Set the index's search setting (``nprobe`` / ``ef_search``) to the smallest value
    in a doubling ladder whose mean recall@k reaches ``target``; returns {value: recall}.

    Queries: ``queries`` distinct non-zero rows of ``emb`` (the (N, D) unit rows indexed,
    seeded by ``seed``), each excluding itself; recall@k = ``|approx ∩ exact| / k`` against
    the exact top k (same as :func:`antssl.search.recall_at_k`), from a plain top-k search.
    Raises :class:`AnnError` when even the largest setting misses the target (rebuild with
    a larger ``nlist`` / ``M`` / ``ef_construction``). Costs ``queries`` exact scans.
    """
    if not 0 < target <= 1:
        raise AnnError(f"target={target} must be a recall in (0, 1]")
    e, rows, exact = _recall_queries(index, emb, k, queries, seed)
    key = SEARCH_KEY[index.kind]
    top = index.params["nlist"] if index.kind == "ivf" else 4096
    ladder = sorted({*(2**i for i in range(int(math.log2(top)) + 1)), top})
    ladder = [v for v in ladder if index.kind == "ivf" or v >= 8]
    curve: dict[int, float] = {}
    for v in ladder:
        curve[v] = _recall(index, e, rows, exact, **{key: v})
        if curve[v] >= target:
            index.params[key] = v
            if index.kind == "ivf":
                index.index.nprobe = v
            else:
                index.index.hnsw.efSearch = v
            return curve
    raise AnnError(
        f"recall@{k} reached only {max(curve.values()):.3f} < target {target} at {key}={top}: "
        "rebuild with a larger nlist (ivf) or M / ef_construction (hnsw)"
    )
