"""Distributed k-means on Ray against scikit-learn, on a Zarr store on the local S3 server."""

from __future__ import annotations

import uuid

import boto3
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from antssl import store
from antssl.config import ClusterConfig, StorageConfig, parse_config
from antssl.errors import ConfigError, StageOrderError
from antssl.stages import cluster

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def blobs_store(s3_endpoint: str) -> tuple[str, StorageConfig, np.ndarray, np.ndarray]:
    """20,000 × 16 planted Gaussian blobs (8 centres) in a Zarr store on S3, 13 chunks."""
    x, y = make_blobs(n_samples=20_000, n_features=16, centers=8, cluster_std=1.0, random_state=3)
    x = x.astype(np.float32)
    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    uri, cfg = f"s3://{name}/emb.zarr", StorageConfig(endpoint_url=s3_endpoint)
    store.create(uri, cfg, len(x), 16, 1600, "float32", {"tiles": len(x)})
    for c in range(store.n_chunks(len(x), 1600)):
        store.write_chunk(uri, cfg, c, x[c * 1600 : (c + 1) * 1600])
    return uri, cfg, x, y


def test_matches_sklearn_on_planted_blobs(blobs_store) -> None:
    uri, cfg, x, y = blobs_store
    ccfg = ClusterConfig(k=8, metric="euclidean", num_actors=2, batch_size=2048, max_iter=100)
    res = cluster.fit_store(uri, cfg, ccfg)
    assert adjusted_rand_score(y, res.labels) >= 0.99
    ref = KMeans(n_clusters=8, n_init=1, random_state=0).fit(x)
    assert res.inertia <= ref.inertia_ * 1.01
    # labels were written to the store, chunk by chunk, by the actors
    group = store.open_group(uri, cfg)
    np.testing.assert_array_equal(group["cluster"][:], res.labels)
    cluster.write_result(uri, cfg, res, ccfg)
    group = store.open_group(uri, cfg)
    assert group["centroids"].shape == (8, 16)
    assert (
        group.attrs["clustering"]["k"] == 8 and group.attrs["clustering"]["metric"] == "euclidean"
    )


def test_one_and_two_actors_agree(blobs_store) -> None:
    uri, cfg, _, _ = blobs_store
    base = dict(k=8, metric="cosine", batch_size=1024, max_iter=40, seed=5)
    one = cluster.fit_store(uri, cfg, ClusterConfig(num_actors=1, **base), write=False)
    two = cluster.fit_store(uri, cfg, ClusterConfig(num_actors=2, **base), write=False)
    np.testing.assert_allclose(one.centroids, two.centroids, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one.labels, two.labels)


def test_k_candidates_scored_by_silhouette(blobs_store) -> None:
    uri, cfg, _, _ = blobs_store
    ccfg = ClusterConfig(
        k=[4, 8, 12], metric="euclidean", batch_size=2048, max_iter=60, silhouette_sample=2000
    )
    res = cluster.fit_store(uri, cfg, ccfg, write=False)
    assert res.k == 8 and [s["k"] for s in res.scores] == [4, 8, 12]
    assert "silhouette" in res.explanation and "k = 8" in res.explanation
    inertias = [s["inertia"] for s in res.scores]
    assert inertias[0] > inertias[1] > inertias[2]  # inertia always falls with k


def test_bad_inputs(blobs_store, s3_endpoint: str) -> None:
    uri, cfg, x, _ = blobs_store
    with pytest.raises(ConfigError, match=r"cluster.k \[50000\] larger than the 20000 tiles"):
        cluster.fit_store(uri, cfg, ClusterConfig(k=50_000), write=False)
    with pytest.raises(ConfigError, match=r"cluster.k must be >= 2"):
        parse_config({"cluster": {"k": 1}})
    # NaN rows are counted and named
    name = f"t-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    bad_uri = f"s3://{name}/emb.zarr"
    store.create(bad_uri, cfg, 100, 16, 50, "float32", {})
    vals = x[:100].copy()
    vals[[7, 42]] = np.nan
    vals[60, 3] = np.inf
    store.write_chunk(bad_uri, cfg, 0, vals[:50])
    with pytest.raises(StageOrderError, match="1 chunk"):
        cluster.fit_store(bad_uri, cfg, ClusterConfig(k=3), write=False)
    store.write_chunk(bad_uri, cfg, 1, vals[50:])
    with pytest.raises(
        ConfigError, match=r"3 embedding row\(s\) with NaN or inf, e.g. rows \[7, 42, 60\]"
    ):
        cluster.fit_store(bad_uri, cfg, ClusterConfig(k=3), write=False)
