"""Connecting to Ray: a local instance by default, a cluster when RAY_ADDRESS says so.

Quiet by default: the console shows antssl's own lines (and its progress bars); Ray's
progress bars, execution plans, per-report lines and known notices about its own actors go
to Ray's log files only (``/tmp/ray/session_latest/logs``: ``ray-data.log``, the workers'
logs). With ``-v`` (the ``antssl`` logger at DEBUG) Ray's console output is left as Ray
sets it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import ray

from antssl import storage
from antssl.config import Config
from antssl.errors import ClusterError

log = logging.getLogger(__name__)


def ensure_ray(config: Config, num_cpus: int | None = None) -> None:
    """Initialise Ray once, passing the storage environment to every worker.

    Uses ``RAY_ADDRESS`` (set by ``ray job submit`` and KubeRay) when present,
    otherwise starts a local instance without the dashboard.
    """
    if ray.is_initialized():
        quiet_ray()
        return
    quiet = not verbose()
    if quiet:  # "token authentication is enabled" on every start of a local instance
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
    logs_env = worker_log_env() if quiet else {"ANTSSL_VERBOSE": "1"}
    env: dict[str, object] = {"env_vars": {**storage.worker_env(config.storage), **logs_env}}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        try:
            ray.init(
                address=address,
                runtime_env=env,
                log_to_driver=True,  # antssl's lines from workers (pretrain's progress)
                logging_level=logging.WARNING if quiet else logging.INFO,
            )
        except (ConnectionError, TimeoutError, RuntimeError) as err:
            raise ClusterError(
                f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({err}); start one with "
                "`ray start --head`, fix the address, or unset RAY_ADDRESS to run locally"
            ) from err
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            runtime_env=env,
            logging_level=logging.WARNING,
        )
    quiet_ray()
    log.info("ray: %s", ray.cluster_resources())


def verbose() -> bool:
    """Whether antssl logs at DEBUG (``antssl -v``): then Ray's chatter is shown too."""
    return logging.getLogger("antssl").isEnabledFor(logging.DEBUG)


def worker_log_env() -> dict[str, str]:
    """Environment for Ray workers that keeps Ray Data's INFO lines in its log file
    (``ray-data.log``) and off the worker's console, which Ray forwards to the driver."""
    from importlib.resources import files

    return {
        "RAY_DATA_LOGGING_CONFIG": str(files("antssl") / "resources" / "ray-data-logging.yaml"),
        # Ray's internals calling Ray's deprecated APIs (not ours: ours are tested clean).
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }


def quiet_ray() -> None:
    """Ray Data without console progress bars or execution plans, its INFO lines to its log
    file only; called once Ray is up, in the driver (the settings travel with each
    dataset to the tasks and to Ray Train's split coordinator). A no-op with ``-v``."""
    if verbose():
        return
    drop_known_ray_notices()
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # antssl's stages draw their own
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    from ray._private.log import PlainRayHandler

    from antssl.logs import RayConsoleFilter

    # Ray's own console handler only: the "ray.data" logger may also hold handlers that are
    # not Ray's (e.g. copies of the root logger's, a test's capture) - those stay as they are
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler) is PlainRayHandler:
            handler.setLevel(logging.WARNING)
            if not any(isinstance(f, RayConsoleFilter) for f in handler.filters):
                handler.addFilter(RayConsoleFilter())


KNOWN_RAY_NOTICES = (
    # Ray's core worker, at ERROR level from C++, on Ray Train's own actor
    # (PreemptionWatcher): its restart could fail if its constructor arguments were lost
    # (ray-project/ray#53727). Not antssl's calls, nothing a user can act on; once per
    # pretraining run. (The same notice about Ray Data's MapWorker comes from the driver's
    # own C++ core, straight to its stderr, so it still shows once per embed run.)
    "has constructor arguments in the object store and max_restarts > 0",
    # The raylet, when `antssl serve` stops (SIGTERM, Ctrl-C): serve.shutdown() kills the
    # controller while Ray still holds its graceful_shutdown call, "There are infinite
    # retries remaining ... killed by `ray.kill`"; the service has already stopped cleanly.
    "Task ServeController.graceful_shutdown failed",
)

QUIET_RAY_ACTORS = (
    # Ray Train's placement-group cleaner asks the state API, which a local instance without
    # the dashboard does not serve, every few seconds ("Failed to query Ray Train Controller
    # actor state. State API may be temporarily unavailable.": 47 of a demo's 105 lines),
    # and its monitor thread dies with a 25-line traceback ("ConnectionError: Found multiple
    # active Ray instances") when another local Ray instance runs on the machine, e.g.
    # `antssl serve` beside `antssl pretrain`. It only cleans up after a crashed
    # controller; nothing in its output is the user's to act on.
    "PlacementGroupCleaner",
)


def drop_known_ray_notices() -> None:
    """In the driver: the lines holding one of :data:`KNOWN_RAY_NOTICES`, and every line of
    Ray's actors in :data:`QUIET_RAY_ACTORS`, stay off the console (Ray's log files under
    ``/tmp/ray/session_latest/logs`` keep them).

    Filters the two ways Ray prints other processes' lines in the driver (internal APIs:
    where one is missing or renamed, it prints as before): the handler through which
    ``ray.init(log_to_driver=True)`` prints what workers write (``ray_print_logs`` of its
    stream dispatcher), and ``print_to_stdstream``, through which it prints the error
    messages that the raylet sends the driver. Idempotent.
    """
    try:
        from ray._private import worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as streams
    except ImportError:  # pragma: no cover - a Ray without them prints as before
        return
    for name, handle in list(getattr(streams, "handlers", [])):
        if name == "ray_print_logs" and not getattr(handle, "antssl_filtered", False):
            streams.remove_handler(name)
            streams.add_handler(name, _filtering(handle))
    printer = getattr(ray_worker, "print_to_stdstream", None)
    if printer is not None and not getattr(printer, "antssl_filtered", False):
        ray_worker.print_to_stdstream = _filtering(printer)


def _filtering(print_lines: Callable[..., None]) -> Callable[..., None]:
    """``print_lines(data, ...)`` for Ray's line batches (``data["lines"]``, with the
    sender's ``pid`` and ``actor_name``) without the lines :func:`drop_known_ray_notices`
    keeps off the console."""

    def filtered(data: dict, *args: Any, **kwargs: Any) -> None:  # type: ignore[type-arg]
        if data.get("actor_name") in QUIET_RAY_ACTORS:
            return
        lines = [ln for ln in data.get("lines", []) if not is_known_ray_notice(str(ln))]
        if lines:
            print_lines({**data, "lines": lines}, *args, **kwargs)

    filtered.antssl_filtered = True  # type: ignore[attr-defined]
    return filtered


def is_known_ray_notice(line: str) -> bool:
    """Whether a console line from another Ray process is one of :data:`KNOWN_RAY_NOTICES`."""
    return any(notice in line for notice in KNOWN_RAY_NOTICES)


def quiet_train_worker() -> None:
    """In a Ray Train worker: Ray Train's line per ``ray.train.report`` ("Reporting training
    result …", logged under its module's file name) stays out of the console. A no-op with
    ``ANTSSL_VERBOSE=1`` in the worker's environment."""
    if os.environ.get("ANTSSL_VERBOSE") == "1":
        return
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, when nothing listens there (ray.init would retry)."""
    import socket
    from urllib.parse import urlparse

    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if not parsed.hostname or not parsed.port:
        return
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=5):
            return
    except OSError as err:
        raise ClusterError(
            f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({err}); start one with "
            "`ray start --head`, fix the address, or unset RAY_ADDRESS to run locally"
        ) from None
