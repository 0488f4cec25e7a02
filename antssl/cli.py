"""The ``antssl`` command: one sub-command per stage, plus sample data, the demo and the service.

Stage sub-commands are built from the stage registry (:mod:`antssl.stages`). Every
command parses ``--config`` once into a :class:`~antssl.config.Config` and passes that
object down. Progress goes through logging (INFO by default, DEBUG with ``-v``); errors
antssl raises on purpose are printed as one clear message (exit 2), without a traceback; so is
a write the operating system refused (full disk, permissions, read-only), naming the file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from antssl import logs
from antssl.config import Config, load_config
from antssl.demo import DEMO_SCENES, run_demo
from antssl.errors import AntsslError
from antssl.stages import PIPELINE, STAGES, Stage, run_pipeline


def _config(args: argparse.Namespace, stage: Stage | None = None) -> Config:
    overrides: dict[str, Any] = {}
    if getattr(args, "workspace", None):
        overrides["workspace"] = args.workspace
    for opt in stage.options if stage else ():
        value = getattr(args, opt.flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            *parents, leaf = opt.key.split(".")
            node = overrides
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return load_config(args.config, overrides)


def _stage_command(stage: Stage) -> Any:
    def command(args: argparse.Namespace) -> None:
        uri = stage.run(_config(args, stage), force=args.force)
        print(f"{stage.name}: {uri}")

    command.__doc__ = stage.help
    return command


def _print_outputs(outputs: dict[str, str], seconds: float) -> None:
    print(f"pipeline: done in {seconds:.0f} s")
    for name, uri in outputs.items():
        print(f"  {name:<11} {uri}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    """All pipeline stages in order; each skips itself when its output is complete."""
    start = time.perf_counter()
    outputs = run_pipeline(_config(args), force=args.force)
    _print_outputs(outputs, time.perf_counter() - start)


def cmd_sample_data(args: argparse.Namespace) -> None:
    from antssl.demo import write_sample

    cfg_path = write_sample(
        Path(args.out),
        n_scenes=args.scenes,
        size=args.size,
        bands=args.bands,
        seed=args.seed,
        first_scene=args.first_scene,
    )
    print(f"config: {cfg_path}  (run: antssl tiles --config {cfg_path})")


def cmd_stream(args: argparse.Namespace) -> None:
    """Stream every tile through Ray Data once and report the rate."""
    from antssl.data import stream_rate

    n, total, shape, seconds = stream_rate(_config(args))
    print(f"streamed {n} of {total} tiles {shape} in {seconds:.1f} s ({n / seconds:.0f} tiles/s)")


def cmd_demo(args: argparse.Namespace) -> None:
    """The embedded default end to end: sample scenes, then the whole pipeline."""
    start = time.perf_counter()
    cfg_path, outputs = run_demo(Path(args.dir), args.scenes, args.heldout_scenes)
    _print_outputs(outputs, time.perf_counter() - start)
    print(f"next: antssl serve --config {cfg_path}   (then open http://127.0.0.1:8000/map)")


def cmd_serve(args: argparse.Namespace) -> None:
    """Run the service on this Ray instance until interrupted (Ctrl-C or SIGTERM).

    Options left unset take the config's ``serve`` section (then its defaults)."""
    from antssl.serve.app import run_service

    keys = ("host", "port", "replicas", "ingress_cpus", "search_cpus", "embedder_cpus")
    keys += ("num_gpus", "max_body_bytes", "request_timeout_s")
    serve_args: dict[str, Any] = {"config": args.config}
    if args.workspace:
        serve_args["workspace"] = args.workspace
    serve_args.update({k: getattr(args, k) for k in keys if getattr(args, k) is not None})
    if args.access_log:
        serve_args["access_log"] = True
    if args.cors_origin:
        serve_args["cors_origins"] = args.cors_origin
    run_service(
        _config(args),
        serve_args,
        on_ready=lambda url: print(
            f"antssl service on {url} (OpenAPI: {url}/docs); Ctrl-C stops it\n"
            f"map viewer: {url}/map",
            flush=True,
        ),
    )


def cmd_query(args: argparse.Namespace) -> None:
    """A small client of the service: print a table, or write the GeoJSON."""
    import json

    from antssl.client import query

    doc = query(args)
    if args.geojson:
        Path(args.geojson).write_text(json.dumps(doc, indent=2))
        print(f"wrote {args.geojson}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="antssl", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
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

    def stage_parser(name: str, text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=text, description=text)
        c.add_argument("--config", required=True, help="YAML config file")
        c.add_argument("--workspace", help="override the config's workspace URI")
        return c

    for stage in STAGES:
        c = stage_parser(stage.name, stage.help)
        c.add_argument("--force", action="store_true", help="redo even if complete")
        for opt in stage.options:
            c.add_argument(opt.flag, help=f"{opt.help} (sets {opt.key})")
        c.set_defaults(func=_stage_command(stage))
    steps = " → ".join(s.name for s in PIPELINE)
    c = stage_parser("pipeline", f"all stages in order ({steps}), skipping finished ones")
    c.add_argument("--force", action="store_true", help="redo every stage")
    c.set_defaults(func=cmd_pipeline)
    c = stage_parser("stream", "stream every tile through Ray Data once (read rate)")
    c.set_defaults(func=cmd_stream)

    sv = sub.add_parser("serve", help="run the HTTP service (Ray Serve)")
    sv.add_argument("--config", required=True, help="YAML config file")
    sv.add_argument("--workspace", help="override the config's workspace URI")
    sv.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 for all)")
    sv.add_argument("--port", type=int, help="HTTP port (default 8000)")
    sv.add_argument("--replicas", type=int, help="Api replicas (default: fitted to the CPUs)")
    sv.add_argument("--ingress-cpus", type=float, help="CPUs per Api replica")
    sv.add_argument("--search-cpus", type=float, help="CPUs of the search in each Api replica")
    sv.add_argument("--embedder-cpus", type=float, help="CPUs of the Embedder replica")
    sv.add_argument("--num-gpus", type=float, help="GPUs of the Embedder replica")
    sv.add_argument("--max-body-bytes", type=int, help="largest request body (default 8 MiB)")
    sv.add_argument("--request-timeout-s", type=float, help="per-request timeout (default 30)")
    sv.add_argument("--access-log", action="store_true", help="log one line per request")
    sv.add_argument(
        "--cors-origin", action="append", help="allow this origin (CORS; repeat for several)"
    )
    sv.set_defaults(func=cmd_serve)

    from antssl.client import add_arguments

    q = sub.add_parser("query", help="query a running service")
    add_arguments(q)
    q.set_defaults(func=cmd_query)

    d = sub.add_parser("demo", help="run the embedded default end to end")
    d.add_argument("--dir", default="antssl-demo", help="folder for sample data and workspace")
    d.add_argument("--scenes", type=int, default=DEMO_SCENES, help="pretraining sample scenes")
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
    logs.configure(verbose=args.verbose)
    try:
        args.func(args)
    except AntsslError as err:
        print(f"antssl: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a write refused below antssl.storage (a library's own file I/O)
        from antssl.storage import is_write_refusal, write_error

        if not is_write_refusal(err):
            raise
        print(f"antssl: error: {write_error(str(err.filename or '?'), err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
