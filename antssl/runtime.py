"""Connecting to Ray: a local instance by default, a cluster when RAY_ADDRESS says so."""

from __future__ import annotations

import logging
import os

import ray

from antssl import storage
from antssl.config import Config

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
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            runtime_env=env,
            logging_level=logging.WARNING,
        )
    log.info("ray: %s", ray.cluster_resources())
