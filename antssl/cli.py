"""The ``antssl`` command: one sub-command per stage, plus sample data and the demo.

Every command parses ``--config`` once into a :class:`~antssl.config.Config`
and passes that object down. Errors antssl raises on purpose are printed as
one clear message (exit 2), without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from antssl.config import Config, load_config
from antssl.errors import AntsslError


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    if getattr(args, "workspace", None):
        overrides["workspace"] = args.workspace
    return load_config(args.config, overrides)


def cmd_sample_data(args: argparse.Namespace) -> None:
    from antssl.sample import write_sample_data

    data = write_sample_data(
        args.out,
        n_scenes=args.scenes,
        size=args.size,
        bands=args.bands,
        seed=args.seed,
        first_scene=args.first_scene,
    )
    cfg_path = Path(args.out) / "config.yaml"
    cfg_path.write_text(
        yaml.safe_dump(sample_config(data.root, Path(args.out) / "workspace"), sort_keys=False)
    )
    print(f"wrote {len(data.scenes)} scene(s), labels, coastline and mask to {data.root}")
    print(f"config: {cfg_path}  (run: antssl tiles --config {cfg_path})")


def sample_config(sample_dir: Path, workspace: Path) -> dict[str, Any]:
    """The config of the embedded default: sample scenes, their coastline, a local workspace."""
    from antssl.sample import CLASSES as SAMPLE_CLASSES

    return {
        "workspace": f"file://{workspace.absolute()}",
        "scenes": {"glob": f"file://{sample_dir.absolute()}/scene_*[0-9].tif"},
        "mask": {
            "kind": "coastline",
            "vector": f"file://{sample_dir.absolute()}/coastline.gpkg",
            "layers": ["land", "ice_shelves"],
            "seaward_km": 6.0,
            "inland_km": 6.0,
        },
        "tiling": {"size": 64, "stride": 32, "min_mask_fraction": 0.3, "max_nodata_fraction": 0.1},
        # Sized to finish in a few minutes on 2 CPU cores; raise steps/width on real data.
        "train": {
            "width": 16,
            "depth": 1,
            "embed_dim": 64,
            "proj_dim": 64,
            "steps": 120,
            "warmup_steps": 10,
            "batch_size": 64,
            "checkpoint_every": 40,
            "log_every": 20,
            "num_workers": 2,
            "cpus_per_worker": 0.5,
            "lr": 0.002,
            # The sample's surface types differ in reflectance: brightness/contrast jitter
            # would teach the encoder to ignore exactly that (bench/RESULTS.md §5).
            "augment": {"jitter_prob": 0.0},
        },
        "embed": {"chunk_rows": 256, "batch_size": 128},
        "cluster": {"k": [4, 6, 8], "batch_size": 512, "max_iter": 100, "num_actors": 2},
        # `antssl evaluate`: the surface-type label raster written beside each scene.
        "evaluate": {
            "labels": "{scene_id}_labels.tif",
            "label_kind": "classes",
            "ignore": 0,
            "class_names": {k: v for k, v in SAMPLE_CLASSES.items() if k != 0},
            "kmeans_k": [2, 6],
        },
    }


def cmd_tiles(args: argparse.Namespace) -> None:
    from antssl import tiles

    tiles.run(_config(args), force=args.force)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from antssl import train

    train.run(_config(args))


def cmd_embed(args: argparse.Namespace) -> None:
    from antssl import embed

    embed.run(_config(args))


def cmd_cluster(args: argparse.Namespace) -> None:
    from antssl import cluster

    cluster.run(_config(args))


def cmd_index(args: argparse.Namespace) -> None:
    from antssl import index_stage

    index_stage.run(_config(args), force=args.force)


def cmd_maps(args: argparse.Namespace) -> None:
    from antssl import maps_stage

    maps_stage.run(_config(args))


def cmd_pipeline(args: argparse.Namespace) -> None:
    """All stages in order; each skips itself when its output is complete for this config."""
    from antssl import cluster, embed, tiles, train

    config = _config(args)
    start = time.perf_counter()
    outputs = {
        "tiles": tiles.run(config),
        "checkpoint": train.run(config),
        "embeddings": embed.run(config),
    }
    cluster.run(config)
    from antssl import index_stage, workspace

    outputs["maps"] = workspace.maps_uri(config)
    outputs["index"] = index_stage.run(config)
    print(f"pipeline: done in {time.perf_counter() - start:.0f} s")
    for name, uri in outputs.items():
        print(f"  {name:<11} {uri}")


def cmd_stream(args: argparse.Namespace) -> None:
    """Stream every tile through Ray Data once and report the rate."""
    from antssl import catalog, workspace
    from antssl.data import tile_dataset
    from antssl.reader import BandStats
    from antssl.runtime import ensure_ray
    from antssl.storage import read_text
    from antssl.tiles import load_infos

    config = _config(args)
    cat = catalog.read(workspace.catalog_uri(config), config.storage)
    stats = BandStats.from_json(read_text(workspace.stats_uri(config), config.storage))
    ensure_ray(config)
    start, n, shape = time.perf_counter(), 0, None
    for batch in tile_dataset(cat, load_infos(config), config, stats).iter_batches(batch_size=None):
        n += len(batch["tile_id"])
        shape = batch["image"].shape[1:]
    dt = time.perf_counter() - start
    print(f"streamed {n} of {len(cat)} tiles {shape} in {dt:.1f} s ({n / dt:.0f} tiles/s)")


def cmd_demo(args: argparse.Namespace) -> None:
    """The embedded default end to end: sample scenes, then the whole pipeline."""
    from antssl.sample import write_sample_data

    root = Path(args.dir)
    data = write_sample_data(root / "sample", n_scenes=args.scenes)
    cfg_path = root / "config.yaml"
    cfg = sample_config(data.root, root / "workspace")
    if args.heldout_scenes:
        # scenes of the same coast that no stage sees: `antssl evaluate` scores these, so
        # the quality figures are not measured on the pretraining tiles
        held = write_sample_data(
            root / "heldout", n_scenes=args.heldout_scenes, first_scene=args.scenes
        )
        cfg["evaluate"]["scenes"] = {"glob": f"file://{held.root.absolute()}/scene_*[0-9].tif"}
        print(f"held-out scenes for `antssl evaluate`: {held.root} ({len(held.scenes)} scenes)")
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"sample data: {data.root} ({len(data.scenes)} scenes); config: {cfg_path}")
    cmd_pipeline(argparse.Namespace(config=str(cfg_path), workspace=None, force=False))
    print(f"next: antssl serve --config {cfg_path}   (then open http://127.0.0.1:8000/docs)")


def cmd_serve(args: argparse.Namespace) -> None:
    """Run the service on this Ray instance until interrupted."""
    from ray import serve

    from antssl.runtime import ensure_ray
    from antssl.serve.app import build_app

    config = _config(args)
    ensure_ray(config)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve_args = {
        "config": args.config,
        **({"workspace": args.workspace} if args.workspace else {}),
    }
    serve.run(build_app(serve_args), name="antssl", route_prefix="/", blocking=False)
    print(f"antssl service on http://{args.host}:{args.port} (OpenAPI: /docs); Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


def cmd_query(args: argparse.Namespace) -> None:
    """A small client of the service: print a table, or write the GeoJSON."""
    import json

    from antssl.client import query

    doc = query(args)
    if args.geojson:
        Path(args.geojson).write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.geojson}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Score the encoder and baselines against label rasters; report in <workspace>/eval/."""
    from antssl.evaluate import stage

    overrides: dict[str, Any] = {}
    if args.workspace:
        overrides["workspace"] = args.workspace
    if args.labels:
        overrides["evaluate"] = {"labels": args.labels}
    stage.run(load_config(args.config, overrides), force=args.force)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="antssl", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sample-data", help="write synthetic EPSG:3031 sample scenes")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--scenes", type=int, default=3)
    s.add_argument(
        "--first-scene", type=int, default=0, help="index of the first scene (scale-out)"
    )
    s.add_argument("--size", type=int, default=512, help="scene edge in pixels")
    s.add_argument("--bands", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sample_data)

    for name, func, text in (
        ("tiles", cmd_tiles, "plan the coastal tile catalog, stats and previews"),
        ("stream", cmd_stream, "stream every tile through Ray Data once"),
        ("pretrain", cmd_pretrain, "self-supervised pretraining on Ray Train"),
        ("embed", cmd_embed, "embed every tile into the Zarr store"),
        ("cluster", cmd_cluster, "k-means on the embeddings, labels and maps"),
        ("maps", cmd_maps, "re-render the cluster maps of the current clustering"),
        ("index", cmd_index, "build the approximate-nearest-neighbour index for the service"),
        ("pipeline", cmd_pipeline, "all stages in order, skipping finished ones"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument("--config", required=True, help="YAML config file")
        c.add_argument("--workspace", help="override the config's workspace URI")
        c.add_argument("--force", action="store_true", help="redo even if complete")
        c.set_defaults(func=func)

    sv = sub.add_parser("serve", help="run the HTTP service (Ray Serve)")
    sv.add_argument("--config", required=True, help="YAML config file")
    sv.add_argument("--workspace", help="override the config's workspace URI")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 for all)")
    sv.add_argument("--port", type=int, default=8000)
    sv.set_defaults(func=cmd_serve)

    from antssl.client import add_arguments

    q = sub.add_parser("query", help="query a running service")
    add_arguments(q)
    q.set_defaults(func=cmd_query)

    ev = sub.add_parser("evaluate", help="embedding quality against label rasters (eval/)")
    ev.add_argument("--config", required=True, help="YAML config file")
    ev.add_argument("--workspace", help="override the config's workspace URI")
    ev.add_argument("--labels", help="label raster template with {scene_id} (evaluate.labels)")
    ev.add_argument("--force", action="store_true", help="redo even if complete")
    ev.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="run the embedded default end to end")
    d.add_argument("--dir", default="antssl-demo", help="folder for sample data and workspace")
    d.add_argument("--scenes", type=int, default=3)
    d.add_argument(
        "--heldout-scenes",
        type=int,
        default=6,
        help="further sample scenes, not tiled or trained on, for `antssl evaluate` (0: none)",
    )
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except AntsslError as err:
        print(f"antssl: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
