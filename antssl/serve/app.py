"""The Ray Serve application: a FastAPI ingress holding the search, and an embedder.

``build_app(args)`` returns the bound application; ``serve run
antssl.serve.app:build_app config=config.yaml`` and a RayService ``import_path``
both use it, and ``antssl serve`` (:func:`run_service`) runs it. Endpoints (OpenAPI at
/docs): ``POST /v1/embed``, ``GET /v1/tiles/{tile_id}``, ``GET|POST /v1/similar``,
``GET /v1/clusters``, ``POST /v1/reload``, ``GET /healthz``, ``GET /readyz``; and the map
viewer (``GET /`` or ``/map``) with what it loads: ``GET /v1/map/basemap``,
``GET /v1/map/tiles``, ``GET /v1/tiles/{tile_id}/image.png`` (:mod:`antssl.serve.viewer`).

By default each Api replica holds the search (catalog, embeddings, the ``antssl index``
ANN index) itself and answers on a worker thread: a request crosses the HTTP proxy and
one replica, and only patches go on to the Embedder. ``search_in_ingress: false`` puts
the search in its own deployment (one more hop, about 3-6 ms here: bench/RESULTS.md).
Replicas and CPU shares are fitted to the cluster (:mod:`antssl.serve.fit`). Request
bodies are bounded while they stream in and parsed on worker threads, so one upload
never stalls the other requests (:mod:`antssl.serve.http`, :mod:`antssl.serve.payload`).
"""

# No `from __future__ import annotations`: FastAPI must resolve the route signatures.

import asyncio
import gzip
import logging
import os
import threading
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Path, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from antssl.config import Config, ServeConfig, load_config
from antssl.errors import BadRequest, NotFound, StageOrderError
from antssl.reader import BandStats
from antssl.search import ann
from antssl.search.manifest import read_manifest
from antssl.search.service import ServiceIndex, ShardedServiceIndex, ShardServer
from antssl.serve import fit, http, viewer
from antssl.serve.errors import RETRY_AFTER_S
from antssl.serve.payload import (
    as_array,
    check_patch,
    describe,
    kind_of,
    parse_json,
    parse_patch,
)
from antssl.serve.schemas import (
    EXAMPLE_LAT,
    EXAMPLE_LON,
    EXAMPLE_TILE,
    GEOJSON,
    Embedding,
    EmbedRequest,
    ErrorBody,
    Health,
    Ready,
    Reloaded,
    ServeArgs,
    SimilarRequest,
)
from antssl.serve.viewer_image import MAX_SIZE

log = logging.getLogger(__name__)


def _config(args: ServeArgs) -> Config:
    return load_config(args.config, {"workspace": args.workspace} if args.workspace else None)


class GeoJSONResponse(JSONResponse):
    media_type = GEOJSON


_DESCRIPTIONS = {
    401: "A bearer token is required (auth on) and was missing or wrong.",
    403: "The bearer token is valid but not enough here (the read token on an admin route).",
    404: "The tile, place or route does not exist.",
    413: "The body is larger than the service accepts (max_body_bytes).",
    422: "A field has a bad value; `detail` names it.",
    500: "Internal error (logged with a traceback under the request id).",
    503: "Starting, reloading or overloaded: retry after Retry-After seconds.",
}


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
"""Errors are JSON whatever the route's success media type (GeoJSON, PNG)."""


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in (*codes, 500, 503):
        entry: dict[str, Any] = {"content": _ERROR_CONTENT, "description": _DESCRIPTIONS[code]}
        if code == 503:
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        if code in (401, 403):
            entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[code] = entry
    return out


def _geojson(kind: str, example: dict[str, Any] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {"type": {"const": kind}}}
    return {"content": {GEOJSON: {"schema": schema}}, "description": f"A GeoJSON {kind}."}


