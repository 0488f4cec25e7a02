"""``antssl query``: a small HTTP client of the service, printing tables or GeoJSON."""

from __future__ import annotations

import argparse
import os
from typing import Any

import httpx

from antssl.errors import ServiceError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    p.add_argument(
        "--token",
        default=os.environ.get("ANTSSL_API_TOKEN"),
        help="bearer token (default: $ANTSSL_API_TOKEN)",
    )
    p.add_argument("--geojson", help="write the response (GeoJSON) to this file")
    what = p.add_subparsers(dest="what", required=True)
    s = what.add_parser("similar", help="analogue places of a tile, a point or examples")
    s.add_argument("--tile-id", action="append", help="example tile (repeat for several)")
    s.add_argument("--negative", action="append", default=[], help="negative example tile")
    s.add_argument("--lon", type=float)
    s.add_argument("--lat", type=float)
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--exclude-radius-km", type=float, default=0.0)
    s.add_argument("--include-self", action="store_true")
    t = what.add_parser("tile", help="one tile as a GeoJSON Feature")
    t.add_argument("tile_id")
    what.add_parser("clusters", help="cluster sizes and exemplars")


def query(args: argparse.Namespace) -> dict[str, Any]:
    """Send the request ``args`` describe, print a summary table, return the JSON."""
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=60) as c:
        try:
            if args.what == "tile":
                r = c.get(f"/v1/tiles/{args.tile_id}")
            elif args.what == "clusters":
                r = c.get("/v1/clusters")
            elif args.tile_id and (len(args.tile_id) > 1 or args.negative):
                r = c.post(
                    "/v1/similar",
                    json={
                        "tile_ids": args.tile_id,
                        "negatives": args.negative,
                        "k": args.k,
                        "exclude_radius_km": args.exclude_radius_km,
                        "include_self": args.include_self,
                    },
                )
            else:
                params: dict[str, Any] = {
                    "k": args.k,
                    "exclude_radius_km": args.exclude_radius_km,
                    "include_self": args.include_self,
                }
                if args.tile_id:
                    params["tile_id"] = args.tile_id[0]
                else:
                    params.update(lon=args.lon, lat=args.lat)
                r = c.get("/v1/similar", params=params)
        except httpx.HTTPError as err:
            raise ServiceError(f"cannot reach the service at {args.url}: {err}") from err
    ctype = r.headers.get("content-type", "").split(";")[0].strip()
    doc = r.json() if ctype == "application/json" or ctype.endswith("+json") else {}
    if r.status_code >= 400:
        code = f" {doc['code']}" if doc.get("code") else ""
        raise ServiceError(f"HTTP {r.status_code}{code}: {doc.get('detail', r.text)}")
    _print(args.what, doc)
    return dict(doc)


def _print(what: str, doc: dict[str, Any]) -> None:
    if what == "similar":
        print(f"{'rank':>4} {'score':>7} {'cluster':>7}  {'tile_id':<28} {'lon':>9} {'lat':>8}")
        for f in doc["features"]:
            p = f["properties"]
            lon, lat = (f["geometry"] or {}).get("coordinates", [float("nan")] * 2)
            print(
                f"{p['rank']:>4} {p['score']:>7.4f} {p['cluster']:>7}  {p['tile_id']:<28} "
                f"{lon:>9.4f} {lat:>8.4f}"
            )
    elif what == "clusters":
        for c in doc["clusters"]:
            print(
                f"cluster {c['cluster']:>3}: {c['size']:>7} tiles  "
                f"exemplars: {', '.join(c.get('exemplars', [])[:3])}"
            )
    else:
        print(doc.get("id"), doc.get("properties"))
