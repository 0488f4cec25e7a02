"""The Ray Serve application: a FastAPI ingress holding the search, and an embedder.

``build_app(args)`` returns the bound application; ``serve run
antssl.serve.app:build_app config=config.yaml`` and a RayService ``import_path``
both use it. Endpoints (OpenAPI at /docs): ``POST /v1/embed``,
``GET /v1/tiles/{tile_id}``, ``GET|POST /v1/similar``, ``GET /v1/clusters``,
``POST /v1/reload``, ``GET /healthz``, ``GET /readyz``.

By default the Api replica holds the search (catalog, embeddings, the ``antssl index``
ANN index) itself and answers on a worker thread: a request crosses the HTTP proxy and
one replica, and only patches go on to the Embedder. ``search_in_ingress: false`` puts
the search in its own deployment (one more hop, about 3-6 ms here: bench/RESULTS.md).
"""

# No `from __future__ import annotations`: FastAPI must resolve the route signatures.

import asyncio
import hmac
import os
import threading
import time
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from antssl import ann
from antssl.config import load_config
from antssl.reader import BandStats
from antssl.serve.errors import BadRequest, TooLarge, Unauthorized, status_of
from antssl.serve.index import ServiceIndex
from antssl.serve.payload import as_array, check_patch, parse_patch
from antssl.serve.schemas import ServeArgs, SimilarRequest

api = FastAPI(
    title="antssl",
    description="Analogue regions along Antarctica's coasts: embed a tile, find where else "
    "looks like it. Results are GeoJSON (RFC 7946, EPSG:4326).",
    version="0.1.0",
)


@api.exception_handler(Exception)
async def _errors(request: Request, err: Exception) -> JSONResponse:
    code = status_of(err)
    detail = str(err) if code < 500 else f"internal error: {type(err).__name__}"
    return JSONResponse({"detail": detail}, status_code=code)


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Embedder:
    """The checkpoint, loaded once; dynamic batching of single patches."""

    def __init__(self, args: ServeArgs) -> None:
        from antssl.train import load_encoder

        config = _config(args)
        device = "cuda" if args.num_gpus and torch.cuda.is_available() else "cpu"
        self.model, meta = load_encoder(config, device=device)
        self.device = torch.device(device)
        self.stats = BandStats(**meta["stats"])
        self.info = {
            "bands": len(self.stats.bands),
            "size": config.tiling.size,
            "dim": int(meta["spec"]["embed_dim"]),
            "step": int(meta["step"]),
        }
        self.embed_batch.set_max_batch_size(args.embed_batch_size)

    def spec(self) -> dict[str, int]:
        return self.info

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed_batch(self, patches: list[np.ndarray]) -> list[np.ndarray]:
        x = np.stack(patches).astype(np.float32)
        mean = np.asarray(self.stats.mean, np.float32)[None, :, None, None]
        std = np.asarray(self.stats.std, np.float32)[None, :, None, None]
        t = torch.from_numpy((x - mean) / std).to(self.device)
        with torch.inference_mode():
            z = self.model.embed(t).float().cpu().numpy()
        return list(z)

    async def __call__(self, patch: np.ndarray) -> np.ndarray:
        return await self.embed_batch(patch)