def _binary_body(model: type, examples: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI requestBody: JSON (``model``), a .npy array or a GeoTIFF."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"},
                    "examples": examples,
                },
                "application/octet-stream": {
                    **binary,
                    "description": "One .npy array (bands × H × W, numeric dtype).",
                },
                "image/tiff": {**binary, "description": "A GeoTIFF of bands × H × W pixels."},
            },
        }
    }


api = FastAPI(
    title="antssl",
    description="Analogue regions along Antarctica's coasts: embed a tile, find where else "
    "looks like it. Results are GeoJSON (RFC 7946, EPSG:4326). Every error answers "
    "`{detail, code, request_id}`. With auth on, send `Authorization: Bearer <token>`; "
    "/v1/reload takes the admin token when one is set.",
    version="0.1.0",
)


def _serve_request_id() -> str | None:
    """Ray Serve's id of the request being handled (also its X-Request-ID header)."""
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or None
    except Exception:  # noqa: BLE001 - a private API: a fresh id when it moves
        return None


http.install(api, (BackPressureError, DeploymentUnavailableError), _serve_request_id)
_bearer = HTTPBearer(auto_error=False, description="ANTSSL_API_TOKEN (admin: ANTSSL_ADMIN_TOKEN)")
_AUTH = [Security(_bearer)]


def _register_models(app: FastAPI) -> None:
    """Put the body models referenced by the hand-written request bodies into components."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (EmbedRequest, SimilarRequest, ErrorBody):
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in js.pop("$defs", {}).items():
                    comps.setdefault(name, sub)
                comps[model.__name__] = js
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_register_models(api)


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Embedder:
    """The checkpoint, loaded once; dynamic batching of single patches."""

    def __init__(self, args: ServeArgs) -> None:
        import torch  # here, not at the top: an Api replica starts ~2 s sooner without it

        from antssl.encoder import load_encoder

        config = _config(args)
        settings = args.settings(config)
        device = "cuda" if settings.num_gpus and torch.cuda.is_available() else "cpu"
        self.model, meta = load_encoder(config, device=device)
        self.device = torch.device(device)
        self.stats = BandStats(**meta["stats"])
        self.info = {
            "bands": len(self.stats.bands),
            "size": config.tiling.size,
            "dim": int(meta["spec"]["embed_dim"]),
            "step": int(meta["step"]),
        }
        self.embed_batch.set_max_batch_size(settings.embed_batch_size)

    def spec(self) -> dict[str, int]:
        return self.info

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed_batch(self, patches: list[np.ndarray]) -> list[np.ndarray]:
        import torch

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
    reloaded when the store or the index changes. Held by each Api replica itself
    (``search_in_ingress``, one hop less) or by the Search deployment. With several
    replicas, ``/v1/reload`` reloads the replica it reaches; the others follow on their
    next request after ``reload_check_s``."""

    def __init__(
        self,
        args: ServeArgs,
        search_cpus: float = 1.0,
        shards: list[DeploymentHandle] | None = None,
    ) -> None:
        self.config = _config(args)
        self.settings = args.settings(self.config)
        ann.set_threads(max(1, int(search_cpus)))  # one query at a time per thread
        self.shards = shards
        self.index: ServiceIndex | ShardedServiceIndex = self._load()
        self.checked = time.monotonic()
        self.lock = threading.Lock()

    def _load(self) -> ServiceIndex | ShardedServiceIndex:
        if self.shards is None:
            return ServiceIndex.load(self.config)
        return ShardedServiceIndex.load(self.config, _handle_scatter(self.shards))

    def reload(self, force: bool = True) -> dict[str, Any]:
        """Load the store again when its version or its ANN index changed."""
        with self.lock:
            before = self.index
            if force or ServiceIndex.current_version(self.config) != before.state:
                if self.shards is not None:
                    _handle_scatter(self.shards)("reload")
                self.index = self._load()
            self.checked = time.monotonic()
        return {
            "version": self.index.version,
            "reloaded": self.index is not before,
            "tiles": self.index.n_tiles,
            "search": self.index.search_kind,
        }

    def _maybe_reload(self) -> None:
        every = self.settings.reload_check_s
        if every and time.monotonic() - self.checked > every:
            self.reload(force=False)

    def status(self) -> dict[str, Any]:
        self._maybe_reload()
        info = self.index.ann_info
        kind = self.index.search_kind
        return {
            "tiles": self.index.n_tiles,
            "version": self.index.version,
            "clustered": self.index.clustered,
            "search": kind,
            "recall_at_10": 1.0 if kind == "exact" else info["index"]["recall_at_10"],
            "index": info["index"],
        }

    def tile(self, tile_id: str) -> dict[str, Any]:
        self._maybe_reload()
        return self.index.feature(tile_id)

    def clusters(self) -> dict[str, Any]:
        self._maybe_reload()
        return self.index.clusters()

    def similar(self, query: dict[str, Any], vector: np.ndarray | None = None) -> dict[str, Any]:
        self._maybe_reload()
        return self.index.similar(query, vector)

    def _map(self) -> viewer.MapData:
        """The viewer's data of the loaded index (tile columns, thumbnails), made per index."""
        if not isinstance(self.index, ServiceIndex):
            raise NotFound(
                f"the map viewer draws every tile; this service holds a sharded index of "
                f"{self.index.n_tiles} tiles: query /v1/similar, view the results in a GIS"
            )
        current: viewer.MapData | None = getattr(self, "_map_data", None)
        if current is None or current.index is not self.index:
            current = self._map_data = viewer.MapData(self.config, self.index)
        return current

    def map_tiles(self) -> bytes:
        self._maybe_reload()
        return self._map().tiles()

    def thumbnail(self, tile_id: str, size: int) -> bytes:
        self._maybe_reload()
        return self._map().thumbnail(tile_id, size)


