"""Connecting to Ray: a local instance by default, a cluster when RAY_ADDRESS says so."""

from __future__ import annotations

import logging
import os

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
        return
    env = {"env_vars": storage.worker_env(config.storage)}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, runtime_env=env, log_to_driver=True)
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
    log.info("ray: %s", ray.cluster_resources())


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
