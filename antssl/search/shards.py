"""Sharded, compressed search for whole-coast catalogues: bounded memory per replica.

The exact search (:mod:`antssl.search.exact`) and the IVF-Flat index
(:mod:`antssl.search.ann`) hold every float32 embedding and the whole tile table in the
memory of each replica: 11 GB at 22 million x 128. A sharded index splits the N rows of
the store into S contiguous row ranges (catalog order: scenes, so stretches of coast,
stay together). All shards share one codec trained on a sample of all rows: an IVF
coarse quantizer (``nlist`` cells) and a product quantizer (``pq_m`` sub-vectors of 8
bits, so ``pq_m`` bytes per vector; Jégou, Douze & Schmid 2011, IEEE TPAMI 33(1)).

Files of shard s, under ``<workspace>/index/<build>/shard-<s:04d>/``:

- ``ivfpq.faiss``: a faiss ``IndexIVFPQ`` holding the shard's rows (ids = global rows);
- ``vectors.npy``: (n_s, D) unit rows, to re-rank the candidates: float16 (half the
  disk and page cache; cosines within 1e-3, so near-ties may swap) or float32 (exact);
- ``tile_id.npy`` (fixed-width bytes, row order), ``tile_sorted.npy`` / ``tile_rows.npy``
  (the ids sorted and their rows: look-up by binary search);
- ``x.npy`` ``y.npy`` ``lon.npy`` ``lat.npy`` ``size_m.npy`` (float64), ``scene.npy``
  (int32 code into the build's ``scenes.json``), ``cluster.npy`` (int32);
- ``done.json``: written last, the shard's completion marker (rows, bytes).

A replica (:class:`Shard`) keeps the faiss codes and ids in memory, n_s (pq_m + 8) bytes
(400 MB for 10 million rows at pq_m = 32), and memory-maps the rest: only the pages a
query touches (its candidates' rows) are read. On object storage the shard's folder is
first copied to local disk (:func:`fetch`).

A query (:func:`search_sharded`): every shard scans ``nprobe`` cells with PQ distances,
keeps its ``rerank`` best, re-scores them against the stored rows (float32: exactly;
float16: cosine error below 1e-3) and returns its best ``m`` with their columns; the
union is ranked with the exact search's own rules (examples left out or first,
``exclude_radius_km``, distinct places) by a :class:`~antssl.search.exact.SearchIndex`
over the union, so the merge is correct across shards (a place's overlapping tiles may
live in two shards).
``m`` grows x4 while too few distinct places remain and a shard still had more.
``scenes`` / ``bbox`` filters run in each shard on its memory-mapped columns: an exact
scan over the kept rows when they are few (``exact_rows``), else the IVF search
restricted to them.

No Ray and no HTTP here: :mod:`antssl.stages.index` builds shards as Ray tasks and the
Serve app runs one deployment per shard.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import faiss as _faiss
import numpy as np
from pyproj import Transformer

from antssl.errors import AnnError, SearchError
from antssl.search.exact import SearchIndex, query_vector, unit_rows
from antssl.search.places import Hit, TileTable

MAPPED_BUDGET = 256 << 20
"""File pages a shard may keep mapped into its process (see :meth:`Shard._bound`)."""

faiss: Any = _faiss

FORMAT = 1
DONE = "done.json"
COLUMNS = {
    "x": np.float64,
    "y": np.float64,
    "lon": np.float64,
    "lat": np.float64,
    "size_m": np.float64,
    "scene": np.int32,
    "cluster": np.int32,
}
DEFAULTS = {"pq_m": 32, "nprobe": 64, "rerank": 256, "niter": 10, "seed": 0}
_FIRST_POOL = 16  # candidates per requested result, as the exact search's first pool
_MAX_WIDEN = 4  # x4 widenings of m at most (m up to 256 x the first pool)


def shard_name(s: int) -> str:
    return f"shard-{s:04d}"


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """S contiguous row ranges of sizes differing by at most one."""
    if shards < 1 or shards > max(n, 1):
        raise AnnError(f"shards={shards} must be in [1, {max(n, 1)}] for {n} rows")
    edges = [round(i * n / shards) for i in range(shards + 1)]
    return [(edges[i], edges[i + 1]) for i in range(shards)]


def default_nlist(n: int) -> int:
    """IVF cells: 4 sqrt(N) rounded to a power of two, between 64 and 16384 (and <= N / 39)."""
    want = 4 * math.sqrt(max(n, 1))
    nlist = 2 ** round(math.log2(max(want, 1)))
    return int(max(1, min(16384, max(64, nlist), n // 39 or 1)))


# -- codec -----------------------------------------------------------------------------------


def train_codec(
    sample_unit: np.ndarray, *, nlist: int, pq_m: int = 32, niter: int = 10, seed: int = 0
) -> bytes:
    """An empty, trained faiss IndexIVFPQ (inner product) as bytes, from unit sample rows.

    ``pq_m`` must divide D; the sample should hold at least 39 nlist rows (faiss's own rule
    of thumb) and 256 x 39 for the PQ codebooks."""
    x = np.ascontiguousarray(sample_unit, dtype=np.float32)
    if x.ndim != 2 or len(x) < max(nlist, 256):
        raise AnnError(f"sample has shape {x.shape}: need at least max(nlist, 256) rows")
    d = x.shape[1]
    if pq_m < 1 or d % pq_m:
        raise AnnError(f"pq_m={pq_m} must divide the embedding dimension {d} (e.g. {d // 4})")
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed, index.cp.niter = seed, niter
    index.pq.cp.seed, index.pq.cp.niter = seed, niter
    index.train(x)
    return _index_bytes(index)


def _index_bytes(index: Any) -> bytes:
    buf = io.BytesIO()
    faiss.write_index(index, faiss.PyCallbackIOWriter(buf.write))
    return buf.getvalue()


def _read_index(data: bytes | BinaryIO, name: str) -> Any:
    f = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        return faiss.read_index(faiss.PyCallbackIOReader(f.read))
    except RuntimeError as err:
        raise AnnError(f"{name} is truncated or corrupt ({err}): rebuild the index") from None


# -- writing a shard ------------------------------------------------------------------------


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def write_shard(
    open_file: Callable[[str], Any],
    codec: bytes,
    start: int,
    blocks: Iterable[tuple[np.ndarray, Mapping[str, np.ndarray]]],
    n_rows: int,
    dim: int,
    vector_dtype: str = "float16",
) -> dict[str, Any]:
    """Write one shard's files through ``open_file(name)`` (a context manager giving a
    binary file that is published whole, e.g. :func:`antssl.storage.atomic_open`), except
    ``done.json``, whose content this returns for the caller to write last.

    ``blocks``: consecutive (embeddings (b, D), columns) pieces of the shard's rows from
    global row ``start``; columns: ``tile_id`` (str) and :data:`COLUMNS`. Embeddings are
    L2-normalised here (zero / non-finite rows stay zero and are left out of the index).
    Peak memory: the faiss codes of the shard plus one block plus the id columns.
    """
    index = _read_index(codec, "the codec")
    if index.d != dim or not index.is_trained:
        raise AnnError(f"the codec is for D={index.d} (trained={index.is_trained}), not {dim}")
    cols: dict[str, list[np.ndarray]] = {name: [] for name in (*COLUMNS, "tile_id")}
    done, indexed = 0, 0
    with open_file("vectors.npy") as vf:
        vf.write(_npy_header((n_rows, dim), np.dtype(vector_dtype)))
        for emb, c in blocks:
            b = len(emb)
            unit, ok = unit_rows(np.asarray(emb, dtype=np.float32))
            vf.write(unit.astype(vector_dtype).tobytes())
            ids = np.arange(start + done, start + done + b, dtype=np.int64)
            if ok.any():
                index.add_with_ids(unit[ok], ids[ok])
                indexed += int(ok.sum())
            for name in cols:
                cols[name].append(np.asarray(c[name]))
            done += b
    if done != n_rows:
        raise AnnError(f"shard rows: got {done}, expected {n_rows}")
    ids = [np.asarray(c).astype(np.dtypes.StringDType()) for c in cols.pop("tile_id")]
    tile_id = np.strings.encode(np.concatenate(ids), "utf-8") if n_rows else np.empty(0, "S1")
    order = np.argsort(tile_id, kind="stable")
    arrays: dict[str, np.ndarray] = {
        "tile_id": tile_id,
        "tile_sorted": tile_id[order],
        "tile_rows": (order + start).astype(np.int64),
    }
    for name, dtype in COLUMNS.items():
        arrays[name] = np.concatenate(cols[name]).astype(dtype) if n_rows else np.empty(0, dtype)
    for name, arr in arrays.items():
        with open_file(f"{name}.npy") as f:
            np.save(f, arr)
    data = _index_bytes(index)
    with open_file("ivfpq.faiss") as f:
        f.write(data)
    return {
        "format": FORMAT,
        "start": start,
        "stop": start + n_rows,
        "indexed": indexed,
        "dim": dim,
        "index_bytes": len(data),
    }


# -- a loaded shard ---------------------------------------------------------------------------


@dataclasses.dataclass
class Scenes:
    """The build's scene table: code -> scene id and CRS ("" for none)."""

    scene_id: list[str]
    crs: list[str]

    def to_json(self) -> str:
        return json.dumps({"scene_id": self.scene_id, "crs": self.crs})

    @classmethod
    def from_json(cls, text: str) -> Scenes:
        d = json.loads(text)
        return cls([str(s) for s in d["scene_id"]], [str(c or "") for c in d["crs"]])