def _handle_scatter(handles: list[DeploymentHandle]) -> Any:
    """Call a method on every shard deployment at once, then wait for all (shard order).
    Runs on a worker thread of the Api replica (see ``Api._search``), never on its loop."""

    def scatter(method: str, *args: Any) -> list[Any]:
        pending = [getattr(h, method).remote(*args) for h in handles]
        return [r.result() for r in pending]

    return scatter


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    health_check_period_s=2,
    health_check_timeout_s=5,
    graceful_shutdown_timeout_s=5,
)
class SearchShard(ShardServer):
    """One shard of a sharded (ivfpq) index: its codes in memory, its vectors and tile
    columns memory-mapped (copied to local disk first from object storage). One
    deployment per shard (``SearchShard<s>``); its replicas are interchangeable."""

    def __init__(self, args: ServeArgs, s: int) -> None:
        ann.set_threads(1)
        super().__init__(_config(args), s)


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Search(Searcher):
    """The search as its own deployment (``search_in_ingress: false``): scaled apart from
    the ingress, at the cost of one more hop per request."""


def _bbox(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not all(np.isfinite(box)):
        raise BadRequest(f"bbox: {text!r} must be lon_min,lat_min,lon_max,lat_max")
    return box


def _gzipped(request: Request, body: bytes, media_type: str) -> Response:
    """A response of gzip-compressed ``body``: sent compressed when the client accepts gzip."""
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return Response(body, media_type=media_type, headers=headers)
    plain = gzip.decompress(body)
    return Response(plain, media_type=media_type, headers={"Vary": "Accept-Encoding"})


_QUERY_KEYS = {"k", "exclude_radius_km", "bbox", "scene", "include_self", "distinct"}


@serve.deployment(
    max_ongoing_requests=64,
    max_queued_requests=128,
    health_check_period_s=2,  # a crashed replica is replaced ~2 s after (bench/failover.py)
    health_check_timeout_s=5,
    graceful_shutdown_timeout_s=5,
    # the proxy's own 503 (every replica's queue full) says when to retry, as ours do
    backpressure_config={"retry_after_s": RETRY_AFTER_S},
)
@serve.ingress(api)
class Api:
    """HTTP ingress: validation, size limits, auth, then the embedder and the search."""

    def __init__(
        self,
        embedder: DeploymentHandle,
        searcher: DeploymentHandle | None,
        args: ServeArgs,
        tokens: dict[str, str | None],
        search_cpus: float = 1.0,
        shards: list[DeploymentHandle] | None = None,
    ) -> None:
        config = _config(args)
        self.args = args.settings(config)
        http.configure_logging(self.args.access_log, self.args.cors_origins)
        self.embedder, self.searcher = embedder, searcher
        self.token, self.admin = tokens.get("read"), tokens.get("admin")
        self.local = Searcher(args, search_cpus, shards) if searcher is None else None
        self.spec: dict[str, int] | None = None

    def check_health(self) -> None:
        """Serve's health check: the replica holds a loaded search (or a handle to one)."""
        if self.local is None and self.searcher is None:
            raise StageOrderError("no search loaded")

    async def _search(self, method: str, *a: Any) -> Any:
        """``Searcher.<method>(*a)``: in this replica (on a worker thread, so the event loop
        keeps serving) or on the Search deployment."""
        if self.local is not None:
            return await asyncio.to_thread(getattr(self.local, method), *a)
        if self.searcher is None:
            raise StageOrderError("no search loaded")
        return await getattr(self.searcher, method).remote(*a)

    async def _model_spec(self) -> dict[str, int]:
        if self.spec is None:
            self.spec = await self.embedder.spec.remote()
        return self.spec

    def _auth(self, request: Request) -> None:
        http.check_token(request, self.token, self.admin)

    async def _embed(self, patch: np.ndarray) -> np.ndarray:
        return await self.embedder.remote(patch)

    async def _patch(self, request: Request, body: bytes, pixels: Any = None) -> np.ndarray:
        """The checked patch of a binary body (or of a JSON ``pixels`` value), parsed on a
        worker thread against the model's bands and tile size."""
        spec = await self._model_spec()
        bands, size = spec["bands"], spec["size"]
        if pixels is not None:
            return await asyncio.to_thread(
                lambda: check_patch(as_array(pixels, "pixels"), bands, size, "pixels")
            )
        ctype = request.headers.get("content-type", "")
        return await asyncio.to_thread(parse_patch, body, ctype, bands, size)

    def _k(self, k: int) -> int:
        if k <= 0 or k > self.args.max_k:
            raise BadRequest(f"k: {k} must be between 1 and {self.args.max_k}")
        return k

    @api.get("/healthz", response_model=Health, summary="Liveness (public)")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/readyz",
        response_model=Ready,
        summary="Readiness: status for everyone, details with a token",
        responses={
            **_errors(),
            503: {
                "model": Ready,
                "description": 'Not ready yet: `{"status": "not_ready"}`; retry after Retry-After.',
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            },
        },
        dependencies=_AUTH,
    )
    async def readyz(self, request: Request) -> Any:
        try:
            status = await self._search("status")
            model = await self._model_spec()
        except Exception as err:  # noqa: BLE001 - any failure here means "not ready"
            log.warning("readyz: not ready (%s)", err)
            return JSONResponse(
                {"status": "not_ready"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        tokens = [t for t in (self.token, self.admin) if t]
        given = http.bearer(request)
        if tokens and given not in tokens:
            return {"status": "ready"}
        return {"status": "ready", **status, "model": model}

    @api.post(
        "/v1/embed",
        response_model=Embedding,
        summary="Embed one patch (JSON pixels, .npy or GeoTIFF)",
        responses=_errors(401, 413, 422),
        dependencies=_AUTH,
        openapi_extra=_binary_body(EmbedRequest, {}),
    )
    async def embed(self, request: Request) -> dict[str, Any]:
        """Embed one patch (bands × H × W, raw scene values) sent as JSON ``{"pixels": …}``,
        a .npy array (``application/octet-stream``) or a GeoTIFF (``image/tiff``)."""
        self._auth(request)
        kind = kind_of(request.headers.get("content-type", ""))
        body = await http.read_body(request, self.args.max_body_bytes)
        if kind == "json":
            req = await asyncio.to_thread(parse_json, body, EmbedRequest)
            patch = await self._patch(request, body, req.pixels)
        else:
            patch = await self._patch(request, body)
        z = await self._embed(patch)
        return {"embedding": [float(v) for v in z], "dim": len(z)}

    @api.get("/", include_in_schema=False)
    async def viewer_page(self) -> Response:
        """The map viewer (public: the page holds no data; its requests carry the token)."""
        return self._static("index.html")

    @api.get("/map", include_in_schema=False)
    async def viewer_map(self) -> Response:
        return self._static("index.html")

    @api.get("/viewer/{name}", include_in_schema=False)
    async def viewer_file(self, name: str) -> Response:
        return self._static(name)

    def _static(self, name: str) -> Response:
        data, media = viewer.static_file(name)
        return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})

    @api.get(
        "/v1/map/basemap",
        summary="Land, ice shelves, coastline and graticule in EPSG:3031 (the viewer's basemap)",
        responses={200: _geojson("FeatureCollection"), **_errors(401, 422)},
        dependencies=_AUTH,
    )
    async def map_basemap(
        self,
        request: Request,
        tolerance_m: float = Query(1000.0, ge=100, le=50_000, allow_inf_nan=False),
    ) -> Response:
        """Natural Earth (shipped) land, ice shelves and coastline, simplified to
        ``tolerance_m``, and a lon/lat graticule; coordinates are whole EPSG:3031 metres
        and each feature's ``layer`` names its kind. Cached; gzip when accepted."""
        self._auth(request)
        body = await asyncio.to_thread(viewer.basemap, float(tolerance_m))
        return _gzipped(request, body, GEOJSON)

    @api.get(
        "/v1/map/tiles",
        summary="Every tile as columns (EPSG:3031 centre, size, cluster, scene) for the map",
        responses=_errors(401),
        dependencies=_AUTH,
    )
    async def map_tiles(self, request: Request) -> Response:
        """``{crs, version, n, ids, x, y, size, cluster, scene, scenes}``: parallel arrays,
        one entry per tile (x, y: tile centre, size: edge, whole EPSG:3031 metres; cluster
        -1: unclustered; scene: index into ``scenes``, each with its ``outline`` ring).
        Built once per loaded store version; gzip when accepted."""
        self._auth(request)
        return _gzipped(request, await self._search("map_tiles"), "application/json")

    @api.get(
        "/v1/tiles/{tile_id:path}/image.png",
        response_class=Response,
        summary="A tile's pixels as a PNG thumbnail",
        responses={
            200: {"content": {"image/png": {}}, "description": "size × size RGBA PNG."},
            **_errors(401, 404, 422),
        },
        dependencies=_AUTH,
    )
    async def tile_image(
        self,
        request: Request,
        tile_id: str = Path(..., examples=[EXAMPLE_TILE]),
        size: int = Query(128, ge=16, le=MAX_SIZE, description="Edge in pixels (16 … 512)."),
    ) -> Response:
        """The tile's real pixels read from its workspace scene (bands 1-3 as RGB, or band 1
        grey), stretched between the tile's 2nd and 98th percentiles; nodata transparent.
        Cached per replica (LRU)."""
        self._auth(request)
        png = await self._search("thumbnail", tile_id, size)
        headers = {"Cache-Control": "private, max-age=300"}
        return Response(png, media_type="image/png", headers=headers)

    @api.get(
        "/v1/tiles/{tile_id:path}",
        response_class=GeoJSONResponse,
        summary="One tile as a GeoJSON Feature",
        responses={200: _geojson("Feature"), **_errors(401, 404, 422)},
        dependencies=_AUTH,
    )
    async def tile(
        self, request: Request, tile_id: str = Path(..., examples=[EXAMPLE_TILE])
    ) -> GeoJSONResponse:
        """One tile of the catalog as a GeoJSON Feature (footprint polygon, EPSG:4326)."""
        self._auth(request)
        return GeoJSONResponse(await self._search("tile", tile_id))

    @api.get(
        "/v1/similar",
        response_class=GeoJSONResponse,
        summary="Analogue places of a tile or a point",
        responses={200: _geojson("FeatureCollection"), **_errors(401, 404, 422)},
        dependencies=_AUTH,
    )
    async def similar_get(
        self,
        request: Request,
        tile_id: str | None = Query(None, min_length=1, examples=[EXAMPLE_TILE]),
        lon: float | None = Query(None, ge=-180, le=180, examples=[EXAMPLE_LON]),
        lat: float | None = Query(None, ge=-90, le=90, examples=[EXAMPLE_LAT]),
        k: int = Query(10, description="Number of places (1 … max_k)."),
        exclude_radius_km: float = Query(0.0, ge=0, allow_inf_nan=False),
        bbox: str | None = Query(None, description="lon_min,lat_min,lon_max,lat_max"),
        scene: list[str] | None = Query(None, description="Only these scene ids (repeat)."),
        include_self: bool = False,
        distinct: bool = True,
    ) -> GeoJSONResponse:
        """Analogue places of a tile (``tile_id``) or of the tile under ``lon``/``lat``."""
        self._auth(request)
        if (tile_id is None) == (lon is None or lat is None):
            raise BadRequest("tile_id or lon+lat: give exactly one way to name the query tile")
        if tile_id is not None and (lon is not None or lat is not None):
            raise BadRequest("tile_id or lon+lat: give one of them, not both")
        query = {
            "tile_ids": [tile_id] if tile_id else None,
            "lon": lon,
            "lat": lat,
            "k": self._k(k),
            "exclude_radius_km": exclude_radius_km,
            "bbox": _bbox(bbox),
            "scenes": scene,
            "include_self": include_self,
            "distinct": distinct,
        }
        return GeoJSONResponse(await self._search("similar", query))

    @api.post(
        "/v1/similar",
        response_class=GeoJSONResponse,
        summary="Analogue places of example tiles (JSON) or of a patch (JSON, .npy, GeoTIFF)",
        responses={200: _geojson("FeatureCollection"), **_errors(401, 404, 413, 422)},
        dependencies=_AUTH,
        openapi_extra=_binary_body(
            SimilarRequest,
            {
                "tiles": {
                    "summary": "Several example tiles, one negative",
                    "value": SimilarRequest.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                }
            },
        ),
    )
    async def similar_post(
        self,
        request: Request,
        k: int | None = Query(None, description="Binary bodies only (JSON: in the body)."),
        exclude_radius_km: float | None = Query(None, ge=0, allow_inf_nan=False),
        bbox: str | None = Query(None, description="Binary bodies only."),
        scene: list[str] | None = Query(None, description="Binary bodies only."),
        include_self: bool | None = Query(None),
        distinct: bool | None = Query(None),
    ) -> GeoJSONResponse:
        """Analogue places of several example tiles (``tile_ids``, optional ``negatives``) or
        of a patch: ``pixels`` in a JSON body, or a .npy / GeoTIFF body with the query
        arguments in the URL. A JSON body carries its arguments itself (URL ones: 422)."""
        self._auth(request)
        kind = kind_of(request.headers.get("content-type", ""))
        unknown = set(request.query_params) - _QUERY_KEYS
        if unknown:
            raise BadRequest(f"{sorted(unknown)[0]}: unknown query argument")
        body = await http.read_body(request, self.args.max_body_bytes)
        if kind == "json":
            if request.query_params:
                name = next(iter(request.query_params))
                raise BadRequest(f"{name}: with a JSON body, give the arguments in the body")
            req = await asyncio.to_thread(parse_json, body, SimilarRequest)
        else:
            given = {
                "k": k,
                "exclude_radius_km": exclude_radius_km,
                "bbox": _bbox(bbox),
                "scenes": scene,
                "include_self": include_self,
                "distinct": distinct,
            }
            try:
                req = SimilarRequest.model_validate(
                    {n: v for n, v in given.items() if v is not None}
                )
            except ValidationError as err:
                raise BadRequest(describe(err.errors(include_url=False))) from None
        self._k(req.k)
        query = req.model_dump(exclude={"pixels"})
        if kind != "json":
            return GeoJSONResponse(
                await self._search("similar", query, await self._vector(request, body))
            )
        if req.pixels is not None:
            if req.tile_ids or req.negatives:
                raise BadRequest("pixels and tile_ids: give one of them, not both")
            vector = await self._embed(await self._patch(request, body, req.pixels))
            return GeoJSONResponse(await self._search("similar", query, vector))
        if not req.tile_ids:
            raise BadRequest("tile_ids or pixels: one of them is required")
        if len(req.tile_ids) + len(req.negatives) > self.args.max_examples:
            raise BadRequest(f"tile_ids: at most {self.args.max_examples} examples per query")
        return GeoJSONResponse(await self._search("similar", query))

    async def _vector(self, request: Request, body: bytes) -> np.ndarray:
        return await self._embed(await self._patch(request, body))

    @api.get(
        "/v1/clusters",
        summary="Cluster sizes and exemplar tiles",
        responses=_errors(401, 404),
        dependencies=_AUTH,
    )
    async def clusters(self, request: Request) -> dict[str, Any]:
        """Size, scene shares and exemplar tiles of each cluster."""
        self._auth(request)
        return await self._search("clusters")

    @api.post(
        "/v1/reload",
        response_model=Reloaded,
        summary="Load a new store version or index (admin token)",
        responses=_errors(401, 403),
        dependencies=_AUTH,
    )
    async def reload(self, request: Request) -> dict[str, Any]:
        """Load a new version of the store (e.g. after new coastlines were embedded). Takes
        the admin token when one is set (the read token then gets 403), else the read token
        when auth is on."""
        lesser = (self.token,) if self.admin else ()
        http.check_token(request, self.admin or self.token, what="/v1/reload", lesser=lesser)
        return await self._search("reload", False)


