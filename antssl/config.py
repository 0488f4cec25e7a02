"""The one typed configuration tree (pydantic v2).

Parsed once at the edge (CLI, job entrypoint, Serve builder) with
:func:`load_config` and passed down as objects. Unknown keys and bad values
raise :class:`~antssl.errors.ConfigError` naming the key and what is allowed.
Secrets (S3 keys) never live here: they come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from antssl.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Section):
    """How to reach object storage. Keys come from the environment, never from here."""

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto, Ceph), e.g. http://127.0.0.1:9000."
    )
    region: str | None = Field(None, description="S3 region; AWS_DEFAULT_REGION when unset.")
    anon: bool = Field(False, description="Anonymous access to public buckets.")
    max_retries: int = Field(5, ge=0, le=20, description="Retries of transient S3 errors.")
    raster_access: Literal["gdal", "fsspec"] = Field(
        "gdal",
        description="How rasterio reads s3:// scenes: GDAL /vsis3/ range requests, or fsspec "
        "file objects (see bench/RESULTS.md for which is faster).",
    )


class ScenesConfig(_Section):
    """Which scenes to read and how to interpret their pixels."""

    uris: list[str] = Field(default_factory=list, description="Explicit scene URIs.")
    glob: str | None = Field(None, description="A glob or prefix, e.g. s3://bucket/scenes/*.tif.")
    exclude: list[str] = Field(
        default_factory=lambda: ["*_label.*", "*_labels.*", "*_mask.*", "*_masks.*"],
        description="File-name glob patterns (case-insensitive) that scenes.glob leaves out: "
        "label and mask rasters beside the scenes; evaluate.labels is left out as well.",
    )
    stac: str | None = Field(None, description="A STAC ItemCollection JSON file (URI).")
    stac_asset: str | None = Field(
        None, description="Asset key to use in each STAC item; the first GeoTIFF asset when unset."
    )
    bands: list[int] | None = Field(
        None, description="1-based band indices to use; all bands when unset."
    )
    nodata: float | None = Field(
        None, description="Nodata value overriding the files' own nodata tag."
    )
    allow_no_crs: bool = Field(
        False, description="Accept scenes without a CRS (tiles then carry pixel coordinates)."
    )
    on_bad_scene: Literal["fail", "skip"] = Field(
        "fail", description="Whether one unreadable or unusable scene stops the run."
    )

    @model_validator(mode="after")
    def _check(self) -> ScenesConfig:
        if self.bands is not None:
            if not self.bands:
                raise ValueError("bands must list at least one 1-based band index, or be unset")
            if any(b < 1 for b in self.bands):
                raise ValueError(f"bands are 1-based: got {self.bands}")
        return self


class MaskConfig(_Section):
    """The coastal zone: a coastline buffered to a band, a mask raster, or none."""

    kind: Literal["coastline", "raster", "none"] = "coastline"
    vector: str | None = Field(
        None,
        description="Coastline/land vector (GeoPackage, GeoJSON, Shapefile); "
        "the shipped Natural Earth Antarctic layers when unset.",
    )
    layers: list[str] | None = Field(
        None,
        description="Layers of the vector file to use; the shipped default's land + ice shelves.",
    )
    seaward_km: float = Field(10.0, ge=0, description="Band width on the sea side of the coast.")
    inland_km: float = Field(10.0, ge=0, description="Band width on the land side of the coast.")
    raster: str | None = Field(
        None,
        description="Mask raster URI (non-zero = keep), for kind=raster; {scene_id} in it is "
        "replaced by each scene's id (one mask per scene).",
    )

    @model_validator(mode="after")
    def _check(self) -> MaskConfig:
        if self.kind == "raster" and not self.raster:
            raise ValueError("mask.kind=raster needs mask.raster (a mask raster URI)")
        if self.kind == "coastline" and self.seaward_km + self.inland_km <= 0:
            raise ValueError("mask.seaward_km + mask.inland_km must be > 0 for kind=coastline")
        return self


class TilingConfig(_Section):
    """Overlapping square windows of ``size`` px every ``stride`` px."""

    size: int = Field(64, ge=8, le=4096, description="Tile edge in pixels.")
    stride: int = Field(32, description="Step between tiles in pixels (> 0).")
    min_mask_fraction: float = Field(
        0.5, ge=0, le=1, description="Keep tiles at least this coastal."
    )
    max_nodata_fraction: float = Field(0.1, ge=0, le=1, description="Drop tiles with more nodata.")

    @model_validator(mode="after")
    def _check(self) -> TilingConfig:
        if self.stride <= 0:
            raise ValueError(f"tiling.stride must be > 0, got {self.stride}")
        if self.stride > self.size:
            raise ValueError(
                f"tiling.stride ({self.stride}) must be <= tiling.size ({self.size}); "
                "larger strides leave gaps between tiles"
            )
        return self


class DataConfig(_Section):
    """The Ray Data tile stream."""

    rows_per_task: int = Field(
        16, ge=1, description="Tile rows one read task cuts from one region read."
    )
    batch_tiles: int = Field(
        256, ge=1, description="Tiles per batch a read task yields (Ray may merge them)."
    )
    read_cpus: float = Field(
        1.0, gt=0, description="CPUs reserved per read task (lower it on small clusters)."
    )
    stats_sample: int = Field(
        1024, ge=1, description="Tiles sampled for the per-band normalisation statistics."
    )
    seed: int = 0


class CacheConfig(_Section):
    """The tile cache (``antssl cache``, :mod:`antssl.cache`): every kept tile once, as stored,
    in a sharded Zarr array that pretrain and embed read instead of cutting the scenes again."""

    enabled: bool = Field(
        True,
        description="Build and read the cache; false: pretrain and embed stream from the scenes "
        "(one pass, or no room for the cache).",
    )
    shard_tiles: int = Field(
        4096, ge=1, description="Tiles per shard: the unit one read (or write) task moves whole."
    )
    chunk_tiles: int = Field(
        256, ge=1, description="Tiles per compressed chunk inside a shard (divides shard_tiles)."
    )
    codec: Literal["lz4", "zstd"] = Field(
        "lz4", description="Blosc compressor (with byte shuffle); lz4 decompresses fastest."
    )
    level: int = Field(5, ge=1, le=9, description="Compression level.")
    read_cpus: float = Field(
        0.5, gt=0, description="CPUs reserved per cache read task (a decompress and a memcpy)."
    )
    inject_failure_after_shards: int | None = Field(
        None, description="Crash drill: the job dies once this many shards are written."
    )

    @model_validator(mode="after")
    def _check(self) -> CacheConfig:
        if self.shard_tiles % self.chunk_tiles:
            raise ValueError(
                f"cache.chunk_tiles ({self.chunk_tiles}) must divide cache.shard_tiles "
                f"({self.shard_tiles}), e.g. chunk_tiles 256 with shard_tiles 4096"
            )
        return self


class AugmentSettings(_Section):
    """The two views' augmentations (:class:`antssl.ssl.augment.AugmentConfig`, same names and
    defaults). Intensities are in normalised (std) units; probabilities per sample."""

    dihedral: bool = Field(True, description="Random 90° rotations and flips (nadir: no 'up').")
    crop_prob: float = Field(1.0, ge=0, le=1)
    crop_scale: tuple[float, float] = Field(
        (0.35, 1.0), description="Random resized crop's area range, as a fraction of the tile."
    )
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotate_prob: float = Field(
        0.0, ge=0, le=1, description="Crop also rotated by U[-45°, 45°] (any orientation)."
    )
    jitter_prob: float = Field(
        0.0, ge=0, le=1, description="Brightness/contrast jitter (stretch_prob models it per band)."
    )
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0, lt=1)
    jitter_per_band: bool = False
    blur_prob: float = Field(
        0.5, ge=0, le=1, description="Gaussian blur; 0 keeps fine texture (crevasses) a feature."
    )
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_prob: float = Field(0.5, ge=0, le=1)
    noise_std: float = Field(0.1, ge=0)
    band_drop_prob: float = Field(0.2, ge=0, le=1)
    # Scene nuisances (antssl.ssl.augment; chosen on held-out sample scenes, bench/RESULTS.md §5b).
    resolution_prob: float = Field(
        0.8, ge=0, le=1, description="Coarser pixel size: resample to H/f px and back."
    )
    resolution_max: float = Field(4.0, ge=1, description="Largest pixel-size factor f.")
    haze_prob: float = Field(0.3, ge=0, le=1, description="Haze veil: blend toward a bright field.")
    haze: float = Field(0.5, ge=0, lt=1, description="Largest haze blend weight.")
    gradient_prob: float = Field(
        0.5, ge=0, le=1, description="Illumination: a linear ramp plus low-frequency shading."
    )
    gradient: float = Field(1.0, ge=0, description="Largest ramp amplitude (peak to peak).")
    shading: float = Field(0.3, ge=0, description="Largest shading std.")
    stretch_prob: float = Field(
        0.8, ge=0, le=1, description="Per-band gamma (on the tile's own range), gain and offset."
    )
    gamma: float = Field(2.0, ge=1, description="Gamma drawn log-uniformly in [1/gamma, gamma].")
    gain: float = Field(1.5, ge=1, description="Gain drawn log-uniformly in [1/gain, gain].")
    offset: float = Field(0.5, ge=0, description="Offset drawn from U[-offset, offset].")
    stripe_prob: float = Field(
        0.3, ge=0, le=1, description="Detector striping: an offset per column (or row) and band."
    )
    stripe_std: float = Field(0.1, ge=0, description="Largest stripe std.")


class TrainConfig(_Section):
    """Self-supervised pretraining (Ray Train)."""

    backbone: str = "resnet_small"
    width: int = Field(32, ge=4)
    depth: int = Field(2, ge=1, le=8, description="Residual blocks per stage.")
    embed_dim: int = Field(128, ge=8)
    proj_dim: int = Field(128, ge=8)
    input_norm: Literal["dataset", "tile", "destripe"] = Field(
        "destripe",
        description="dataset: tiles as normalised by the run's per-band statistics (brightness "
        "and band ratios are features); tile: also standardised per tile and band inside the "
        "model, for archives whose scenes were contrast-stretched one by one (e.g. MOA); "
        "destripe: detector stripes taken out of each tile first, then standardised per tile "
        "(a scene's stripes are the same on every surface: not a feature).",
    )
    pool: Literal["avg", "stats"] = Field(
        "stats",
        description="avg: average-pool the last stage, then a linear layer to embed_dim; "
        "stats: mean and std of the stem's and every stage's maps (a texture descriptor of "
        "2 x width x 2**stages values; embed_dim is then ignored).",
    )
    descriptor: Literal["none", "texture"] = Field(
        "none",
        description="With embedding: features, texture: the evaluate stage's hand-made "
        "texture descriptor (gradient statistics, LBP, GLCM; 39 values per band, "
        "antssl.ssl.descriptor) of each tile as the encoder sees it is appended to the learned "
        "embedding, standardised (feature fusion; the embed stage, /v1/embed and the index "
        "carry it; configs/moa.yaml); none: the learned embedding only.",
    )
    descriptor_weight: float = Field(
        0.5,
        gt=0,
        description="With descriptor: texture, the appended block's share of the squared norm "
        "against the learned block's (1: equal shares; higher: the neighbours follow the "
        "hand-made texture more).",
    )
    objective: str = "simclr"
    temperature: float = Field(0.2, gt=0)
    prototypes: int = Field(
        32,
        ge=0,
        description="Learned prototypes on the projection (SwAV; antssl.ssl.model.Prototypes), "
        "trained by prototype_weight's share of the objective. 0: none.",
    )
    prototype_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of the objective that is SwAV's swapped prediction of the two "
        "views' balanced prototype codes (antssl.ssl.objectives.swav_loss); the rest is "
        "train.objective.",
    )
    prototype_balance: Literal["batch", "scene"] = Field(
        "batch",
        description="How SwAV's Sinkhorn step balances the prototype codes: batch: every "
        "prototype used equally over the batch (SwAV); scene: equally within each scene of "
        "the batch, so no prototype can stand for one scene.",
    )
    embedding: Literal["features", "prototypes"] = Field(
        "prototypes",
        description="What the embed stage, /v1/embed and the index store for a tile: "
        "prototypes: its softmax over the learned prototypes (train.prototypes values; "
        "neighbours share surface types rather than scenes: bench/RESULTS.md §5b, tenth "
        "round); features: the encoder's embedding (with train.descriptor appended).",
    )
    prototype_temperature: float = Field(
        0.02,
        gt=0,
        description="With embedding: prototypes, the softmax temperature (lower: each tile "
        "closer to one-hot on its nearest prototype, fewer same-scene neighbours, slightly "
        "lower P@10; 0.02 chosen on the sample archive's validation site: bench/RESULTS.md "
        "§5b, eleventh round).",
    )
    texture_weight: float = Field(
        4.0,
        ge=0,
        description="Weight of an auxiliary target added to the objective: the embedding "
        "regresses hand-made texture statistics of each view (gradient magnitude, "
        "orientation coherence, Laplacian, at 1/2/4 px; antssl.ssl.texture), as masked "
        "feature prediction does with HOG. 0: off.",
    )
    cross_scene_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the objective whose positives come from other scenes: each "
        "tile's nearest tile of another scene in the batch (NNCLR restricted to other "
        "scenes; antssl.ssl.step.forward_step). 0: off.",
    )
    scene_negatives_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the objective contrasted among tiles of one scene only (its "
        "negatives from the anchor's scene: scene identity cannot help there; "
        "antssl.ssl.objectives.scene_conditional_nt_xent). 0: off.",
    )
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    batch_size: int = Field(64, ge=2, description="Global batch size (split over workers).")
    steps: int = Field(200, ge=1)
    warmup_steps: int = Field(20, ge=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    checkpoint_every: int = Field(50, ge=1)
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=0, description="Worker-group restarts a run survives.")
    log_every: int = Field(10, ge=1, description="Steps between progress reports.")
    num_to_keep: int = Field(3, ge=1, description="Checkpoints kept on the workspace.")
    shuffle_buffer: int = Field(
        1024,
        ge=0,
        description="Tiles each worker holds to shuffle the stream's batches; with the blocks "
        "read in a random order, batches mix scenes. 0: batches in stream order. Not used when "
        "reading the tile cache, whose read tasks mix scenes themselves.",
    )
    materialize: bool = Field(
        True,
        description="Hold the streamed tile dataset in the object store across epochs (no "
        "re-reads; the tile cache makes this unnecessary).",
    )
    inject_failure_at_step: int | None = Field(
        None,
        description="Fault-tolerance drill: the last worker dies once at this step (first attempt "
        "only), and the run must resume from its latest checkpoint.",
    )
    seed: int = 0

    @property
    def swav_weight(self) -> float:
        """The SwAV share of the objective: ``prototype_weight`` when the model has
        prototypes, else 0."""
        return float(self.prototype_weight) if self.prototypes else 0.0

    @property
    def needs_scene_ids(self) -> bool:
        """Whether the training step needs each tile's scene (cross-scene positives,
        scene-conditional negatives, per-scene prototype codes)."""
        return (
            self.cross_scene_weight > 0
            or self.scene_negatives_weight > 0
            or (self.swav_weight > 0 and self.prototype_balance == "scene")
        )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_steps >= self.steps:
            raise ValueError(
                f"train.warmup_steps ({self.warmup_steps}) must be < train.steps ({self.steps})"
            )
        if self.prototypes == 1:
            raise ValueError("train.prototypes must be 0 (none) or >= 2, got 1")
        if self.embedding == "prototypes":
            if self.prototypes < 2 or self.prototype_weight <= 0:
                raise ValueError(
                    f"train.embedding: prototypes needs learned prototypes: train.prototypes "
                    f">= 2 (got {self.prototypes}) and train.prototype_weight > 0 (got "
                    f"{self.prototype_weight}); or set train.embedding: features"
                )
            if self.descriptor != "none":
                raise ValueError(
                    f"train.descriptor: {self.descriptor} is appended to the features, which "
                    "train.embedding: prototypes does not store; set train.embedding: features "
                    "to keep it, or train.descriptor: none"
                )
        if self.batch_size < 2 * self.num_workers:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must give each of the "
                f"{self.num_workers} workers at least 2 tiles"
            )
        return self


class EmbedConfig(_Section):
    """The embed stage (Ray Data batch inference into Zarr)."""

    batch_size: int = Field(256, ge=1, description="Tiles per forward pass.")
    concurrency: int = Field(1, ge=1, description="Embedder actors in the pool.")
    num_gpus: float = Field(0, ge=0, description="GPUs per embedder actor (0 = CPU).")
    cpus_per_actor: float = Field(1.0, gt=0)
    chunk_rows: int = Field(4096, ge=1, description="Zarr chunk length along the tile axis.")
    dtype: Literal["float32", "float16"] = "float32"
    overwrite: bool = Field(False, description="Discard an existing store and re-embed all.")
    inject_failure_after_chunks: int | None = Field(
        None, description="Crash drill: the job dies once this many chunks are written."
    )


class ClusterConfig(_Section):
    """The cluster stage (distributed mini-batch k-means on Ray)."""

    k: int | list[int] = Field(8, description="Clusters, or candidates scored by silhouette.")
    metric: Literal["cosine", "euclidean"] = "cosine"
    batch_size: int = Field(4096, ge=1, description="Rows per mini-batch step.")
    max_iter: int = Field(
        100, ge=1, description="Mini-batch steps at most (the Lloyd passes finish the job)."
    )
    tol: float = Field(0.0, ge=0, description="Stop when the centroid shift falls below this.")
    refine_iters: int = Field(2, ge=0, description="Full Lloyd passes after the mini-batches.")
    num_actors: int = Field(2, ge=1, description="Actors, each owning a range of Zarr chunks.")
    hold: Literal["auto", "float32", "float16"] = Field(
        "auto",
        description="dtype the actors hold rows in; auto: float16 from 5e8 values (~3.9 M "
        "tiles at D = 128), halving their memory (distances stay float32).",
    )
    silhouette_sample: int = Field(5000, ge=10)
    exemplars: int = Field(6, ge=1, description="Exemplar tiles per cluster (nearest centroid).")
    overwrite: bool = Field(
        False, description="Replace an existing clustering with other settings."
    )
    recluster: bool = Field(
        False, description="Re-cluster everything when tiles were appended (default: assign them)."
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> ClusterConfig:
        ks = self.k if isinstance(self.k, list) else [self.k]
        if not ks or any(k < 2 for k in ks):
            raise ValueError(f"cluster.k must be >= 2 (or a list of such), got {self.k}")
        return self


class IndexConfig(_Section):
    """The index stage (``antssl index``): an approximate-nearest-neighbour index of the
    embeddings for the service (:mod:`antssl.search.ann`, faiss), at ``<workspace>/index/``.

    The service uses it while it was built from the current embeddings (else exact search,
    with a warning). ``auto`` builds IVF-Flat from ``min_rows`` tiles up and records "exact"
    below (exact search is ~4 ms per query at 1e5 x 128 on one core: bench/RESULTS.md).
    """

    kind: Literal["auto", "exact", "ivf", "hnsw", "ivfpq"] = Field(
        "auto",
        description="auto: exact below min_rows tiles, ivf up to ivfpq_min_rows, then ivfpq "
        "(sharded, compressed: antssl.search.shards).",
    )
    min_rows: int = Field(100_000, ge=1, description="Smallest store auto builds an index for.")
    ivfpq_min_rows: int = Field(
        5_000_000,
        ge=1,
        description="Smallest store auto builds the sharded ivfpq index for (each service "
        "replica then holds its shard's codes, not every embedding).",
    )
    shard_rows: int = Field(
        10_000_000,
        ge=1,
        description="ivfpq: tiles per shard (shards = ceil(tiles / shard_rows)) unless "
        "index.shards is set; one Serve deployment per shard.",
    )
    shards: int | None = Field(None, ge=1, description="ivfpq: number of shards (overrides).")
    pq_m: int = Field(
        32, ge=1, description="ivfpq: bytes per vector (product-quantiser sub-vectors; divides D)."
    )
    rerank: int = Field(
        256, ge=1, description="ivfpq: candidates per shard re-scored from the stored rows."
    )
    rerank_dtype: Literal["float16", "float32"] = Field(
        "float16",
        description="ivfpq: rows kept for re-scoring; float16 halves disk and page cache "
        "(cosines within 1e-3), float32 re-scores exactly.",
    )
    nlist: int | None = Field(
        None, ge=1, description="ivf cells (inverted lists); default 4 sqrt(N), at most N / 40."
    )
    nprobe: int | None = Field(
        None, ge=1, description="ivf cells scanned per query; unset: calibrated to target_recall."
    )
    hnsw_m: int = Field(32, ge=4, description="hnsw links per node (M).")
    ef_construction: int = Field(100, ge=8, description="hnsw candidate list while inserting.")
    ef_search: int | None = Field(
        None, ge=1, description="hnsw candidate list per query; unset: calibrated."
    )
    target_recall: float = Field(
        0.97,
        gt=0,
        le=1,
        description="recall@10 the calibrated search setting must reach (a returned tile "
        "tied with the exact 10th neighbour, to 1e-5 in cosine, counts as found).",
    )
    recall_queries: int = Field(
        200, ge=10, description="Stored tiles used as queries to measure recall@10 vs exact."
    )
    threads: int | None = Field(None, ge=1, description="faiss build threads (default: all).")
    seed: int = Field(0, ge=0, description="Seed of the k-means sample and recall queries.")


Baseline = Literal["pca_pixels", "intensity_stats", "texture", "random_backbone", "mean_brightness"]


class EvaluateConfig(_Section):
    """Embedding-quality evaluation against label rasters (``antssl evaluate``).

    Tiles of the scored scenes are planned with the same mask and tiling as the workspace,
    labelled from a raster on each scene's pixel grid, and scored for the learned encoder
    and the baselines (EVAL-PROTOCOL.md). Results go to ``<workspace>/eval/``.
    """

    labels: str | None = Field(
        None,
        description="Label raster URI template with {scene_id} (and optionally {scene_dir}, "
        "the folder of the scene). A bare file name such as '{scene_id}_mask.tif' is looked "
        "for next to each scene; anything else is a path or URI as everywhere in the config.",
    )
    label_kind: Literal["classes", "binary"] = Field(
        "classes",
        description="classes: one integer class per pixel, tile = majority class; binary: "
        "non-zero = positive, tile label from its positive fraction.",
    )
    class_names: dict[int, str] | None = Field(
        None, description="Names of the label values in the report (e.g. {1: fractured})."
    )
    ignore: int | None = Field(
        None, description="Label value that is not a class (nodata); not counted anywhere."
    )
    min_purity: float = Field(
        0.6, ge=0, le=1, description="classes: a tile's majority class must cover this share."
    )
    positive_fraction: float = Field(
        0.05, ge=0, le=1, description="binary: positive when at least this share is marked."
    )
    negative_fraction: float = Field(
        0.005, ge=0, le=1, description="binary: negative when less than this share is marked."
    )
    drop_empty_scenes: bool = Field(
        True,
        description="binary: leave out scenes whose label raster marks nothing (an empty "
        "mask does not mean 'no positives').",
    )
    scenes: ScenesConfig | None = Field(
        None,
        description="Scenes to score (uris / glob / stac); the workspace's scenes when unset. "
        "bands, nodata and allow_no_crs default to the top-level scenes section's.",
    )
    tiling: dict[str, Any] | None = Field(
        None,
        description="The scored tiles' tiling where it differs from the top-level tiling "
        "section, which the encoder was pretrained on: keys of that section (e.g. "
        "{max_nodata_fraction: 0} to score only tiles without nodata while pretraining also "
        "on tiles at the ice front); the keys not given are the top-level section's.",
    )
    checkpoint: str | None = Field(
        None,
        description="Another workspace URI (its latest pretraining) or a checkpoint directory "
        "URI to evaluate; this workspace's latest checkpoint when unset.",
    )
    probe_train: list[str] | None = Field(
        None,
        description="Scenes the linear probe is fitted on: glob patterns on the scene id, or "
        "on the end of the scene URI when a pattern holds '/' (data_trainset/*). The probe is "
        "scored on the other scenes. When unset, "
        "the scenes are split in two halves at random (seed), grouped by scene.",
    )
    probe_fit_scenes: ScenesConfig | None = Field(
        None,
        description="Scenes (uris / glob / stac, as evaluate.scenes) the linear probe is "
        "fitted on, outside the scored scenes: the probe is then scored on every scored "
        "tile, in the same run. Their tiles are labelled by the same rules; they take no part "
        "in retrieval or k-means. Excludes probe_train.",
    )
    same_scene_warn: float = Field(
        2.0,
        gt=1,
        description="Warn when a method's same-scene rate@k exceeds this many times chance "
        "(its neighbours come from the query's own scene: the features tell scenes apart).",
    )
    precision_k: int = Field(10, ge=1, le=1000, description="k of retrieval precision@k.")
    kmeans_k: list[int] = Field(
        default_factory=lambda: [2, 8, 16], description="k of the k-means agreement scores."
    )
    kmeans_restarts: int = Field(
        10,
        ge=1,
        le=100,
        description="k-means runs per k (seeds seed, seed+1, …); the lowest-inertia run is "
        "scored, as scikit-learn's n_init: one run's NMI moves by ±0.07 with its seed alone.",
    )
    exclude_radius_km: float | None = Field(
        None,
        gt=0,
        description="Leave out neighbours closer than this (km, scene CRS in metres) instead "
        "of every neighbour from the query's own scene. Needs georeferenced scenes.",
    )
    baselines: list[Baseline] = Field(
        default_factory=lambda: list(get_args(Baseline)),
        description="Baselines computed on the same tiles in the same run.",
    )
    max_tiles: int = Field(
        20000, ge=10, description="Labelled tiles scored at most (a seeded random subset)."
    )
    batch_size: int = Field(256, ge=1, description="Tiles per forward pass (CPU, no grad).")
    queries: int = Field(2, ge=0, le=10, description="Example queries per class in queries.png.")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> EvaluateConfig:
        if self.negative_fraction > self.positive_fraction:
            raise ValueError(
                f"evaluate.negative_fraction ({self.negative_fraction}) must be <= "
                f"evaluate.positive_fraction ({self.positive_fraction})"
            )
        if not self.kmeans_k or any(k < 2 for k in self.kmeans_k):
            raise ValueError(f"evaluate.kmeans_k must list values >= 2, got {self.kmeans_k}")
        if self.labels is not None and "{scene_id}" not in self.labels:
            raise ValueError(
                f"evaluate.labels must contain {{scene_id}} (one label raster per scene), "
                f"got {self.labels!r}"
            )
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"evaluate.baselines lists a baseline twice: {self.baselines}")
        if self.probe_train is not None and not self.probe_train:
            raise ValueError("evaluate.probe_train must list at least one pattern, or be unset")
        if self.probe_train is not None and self.probe_fit_scenes is not None:
            raise ValueError(
                "set evaluate.probe_train (scored scenes the probe is fitted on) or "
                "evaluate.probe_fit_scenes (other scenes), not both"
            )
        return self


class ServeConfig(_Section):
    """The HTTP service (``antssl serve``, ``build_app`` args override these keys).

    CPU shares left unset are fitted to the CPUs Ray reports (defaults 0.25 per ingress,
    1.0 for the search, 1.0 for the embedder, scaled down together when they do not fit);
    explicit values are kept, and a service that cannot fit fails at start naming the
    shortfall. ``replicas`` unset: 2 Api replicas when Ray reports 1.5 CPUs or more (one
    survives the loss of the other), up to 4 on larger clusters, else 1.
    """

    host: str = Field("127.0.0.1", description="Bind address of `antssl serve` (0.0.0.0: all).")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of `antssl serve`.")
    replicas: int | None = Field(
        None, ge=1, le=64, description="Api (HTTP ingress) replicas; unset: fitted to the CPUs."
    )
    ingress_cpus: float | None = Field(None, gt=0, description="CPUs per Api replica.")
    search_cpus: float | None = Field(
        None, gt=0, description="CPUs of the search (added to each Api replica's when in it)."
    )
    embedder_cpus: float | None = Field(None, gt=0, description="CPUs of the Embedder replica.")
    shard_cpus: float | None = Field(
        None,
        gt=0,
        description="CPUs per SearchShard replica (sharded ivfpq index only); unset: fitted.",
    )
    shard_replicas: int = Field(
        1, ge=1, le=64, description="Replicas per SearchShard deployment (sharded index only)."
    )
    num_gpus: float = Field(0, ge=0, description="GPUs of the Embedder replica.")
    fit_to_cluster: bool = Field(
        True,
        description="Fit unset CPU shares and replicas to the CPUs Ray reports, and fail at start "
        "when explicit ones cannot fit. Turn off on an autoscaling cluster, where Ray adds nodes "
        "for replicas that wait.",
    )
    search_in_ingress: bool = Field(
        True,
        description="Search inside each Api replica (one Serve hop less per request; each "
        "replica holds the embeddings and ANN index in memory), else in a Search deployment.",
    )
    max_k: int = Field(100, ge=1, le=10_000, description="Largest k a request may ask for.")
    max_body_bytes: int = Field(8 * 2**20, ge=1024, description="Largest request body accepted.")
    max_examples: int = Field(50, ge=1, description="Most example tiles in one query.")
    max_ongoing_requests: int = Field(64, ge=1, description="Concurrent requests per replica.")
    max_queued_requests: int = Field(128, ge=0, description="Queued beyond that, then 503.")
    embed_batch_size: int = Field(32, ge=1, description="Dynamic batch size of the embedder.")
    request_timeout_s: float = Field(
        30.0, gt=0, description="`antssl serve`: a request not answered by then gets 503/408."
    )
    auth_token_env: str = Field(
        "ANTSSL_API_TOKEN",
        description="Environment variable holding the bearer token of the read routes; auth is "
        "off when unset.",
    )
    admin_token_env: str = Field(
        "ANTSSL_ADMIN_TOKEN",
        description="Environment variable holding the bearer token of /v1/reload (and the "
        "details of /readyz); when unset, /v1/reload takes the read token (or none).",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (none: CORS off)."
    )
    access_log: bool = Field(False, description="Log one line per request (antssl.serve.access).")
    reload_check_s: float = Field(
        30.0, ge=0, description="How often a request may check the store for a new version."
    )


def local_file_uri(path: str) -> str:
    """A plain path or ``file://`` URI as an absolute ``file://`` URI (``~`` expanded,
    relative to the working directory). The one place this is done: the workspace
    validator below and :func:`antssl.storage.normalize_uri` (which imports this module)."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    return "file://" + str(Path(path).expanduser().absolute())