class Shard:
    """One shard, loaded from a local folder: codes in memory, everything else mapped."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        scenes: Scenes,
        mapped_budget: int = MAPPED_BUDGET,
    ) -> None:
        self.folder = Path(folder)
        self.mapped_budget = mapped_budget
        done = self.folder / DONE
        if not done.exists():
            raise AnnError(f"{self.folder} has no {DONE}: the shard is incomplete; re-run index")
        self.meta = json.loads(done.read_text())
        if self.meta.get("format") != FORMAT:
            raise AnnError(f"{self.folder}: shard format {self.meta.get('format')}: rebuild")
        self.start, self.stop = int(self.meta["start"]), int(self.meta["stop"])
        self.scenes = scenes
        with open(self.folder / "ivfpq.faiss", "rb") as f:
            self.index = _read_index(f, str(self.folder / "ivfpq.faiss"))
        self.vectors = self._map("vectors")
        self.cols = {name: self._map(name) for name in (*COLUMNS, "tile_id")}
        self.tile_sorted, self.tile_rows = self._map("tile_sorted"), self._map("tile_rows")
        self._prefetch()
        self.trims = 0
        self._mapped_base = mapped_file_bytes()  # libraries and the like, before any query
        self._scene_crs = np.asarray(scenes.crs, dtype=object)
        self._scene_ids = np.asarray(scenes.scene_id, dtype=object)
        self._transformers: dict[str, Transformer] = {}
        if self.vectors.shape[0] != self.stop - self.start:
            raise AnnError(f"{self.folder}: vectors.npy has {self.vectors.shape[0]} rows")

    def _map(self, name: str) -> np.ndarray:
        """The array memory-mapped; the kernel told that reads are random, so a query maps
        the pages it reads, not the read-ahead around them (resident memory stays the
        pages queries touch)."""
        arr = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        raw = getattr(arr, "_mmap", None)
        if raw is not None and hasattr(mmap, "MADV_RANDOM"):
            raw.madvise(mmap.MADV_RANDOM)
        return arr

    def _prefetch(self) -> None:
        """Read the re-scoring rows and the columns once, in a background thread, so that
        they sit in the page cache: a cold query otherwise waits for ~500 random disk
        reads (0.2 s here against 10-15 ms warm). The page cache is shared and
        reclaimable; it is not this process's memory until a query maps a page.
        ``warmed`` is set when done."""
        self.warmed = threading.Event()
        files = [self.folder / f"{n}.npy" for n in ("vectors", *COLUMNS, "tile_id", "tile_sorted")]

        def warm() -> None:
            buf = bytearray(8 << 20)
            for path in files:
                try:
                    with open(path, "rb", buffering=0) as f:
                        while f.readinto(buf):
                            pass
                except OSError:
                    continue
            self.warmed.set()

        threading.Thread(target=warm, name="shard-warm", daemon=True).start()

    def _maps(self) -> list[mmap.mmap]:
        arrays = [self.vectors, self.tile_sorted, self.tile_rows, *self.cols.values()]
        return [m for a in arrays if (m := getattr(a, "_mmap", None)) is not None]

    def _bound(self) -> None:
        """Keep the file pages mapped into this process within ``mapped_budget``. A query
        reads ~256 rows at random, and each read fault maps the whole page-cache folio
        around the row (up to 2 MiB with large folios), whatever ``MADV_RANDOM`` says: one
        query maps ~0.7 GB of a 10 M-tile shard, and without this the resident size
        creeps up to the size of the shard's files (3.4 GB). Checked after every query
        (0.05 ms); unmapping costs ~0.4 ms and the next query ~1 ms of page faults."""
        if mapped_file_bytes() - self._mapped_base > self.mapped_budget:
            self.trim()

    def trim(self) -> None:
        """Unmap the file pages queries have mapped into this process (they stay in the
        page cache; the next touch maps them again, without a disk read)."""
        if hasattr(mmap, "MADV_DONTNEED"):
            for m in self._maps():
                m.madvise(mmap.MADV_DONTNEED)
        self.trims += 1

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def lookup(self, tile_ids: Sequence[str]) -> list[int]:
        """Global rows of ``tile_ids`` held by this shard, -1 for the others."""
        out = []
        width = self.tile_sorted.dtype.itemsize
        for t in tile_ids:
            raw = str(t).encode()
            if len(raw) > width:  # longer than every stored id: not here
                out.append(-1)
                continue
            key = np.array(raw, dtype=self.tile_sorted.dtype)  # same dtype: no cast of the map
            i = int(np.searchsorted(self.tile_sorted, key))
            hit = i < len(self.tile_sorted) and self.tile_sorted[i] == key
            out.append(int(self.tile_rows[i]) if hit else -1)
        return out

    def rows(self, rows: Sequence[int]) -> dict[str, Any]:
        """Vectors (float32) and columns of global ``rows`` (all in this shard)."""
        r = np.asarray(rows, dtype=np.int64)
        if r.size and ((r < self.start).any() or (r >= self.stop).any()):
            raise SearchError(f"rows {r.tolist()[:5]} are not in shard [{self.start}, {self.stop})")
        local = r - self.start
        order = np.argsort(local, kind="stable")  # sorted gathers read the map in order
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        vec = np.asarray(self.vectors[local[order]], dtype=np.float32)[back]
        out: dict[str, Any] = {"row": r, "vector": vec}
        for name in COLUMNS:
            out[name] = np.asarray(self.cols[name][local[order]])[back]
        out["tile_id"] = np.char.decode(np.asarray(self.cols["tile_id"][local[order]])[back])
        code = out.pop("scene")
        out["scene_id"] = self._scene_ids[code] if r.size else np.empty(0, object)
        out["crs"] = self._scene_crs[code] if r.size else np.empty(0, object)
        return out

    def _filter(self, scenes: Sequence[str] | None, bbox: Sequence[float] | None) -> np.ndarray:
        """Global rows passing the filters (scanned from the mapped columns in blocks)."""
        codes = None
        if scenes is not None:
            lookup = {s: i for i, s in enumerate(self.scenes.scene_id)}
            if unknown := sorted(set(scenes) - lookup.keys()):
                raise SearchError(f"scenes has unknown scene ids {unknown[:5]}")
            codes = np.asarray([lookup[s] for s in scenes], np.int32)
        keep = []
        step = 1 << 20
        for s in range(0, len(self), step):
            m = np.ones(min(step, len(self) - s), dtype=bool)
            if codes is not None:
                m &= np.isin(self.cols["scene"][s : s + step], codes)
            if bbox is not None:
                lon0, lat0, lon1, lat1 = (float(v) for v in bbox)
                lon = np.asarray(self.cols["lon"][s : s + step])
                lat = np.asarray(self.cols["lat"][s : s + step])
                in_lon = (
                    (lon >= lon0) & (lon <= lon1) if lon0 <= lon1 else (lon >= lon0) | (lon <= lon1)
                )
                m &= in_lon & (lat >= lat0) & (lat <= lat1)
            keep.append(np.flatnonzero(m) + s + self.start)
        return np.concatenate(keep) if keep else np.empty(0, np.int64)

    def search(
        self,
        q: np.ndarray,
        m: int,
        *,
        nprobe: int = 64,
        rerank: int = 256,
        scenes: Sequence[str] | None = None,
        bbox: Sequence[float] | None = None,
        exact_rows: int = 200_000,
    ) -> dict[str, Any]:
        """This shard's best ``m`` rows for the unit query ``q`` (D,), scored exactly
        (cosine against the float16 rows), best first, with their columns; ``full`` says
        whether the shard had at least ``m`` candidates (more may exist)."""
        x = np.ascontiguousarray(np.asarray(q, np.float32).reshape(1, -1))
        if x.shape[1] != self.dim:
            raise SearchError(f"query has {x.shape[1]} dimensions, the index {self.dim}")
        allowed = None if scenes is None and bbox is None else self._filter(scenes, bbox)
        if allowed is not None and len(allowed) <= max(exact_rows, m):
            cand = allowed
        else:
            sp = faiss.SearchParametersIVF()
            sp.nprobe = int(min(nprobe, self.index.nlist))
            if allowed is not None:
                sel = faiss.IDSelectorBatch(allowed)
                sp.sel = sel
            want = max(rerank, m)
            _, ids = self.index.search(x, want, params=sp)
            cand = ids[0][ids[0] >= 0]
        scores = np.empty(0, np.float32)
        if cand.size:
            local = np.sort(cand - self.start)
            vec = np.asarray(self.vectors[local], dtype=np.float32)
            scores = vec @ x[0]
            ok = np.einsum("ij,ij->i", vec, vec) > 0
            local, scores = local[ok], scores[ok]
            top = np.lexsort((local, -scores))[:m]
            cand, scores = local[top] + self.start, scores[top]
        out = self.rows(cand)
        out["score"] = scores.astype(np.float32)
        out["full"] = bool(len(cand) >= m)
        self._bound()
        return out

    def nearest(self, lon: float, lat: float) -> tuple[int, float] | None:
        """(global row, centre distance / half edge) of the tile holding (lon, lat), or None."""
        best: tuple[int, float] | None = None
        for code, name in enumerate(self.scenes.crs):
            if not name:
                continue
            if name not in self._transformers:
                self._transformers[name] = Transformer.from_crs("EPSG:4326", name, always_xy=True)
            px, py = self._transformers[name].transform(lon, lat)
            if not (math.isfinite(px) and math.isfinite(py)):
                continue
            step = 1 << 20
            for s in range(0, len(self), step):
                sc = np.asarray(self.cols["scene"][s : s + step])
                sel = np.flatnonzero(sc == code)
                if not sel.size:
                    continue
                xs = np.asarray(self.cols["x"][s : s + step])[sel]
                ys = np.asarray(self.cols["y"][s : s + step])[sel]
                half = np.asarray(self.cols["size_m"][s : s + step])[sel] / 2
                dx, dy = np.abs(xs - px), np.abs(ys - py)
                inside = np.flatnonzero((dx <= half) & (dy <= half))
                if inside.size:
                    rel = np.hypot(dx[inside], dy[inside]) / half[inside]
                    j = int(np.argmin(rel))
                    if best is None or rel[j] < best[1]:
                        best = (int(s + sel[inside[j]] + self.start), float(rel[j]))
        self._bound()  # the scan mapped whole columns
        return best

    def stats(self) -> dict[str, Any]:
        """Rows, bytes of codes in memory, and this process's resident memory."""
        return {
            "start": self.start,
            "stop": self.stop,
            "indexed": int(self.index.ntotal),
            "warmed": self.warmed.is_set(),
            "rss_bytes": rss_bytes(),
            "mapped_file_bytes": mapped_file_bytes(),
            "trims": self.trims,
        }