def _cluster_resources() -> tuple[float | None, float | None]:
    """CPUs and GPUs Ray reports for the whole cluster (None, None without Ray)."""
    import ray

    if not ray.is_initialized():
        return None, None
    res = ray.cluster_resources()
    return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))


def plan_for(args: ServeArgs | dict[str, Any]) -> tuple[ServeArgs, ServeConfig, fit.Plan]:
    """The parsed args, the effective serve settings and the resource plan."""
    if not isinstance(args, ServeArgs):
        args = ServeArgs.model_validate(args)
    config = _config(args)
    settings = args.settings(config)  # a bad config fails here, before any replica
    cpus, gpus = _cluster_resources()
    return args, settings, fit.plan(settings, cpus, gpus, shards=_shard_count(config))


def _shard_count(config: Config) -> int:
    """SearchShard deployments the workspace's index asks for (0: not sharded)."""
    manifest = read_manifest(config)
    return len(manifest["shards"]) if manifest and manifest.get("kind") == "ivfpq" else 0


def _serve_log_level() -> str:
    """Ray Serve's own level on the console: its controller, proxy and replica lines
    ("Deploying new version", "Adding 1 replica", "Started …") stay in its log files
    (``/tmp/ray/session_latest/logs/serve/``) unless ``antssl -v``."""
    from antssl.runtime import verbose

    return "INFO" if verbose() else "WARNING"


