"""Request, response and argument models of the service (pydantic v2).

The examples name tiles of the demo data (``make demo``: three sample scenes), so the
"Try it out" buttons at /docs work on it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from antssl.config import Config, ServeConfig

EXAMPLE_TILE = "scene_000/256/128"
"""A tile of the demo data (used by the README and the OpenAPI examples)."""
EXAMPLE_TILES: list[Any] = ["scene_000/256/128", "scene_001/192/384"]
EXAMPLE_NEGATIVE = "scene_002/96/64"
EXAMPLE_LON, EXAMPLE_LAT = 82.693, -66.7416


class ServeArgs(ServeConfig):
    """Arguments of :func:`antssl.serve.app.build_app` (``serve run … config=…``): the
    config file, and any key of its ``serve`` section to override."""

    config: str = Field(..., description="Path of the antssl YAML config the stages ran with.")
    workspace: str | None = Field(None, description="Override the config's workspace URI.")

    def settings(self, config: Config) -> ServeConfig:
        """The config's ``serve`` section with the keys given here laid over it."""
        given = self.model_dump(include=self.model_fields_set - {"config", "workspace"})
        return ServeConfig.model_validate({**config.serve.model_dump(), **given})


class ErrorBody(BaseModel):
    """Every error answer (4xx and 5xx) has this body."""

    detail: str = Field(..., description="What was wrong, naming the field and the fix.")
    code: str = Field(..., description="Machine-readable kind, e.g. invalid_request, not_found.")
    request_id: str = Field(..., description="Also in the X-Request-ID header and the logs.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "k: 0 must be between 1 and 100",
                    "code": "invalid_request",
                    "request_id": "5b1d0c4e-…",
                }
            ]
        }
    )


class QueryArgs(BaseModel):
    """The query arguments shared by every way of asking for similar places."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, description="Number of analogue places to return (1 … max_k).")
    exclude_radius_km: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="Leave out tiles this close to the query."
    )
    bbox: list[float] | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="lon_min, lat_min, lon_max, lat_max (EPSG:4326).",
    )
    scenes: list[str] | None = Field(None, description="Only these scene ids.")
    include_self: bool = Field(False, description="Rank the example tiles themselves first.")
    distinct: bool = Field(True, description="Distinct places, not overlapping copies of one.")


class SimilarRequest(QueryArgs):
    """Body of ``POST /v1/similar`` (JSON): several example tiles, or a patch."""

    tile_ids: list[str] | None = Field(None, description="Positive example tile ids.")
    negatives: list[str] = Field(default_factory=list, description="Negative example tile ids.")
    pixels: list[Any] | None = Field(
        None, description="A patch, bands × H × W nested lists of raw scene values."
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"tile_ids": EXAMPLE_TILES, "negatives": [EXAMPLE_NEGATIVE], "k": 5},
                {"tile_ids": [EXAMPLE_TILE], "k": 5, "exclude_radius_km": 20},
            ]
        },
    )


class EmbedRequest(BaseModel):
    """Body of ``POST /v1/embed`` (JSON)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"pixels": [[[0.0] * 2] * 2] * 3}]},
    )

    pixels: list[Any] = Field(..., description="bands × H × W nested lists of raw scene values.")


class Embedding(BaseModel):
    embedding: list[float]
    dim: int


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    """``/readyz``: ``status`` for everyone; the rest with a token (when auth is on)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "not_ready"]


class Reloaded(BaseModel):
    version: str
    reloaded: bool
    tiles: int
    search: str


GEOJSON = "application/geo+json"