def mapped_file_bytes() -> int:
    """This process's resident file-backed pages (``RssFile``; Linux /proc, 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssFile:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# -- the merge across shards ------------------------------------------------------------------


def _concat(parts: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    keys = ("row", "vector", "tile_id", "scene_id", "crs", "cluster", *COLUMNS)
    out = {}
    for k in keys:
        if k == "scene":
            continue
        vals = [np.asarray(p[k]) for p in parts if len(p["row"])]
        out[k] = np.concatenate(vals) if vals else np.empty((0,))
    return out


def merge(
    parts: Sequence[Mapping[str, Any]],
    examples: Mapping[str, Any] | None,
    q: np.ndarray,
    k: int,
    *,
    include_self: bool = False,
    exclude_radius_km: float = 0.0,
    distinct: bool = True,
) -> list[Hit]:
    """Rank the union of the shards' candidates (and the example tiles) exactly as the
    exact search ranks all rows; hits carry global rows in ``index``."""
    allp = [*parts, *([examples] if examples is not None else [])]
    u = _concat(allp)
    if not len(u["row"]):
        return []
    rows, first = np.unique(u["row"].astype(np.int64), return_index=True)
    pick = {key: v[first] for key, v in u.items()}
    tiles = TileTable(
        tile_id=pick["tile_id"].astype(object),
        scene_id=pick["scene_id"].astype(object),
        x=pick["x"],
        y=pick["y"],
        lon=pick["lon"],
        lat=pick["lat"],
        size_m=pick["size_m"],
        crs=pick["crs"].astype(object),
        cluster=pick["cluster"],
    )
    mini = SearchIndex(pick["vector"], tiles)
    selves = None
    if examples is not None and len(examples["row"]):
        selves = np.searchsorted(rows, np.asarray(examples["row"], np.int64))
    hits, _ = mini.ranked(
        q,
        k,
        self_index=selves,
        include_self=include_self,
        exclude_radius_km=exclude_radius_km,
        distinct=distinct,
    )
    return [dataclasses.replace(h, index=int(rows[h.index])) for h in hits]


def search_sharded(
    search: Callable[[np.ndarray, int], Sequence[Mapping[str, Any]]],
    positives: np.ndarray,
    k: int,
    *,
    examples: Mapping[str, Any] | None = None,
    negatives: np.ndarray | None = None,
    beta: float = 0.5,
    include_self: bool = False,
    exclude_radius_km: float = 0.0,
    distinct: bool = True,
) -> list[Hit]:
    """Top-``k`` places over all shards: ``search(q, m)`` scatters to every shard and
    returns their parts (:meth:`Shard.search`); widened x4 while too few places remain
    and some shard was full."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise SearchError(f"k={k!r} must be a positive integer")
    q = query_vector(positives, positives.shape[-1], negatives, beta)
    n_self = 0 if examples is None else len(examples["row"])
    m = max(_FIRST_POOL * k, 64) + n_self
    for _ in range(_MAX_WIDEN + 1):
        parts = search(q, m)
        hits = merge(
            parts,
            examples,
            q,
            k,
            include_self=include_self,
            exclude_radius_km=exclude_radius_km,
            distinct=distinct,
        )
        if len(hits) >= k or not any(p["full"] for p in parts):
            return hits
        m *= 4
    return hits