class Searcher:
    """The catalog, the Zarr embeddings and the ANN index in memory (a :class:`ServiceIndex`),
    reloaded when the store or the index changes. Held by the Api replica itself
    (``search_in_ingress``, one hop less) or by the Search deployment."""

    def __init__(self, args: ServeArgs) -> None:
        self.args = args
        self.config = _config(args)
        ann.set_threads(max(1, int(args.search_cpus)))  # one query at a time per thread
        self.index = ServiceIndex.load(self.config)
        self.checked = time.monotonic()
        self.lock = threading.Lock()

    def reload(self, force: bool = True) -> dict[str, Any]:
        """Load the store again when its version or its ANN index changed."""
        with self.lock:
            before = self.index
            if force or ServiceIndex.current_version(self.config) != before.state:
                self.index = ServiceIndex.load(self.config)
            self.checked = time.monotonic()
        return {
            "version": self.index.version,
            "reloaded": self.index is not before,
            "tiles": len(self.index.search),
            "search": self.index.search_kind,
        }

    def _maybe_reload(self) -> None:
        if self.args.reload_check_s and time.monotonic() - self.checked > self.args.reload_check_s:
            self.reload(force=False)

    def status(self) -> dict[str, Any]:
        info = self.index.ann_info
        return {
            "tiles": len(self.index.search),
            "version": self.index.version,
            "clustered": self.index.clustered,
            "search": self.index.search_kind,
            "recall_at_10": 1.0 if self.index.ann is None else info["index"]["recall_at_10"],
            "index": info["index"],
        }

    def tile(self, tile_id: str) -> dict[str, Any]:
        return self.index.feature(tile_id)

    def clusters(self) -> dict[str, Any]:
        return self.index.clusters()

    def similar(self, query: dict[str, Any], vector: np.ndarray | None = None) -> dict[str, Any]:
        self._maybe_reload()
        return self.index.similar(query, vector)


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Search(Searcher):
    """The search as its own deployment (``search_in_ingress: false``): scaled apart from
    the ingress, at the cost of one more hop per request."""