def build_app(args: ServeArgs | dict[str, Any], announce: bool = True) -> Any:
    """The bound Serve application (``serve run antssl.serve.app:build_app config=…``);
    ``announce``: log the resource plan (``antssl serve`` logs it once itself)."""
    args, s, p = plan_for(args)
    if announce:
        log.info("antssl serve: %s", p.describe())
    tokens = {
        "read": os.environ.get(s.auth_token_env) or None,
        "admin": os.environ.get(s.admin_token_env) or None,
    }
    logging_config = {"enable_access_log": s.access_log, "log_level": _serve_log_level()}
    embedder = Embedder.options(
        ray_actor_options={"num_cpus": p.embedder_cpus, "num_gpus": p.num_gpus},
        logging_config=logging_config,
    ).bind(args)
    searcher, shards = None, None
    if n_shards := _shard_count(_config(args)):
        # one deployment per shard; the Api replicas scatter to them and merge
        shards = [
            SearchShard.options(
                name=f"SearchShard{i}",
                num_replicas=s.shard_replicas,
                ray_actor_options={"num_cpus": p.shard_cpus},
                logging_config=logging_config,
            ).bind(args, i)
            for i in range(n_shards)
        ]
        log.info("antssl serve: sharded index, %d SearchShard deployment(s)", len(shards))
    elif p.search_replica_cpus is not None:
        searcher = Search.options(
            ray_actor_options={"num_cpus": p.search_replica_cpus}, logging_config=logging_config
        ).bind(args, p.search_cpus)
    return Api.options(
        num_replicas=p.replicas,
        max_ongoing_requests=s.max_ongoing_requests,
        max_queued_requests=s.max_queued_requests,
        ray_actor_options={"num_cpus": p.api_cpus},
        logging_config=logging_config,
    ).bind(embedder, searcher, args, tokens, p.search_cpus, shards)


