"""Fitting the service's replicas and CPU shares to the cluster it runs on (pure).

The service is one Embedder replica and ``replicas`` Api replicas (each holding the search
unless ``search_in_ingress`` is off, then one Search replica). Unset CPU shares start from
:data:`DEFAULT_CPUS` and are scaled down together until the whole service fits in the CPUs
Ray reports; explicit ones are kept, and when they alone cannot fit, :func:`plan` raises a
:class:`~antssl.errors.ConfigError` naming the shortfall and the options that change it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from antssl.config import ServeConfig
from antssl.errors import ConfigError

DEFAULT_CPUS = {"ingress": 0.25, "search": 1.0, "embedder": 1.0, "shard": 1.0}
MERGE_CPUS = 0.25  # the Api's search share with a sharded index: the merge, not the scan
MIN_CPUS = 0.01
OPTIONS = {
    "replicas": "--replicas / serve.replicas",
    "ingress": "--ingress-cpus / serve.ingress_cpus",
    "search": "--search-cpus / serve.search_cpus",
    "embedder": "--embedder-cpus / serve.embedder_cpus",
    "shard": "serve.shard_cpus",
}


@dataclass(frozen=True)
class Plan:
    """What each deployment asks Ray for."""

    replicas: int
    api_cpus: float  # per Api replica (with the search when it holds it)
    search_cpus: float  # the search's share (threads of the ANN search)
    embedder_cpus: float
    search_replica_cpus: float | None  # the Search deployment, when not in the ingress
    num_gpus: float
    shard_replicas: int = 0  # SearchShard replicas in all (sharded index), 0 without
    shard_cpus: float = 0.0  # per SearchShard replica

    @property
    def total_cpus(self) -> float:
        return (
            self.replicas * self.api_cpus
            + self.embedder_cpus
            + (self.search_replica_cpus or 0)
            + self.shard_replicas * self.shard_cpus
        )

    def describe(self) -> str:
        parts = [f"{self.replicas} Api × {self.api_cpus:.3g}", f"Embedder {self.embedder_cpus:.3g}"]
        if self.search_replica_cpus:
            parts.append(f"Search {self.search_replica_cpus:.3g}")
        if self.shard_replicas:
            parts.append(f"{self.shard_replicas} SearchShard × {self.shard_cpus:.3g}")
        return f"{self.total_cpus:.3g} CPUs ({' + '.join(parts)})"


def auto_replicas(cpus: float | None) -> int:
    """2 Api replicas (one survives the loss of the other) from 1.5 CPUs, up to 4 on big
    clusters (one per 4 CPUs), else 1; 2 when the cluster's CPUs are unknown."""
    if cpus is None:
        return 2
    if cpus < 1.5:
        return 1
    return max(2, min(4, int(cpus // 4)))


def plan(s: ServeConfig, cpus: float | None, gpus: float | None = None, shards: int = 0) -> Plan:
    """Replicas and CPU shares for ``s`` on a cluster with ``cpus`` CPUs (None: unknown,
    nothing is scaled or checked); ``shards``: SearchShard deployments of a sharded index
    (the search then runs in them, and the Api replicas merge)."""
    fit = s.fit_to_cluster and cpus is not None
    replicas = s.replicas or auto_replicas(cpus if fit else None)
    given = {
        "ingress": s.ingress_cpus,
        "search": s.search_cpus,
        "embedder": s.embedder_cpus,
        "shard": s.shard_cpus,
    }
    defaults = {**DEFAULT_CPUS, **({"search": MERGE_CPUS} if shards else {})}
    share = {k: v if v is not None else defaults[k] for k, v in given.items()}
    count = {
        "ingress": replicas,
        "search": replicas if s.search_in_ingress or shards else 1,
        "embedder": 1,
        "shard": shards * s.shard_replicas,
    }
    if fit and cpus is not None:
        fixed = sum(count[k] * v for k, v in given.items() if v is not None)
        free = {k: count[k] * share[k] for k, v in given.items() if v is None}
        if fixed + MIN_CPUS * sum(count[k] for k in free) > cpus:
            named = [OPTIONS[k] for k, v in given.items() if v is not None]
            if s.replicas:
                named.insert(0, OPTIONS["replicas"])
            raise ConfigError(
                f"the service's explicit CPU shares ask for {fixed:.3g} CPUs with "
                f"{replicas} Api replica(s) and Ray reports {cpus:.3g}: lower "
                f"{', '.join(named) or OPTIONS['replicas']}, leave them unset to fit the "
                "cluster, add CPUs, or set serve.fit_to_cluster: false on an autoscaling cluster"
            )
        want = sum(free.values())
        if free and fixed + want > cpus:
            scale = (cpus - fixed) / want
            for k in free:
                share[k] = max(MIN_CPUS, math.floor(share[k] * scale * 1000) / 1000)
    if gpus is not None and s.fit_to_cluster and s.num_gpus > gpus:
        raise ConfigError(
            f"serve.num_gpus = {s.num_gpus} but Ray reports {gpus:g} GPUs: lower "
            "--num-gpus / serve.num_gpus (0: the embedder runs on CPU)"
        )
    in_ingress = s.search_in_ingress or bool(shards)  # the merge runs in the Api
    return Plan(
        replicas=replicas,
        api_cpus=share["ingress"] + (share["search"] if in_ingress else 0),
        search_cpus=share["search"],
        embedder_cpus=share["embedder"],
        search_replica_cpus=None if in_ingress else share["search"],
        num_gpus=s.num_gpus,
        shard_replicas=count["shard"],
        shard_cpus=share["shard"] if shards else 0.0,
    )
