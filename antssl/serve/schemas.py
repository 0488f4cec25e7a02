"""Request and argument models of the service (pydantic v2)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ServeArgs(BaseModel):
    """Arguments of :func:`antssl.serve.app.build_app` (``serve run … config=…``)."""

    model_config = ConfigDict(extra="forbid")

    config: str = Field(..., description="Path of the antssl YAML config the stages ran with.")
    workspace: str | None = Field(None, description="Override the config's workspace URI.")
    max_k: int = Field(100, ge=1, le=10_000, description="Largest k a request may ask for.")
    max_body_bytes: int = Field(8 * 2**20, ge=1024, description="Largest request body accepted.")
    max_examples: int = Field(50, ge=1, description="Most example tiles in one query.")
    max_ongoing_requests: int = Field(64, ge=1, description="Concurrent requests per replica.")
    max_queued_requests: int = Field(128, ge=0, description="Queued beyond that, then 503.")
    embed_batch_size: int = Field(32, ge=1, description="Dynamic batch size of the embedder.")
    num_gpus: float = Field(0, ge=0, description="GPUs for the embedder replica.")
    embedder_cpus: float = Field(1.0, gt=0, description="CPUs for the embedder replica.")
    search_cpus: float = Field(
        1.0, gt=0, description="CPUs for the search (added to the ingress's when it holds it)."
    )
    search_in_ingress: bool = Field(
        True,
        description="Search inside the HTTP ingress replica (one Serve hop less per request; "
        "each ingress replica holds the embeddings and ANN index in memory), else in a "
        "separate Search deployment.",
    )
    ingress_cpus: float = Field(0.25, gt=0, description="CPUs for the HTTP ingress replica.")
    auth_token_env: str = Field(
        "ANTSSL_API_TOKEN",
        description="Environment variable holding the bearer token; auth is off when unset.",
    )
    reload_check_s: float = Field(
        30.0, ge=0, description="How often a request may check the store for a new version."
    )


class SimilarRequest(BaseModel):
    """Body of ``POST /v1/similar``: several example tiles, or an uploaded patch."""

    model_config = ConfigDict(extra="forbid")

    tile_ids: list[str] | None = Field(None, description="Positive example tile ids.")
    negatives: list[str] = Field(default_factory=list, description="Negative example tile ids.")
    pixels: list[Any] | None = Field(None, description="A patch, bands × H × W, raw scene values.")
    k: int = Field(10, description="Number of analogue places to return.")
    exclude_radius_km: float = Field(0.0, ge=0)
    bbox: list[float] | None = Field(None, description="lon_min, lat_min, lon_max, lat_max.")
    scenes: list[str] | None = None
    include_self: bool = False
    distinct: bool = True