def run_service(
    config: Config,
    serve_args: dict[str, Any],
    on_ready: Any = None,
    ready_timeout_s: float = 180.0,
) -> None:
    """``antssl serve``: start Ray (local, or RAY_ADDRESS) and the app; block until Ctrl-C
    or SIGTERM. Fails with a ConfigError naming the shortfall when the service cannot fit
    the cluster, or when it is not running after ``ready_timeout_s``."""
    import signal

    from antssl.runtime import ensure_ray

    ensure_ray(config)
    args, s, p = plan_for(serve_args)
    log.info("antssl serve: %s on %s:%s", p.describe(), s.host, s.port)
    # this process's own Ray Serve lines ("Started Serve in namespace …") too
    logging.getLogger("ray.serve").setLevel(_serve_log_level())
    serve.start(
        http_options={"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s},
        logging_config={"log_level": _serve_log_level(), "enable_access_log": s.access_log},
    )

    def _stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        app = build_app(args, announce=False)
        serve._run(app, name="antssl", route_prefix="/", _blocking=False)
        _wait_running("antssl", ready_timeout_s)
        if on_ready is not None:
            on_ready(f"http://{s.host}:{s.port}")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()


def _wait_running(name: str, timeout_s: float) -> None:
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(name)
        if app is not None and app.status == ApplicationStatus.RUNNING:
            return
        if app is not None and app.status == ApplicationStatus.DEPLOY_FAILED:
            raise StageOrderError(f"the service failed to start: {app.message}")
        if time.monotonic() > deadline:
            waiting = (
                {d: v.message or str(v.status) for d, v in app.deployments.items()} if app else {}
            )
            raise StageOrderError(
                f"the service is not running after {timeout_s:.0f} s ({waiting}); replicas "
                "waiting for resources: lower --replicas or the --*-cpus options"
            )
        time.sleep(0.5)