class Config(_Section):
    """The whole antssl configuration."""

    workspace: str = Field(
        "file://./workspace", description="URI root of every output.", validate_default=True
    )
    storage: StorageConfig = StorageConfig()
    scenes: ScenesConfig = ScenesConfig()
    mask: MaskConfig = MaskConfig()
    tiling: TilingConfig = TilingConfig()
    data: DataConfig = DataConfig()
    cache: CacheConfig = CacheConfig()
    train: TrainConfig = TrainConfig()
    embed: EmbedConfig = EmbedConfig()
    cluster: ClusterConfig = ClusterConfig()
    index: IndexConfig = IndexConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    serve: ServeConfig = ServeConfig()

    @field_validator("workspace")
    @classmethod
    def _absolute_workspace(cls, v: str) -> str:
        """A local workspace as an absolute ``file://`` URI, resolved against the working
        directory of the process that reads the config (the driver). Ray Train runs its
        workers in their own directories, where a relative path would name another place."""
        if "://" in v and not v.startswith("file://"):
            return v  # s3:// (an unsupported scheme is refused where it is opened)
        return local_file_uri(v)

    @model_validator(mode="after")
    def _check_evaluate_tiling(self) -> Config:
        if self.evaluate.tiling is not None:
            scored_tiling(self)  # unknown keys and bad values named now, not at evaluate
        return self

    def digest(self, *sections: str) -> str:
        """Short stable hash of the named sections (all when none), for idempotence checks."""
        dumped = self.model_dump(mode="json")
        part = {k: dumped[k] for k in sections} if sections else dumped
        blob = json.dumps(part, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The config as YAML (it holds no secrets)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            allowed = _allowed_keys(parent)
            lines.append(f"  {key}: unknown key; allowed keys here: {', '.join(allowed)}")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {key}: {e['msg']}{shown}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return sorted(model.model_fields)


def parse_config(data: dict[str, Any] | None, source: str = "<dict>") -> Config:
    """Validate a mapping into a :class:`Config`, raising :class:`ConfigError` on bad input."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {source} must be a mapping of keys, got {type(data).__name__}")
    secrets = sorted(_secret_keys(data))
    if secrets:
        raise ConfigError(
            f"config {source} holds credentials ({', '.join(secrets)}): remove them; antssl reads "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN from the environment"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


_SECRET_NAMES = {
    "key",
    "secret",
    "token",
    "password",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "access_key",
    "secret_key",
}


def _secret_keys(data: Any, prefix: str = "") -> set[str]:
    """Dotted names of keys that look like credentials (values are never shown)."""
    found: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            name = f"{prefix}{k}"
            if str(k).lower() in _SECRET_NAMES:
                found.add(name)
            found |= _secret_keys(v, name + ".")
    return found


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None).

    ``overrides`` is a nested mapping merged over the file (used by the CLI).
    Relative ``file://`` or plain paths are relative to the working directory; the workspace
    is made absolute here (Ray Train's workers run elsewhere).
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {source} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {source} is not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {source} must hold a mapping of keys")
        data = loaded or {}
    if overrides:
        data = _merge(data, overrides)
    return parse_config(data, source)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def scored_tiling(config: Config) -> TilingConfig:
    """The tiling of the evaluate stage's scored tiles: the top-level ``tiling`` with the
    keys of ``evaluate.tiling`` replaced.

    Raises:
        ValueError: ``evaluate.tiling`` names a key the tiling section does not have, or a
            value it refuses (the message names ``evaluate.tiling``).
    """
    over = config.evaluate.tiling
    if not over:
        return config.tiling
    unknown = sorted(set(over) - set(TilingConfig.model_fields))
    if unknown:
        raise ValueError(
            f"evaluate.tiling has no key {', '.join(map(repr, unknown))}; allowed: "
            + ", ".join(TilingConfig.model_fields)
        )
    try:
        return TilingConfig.model_validate({**config.tiling.model_dump(), **over})
    except ValidationError as err:
        bad = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"evaluate.tiling {over}: {bad}") from None