@serve.deployment(max_ongoing_requests=64, max_queued_requests=128)
@serve.ingress(api)
class Api:
    """HTTP ingress: validation, size limits, auth, then the embedder and the search."""

    def __init__(
        self,
        embedder: DeploymentHandle,
        searcher: DeploymentHandle | None,
        args: ServeArgs,
        token: str | None,
    ) -> None:
        self.embedder, self.searcher, self.args, self.token = embedder, searcher, args, token
        self.local = Searcher(args) if searcher is None else None
        self.spec: dict[str, int] | None = None

    async def _search(self, method: str, *a: Any) -> Any:
        """``Searcher.<method>(*a)``: in this replica (on a worker thread, so the event loop
        keeps serving) or on the Search deployment."""
        if self.local is not None:
            return await asyncio.to_thread(getattr(self.local, method), *a)
        assert self.searcher is not None  # one of the two is set in __init__
        return await getattr(self.searcher, method).remote(*a)

    async def _model_spec(self) -> dict[str, int]:
        if self.spec is None:
            self.spec = await self.embedder.spec.remote()
        return self.spec

    def _auth(self, request: Request) -> None:
        if not self.token:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise Unauthorized("authorization: a valid 'Bearer <token>' header is required")

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.args.max_body_bytes:
            raise TooLarge(f"body: {declared} bytes; the limit is {self.args.max_body_bytes}")
        body = await request.body()
        if len(body) > self.args.max_body_bytes:
            raise TooLarge(f"body: {len(body)} bytes; the limit is {self.args.max_body_bytes}")
        if not body:
            raise BadRequest("body: empty")
        return body

    async def _embed(self, patch: np.ndarray, field: str = "pixels") -> np.ndarray:
        spec = await self._model_spec()
        return await self.embedder.remote(check_patch(patch, spec["bands"], spec["size"], field))

    def _k(self, k: int) -> int:
        if k <= 0 or k > self.args.max_k:
            raise BadRequest(f"k: {k} must be between 1 and {self.args.max_k}")
        return k

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> dict[str, Any]:
        status = await self._search("status")
        return {"status": "ready", **status, "model": await self._model_spec()}

    @api.post("/v1/embed")
    async def embed(self, request: Request) -> dict[str, Any]:
        """Embed one patch (bands × H × W) sent as JSON ``{"pixels": …}``, .npy or GeoTIFF."""
        self._auth(request)
        body = await self._body(request)
        z = await self._embed(parse_patch(body, request.headers.get("content-type", "")))
        return {"embedding": [float(v) for v in z], "dim": len(z)}

    @api.get("/v1/tiles/{tile_id:path}")
    async def tile(self, tile_id: str, request: Request) -> dict[str, Any]:
        """One tile of the catalog as a GeoJSON Feature (footprint polygon)."""
        self._auth(request)
        return await self._search("tile", tile_id)

    @api.get("/v1/similar")
    async def similar_get(
        self,
        request: Request,
        tile_id: str | None = None,
        lon: float | None = None,
        lat: float | None = None,
        k: int = 10,
        exclude_radius_km: float = Query(0.0, ge=0),
        bbox: str | None = None,
        scene: list[str] | None = Query(None),
        include_self: bool = False,
        distinct: bool = True,
    ) -> dict[str, Any]:
        """Analogue places of a tile (``tile_id``) or of the tile under ``lon``/``lat``."""
        self._auth(request)
        if (tile_id is None) == (lon is None or lat is None):
            raise BadRequest("tile_id or lon+lat: give exactly one way to name the query tile")
        box = None
        if bbox is not None:
            try:
                box = [float(v) for v in bbox.split(",")]
            except ValueError:
                raise BadRequest(
                    f"bbox: {bbox!r} must be lon_min,lat_min,lon_max,lat_max"
                ) from None
        query = {
            "tile_ids": [tile_id] if tile_id else None,
            "lon": lon,
            "lat": lat,
            "k": self._k(k),
            "exclude_radius_km": exclude_radius_km,
            "bbox": box,
            "scenes": scene,
            "include_self": include_self,
            "distinct": distinct,
        }
        return await self._search("similar", query)

    @api.post("/v1/similar")
    async def similar_post(self, request: Request) -> dict[str, Any]:
        """Analogue places of several example tiles (``tile_ids``, optional ``negatives``) or
        of an uploaded patch (``pixels`` in JSON, or a .npy / GeoTIFF body with query args)."""
        self._auth(request)
        body = await self._body(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                req = SimilarRequest.model_validate_json(body)
            except ValidationError as err:
                first = err.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "body"
                raise BadRequest(f"{field}: {first['msg']}") from None
        else:
            req = SimilarRequest(**{k: v for k, v in request.query_params.items() if k == "k"})
            req = req.model_copy(update={"pixels": None})
        self._k(req.k)
        vector = None
        if ctype != "application/json":
            vector = await self._embed(parse_patch(body, ctype))
        elif req.pixels is not None:
            if req.tile_ids:
                raise BadRequest("pixels and tile_ids: give one of them, not both")
            vector = await self._embed(as_array(req.pixels, "pixels"))
        elif not req.tile_ids:
            raise BadRequest("tile_ids or pixels: one of them is required")
        elif len(req.tile_ids) + len(req.negatives) > self.args.max_examples:
            raise BadRequest(f"tile_ids: at most {self.args.max_examples} examples per query")
        return await self._search("similar", req.model_dump(exclude={"pixels"}), vector)

    @api.get("/v1/clusters")
    async def clusters(self, request: Request) -> dict[str, Any]:
        """Size, scene shares and exemplar tiles of each cluster."""
        self._auth(request)
        return await self._search("clusters")

    @api.post("/v1/reload")
    async def reload(self, request: Request) -> dict[str, Any]:
        """Load a new version of the store (e.g. after new coastlines were embedded)."""
        self._auth(request)
        return await self._search("reload", False)


def _config(args: ServeArgs):
    return load_config(args.config, {"workspace": args.workspace} if args.workspace else None)


def build_app(args: ServeArgs | dict[str, Any]) -> Any:
    """The bound Serve application (``serve run antssl.serve.app:build_app config=…``)."""
    if not isinstance(args, ServeArgs):
        args = ServeArgs.model_validate(args)
    _config(args)  # a bad config fails here, before any replica starts
    token = os.environ.get(args.auth_token_env) or None
    embedder = Embedder.options(
        ray_actor_options={"num_cpus": args.embedder_cpus, "num_gpus": args.num_gpus}
    ).bind(args)
    searcher = None
    ingress_cpus = args.ingress_cpus + (args.search_cpus if args.search_in_ingress else 0)
    if not args.search_in_ingress:
        searcher = Search.options(ray_actor_options={"num_cpus": args.search_cpus}).bind(args)
    return Api.options(
        max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests,
        ray_actor_options={"num_cpus": ingress_cpus},
    ).bind(embedder, searcher, args, token)
