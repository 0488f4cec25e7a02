"""Fitting the service to the cluster (pure), and the payload checks that bound uploads."""

from __future__ import annotations

import io

import numpy as np
import pytest

from antssl.config import ServeConfig, parse_config
from antssl.errors import BadRequest, ConfigError
from antssl.serve import fit
from antssl.serve.payload import parse_json, parse_patch
from antssl.serve.schemas import EmbedRequest, ServeArgs


def test_defaults_fit_a_two_core_machine_with_two_api_replicas() -> None:
    p = fit.plan(ServeConfig(), cpus=2.0)
    assert p.replicas == 2 and p.total_cpus <= 2.0
    assert p.api_cpus > 0 and p.embedder_cpus > 0
    big = fit.plan(ServeConfig(), cpus=64.0)  # nothing to scale: the default shares
    assert big.replicas == 4 and (big.api_cpus, big.embedder_cpus) == (1.25, 1.0)
    assert fit.plan(ServeConfig(), cpus=1.0).replicas == 1
    assert fit.plan(ServeConfig(), cpus=None).total_cpus == 3.5  # no Ray: unscaled


def test_explicit_values_are_kept_or_fail_naming_the_shortfall_and_the_option() -> None:
    p = fit.plan(ServeConfig(embedder_cpus=1.5), cpus=2.0)
    assert p.embedder_cpus == 1.5 and p.total_cpus <= 2.0
    with pytest.raises(ConfigError, match="ingress-cpus") as err:
        fit.plan(ServeConfig(replicas=2, ingress_cpus=1.0, embedder_cpus=0.5), cpus=2.0)
    assert "2.5" in str(err.value) and "--replicas" in str(err.value)
    with pytest.raises(ConfigError, match="num-gpus"):
        fit.plan(ServeConfig(num_gpus=1), cpus=2.0, gpus=0.0)
    off = fit.plan(ServeConfig(ingress_cpus=4.0, fit_to_cluster=False), cpus=2.0)
    assert off.api_cpus == 5.0  # an autoscaling cluster adds the nodes


def test_serve_args_override_the_config_section() -> None:
    cfg = parse_config({"serve": {"port": 9000, "replicas": 3, "max_k": 7}})
    s = ServeArgs(config="c.yaml", replicas=1).settings(cfg)
    assert (s.port, s.replicas, s.max_k) == (9000, 1, 7)
    with pytest.raises(ConfigError, match=r"serve\.nope"):
        parse_config({"serve": {"nope": 1}})


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize(
    "body",
    [
        _npy(np.array(["a", "b"])),
        _npy(np.zeros(3, [("a", "f4")])),
        _npy(np.zeros((3, 64, 64), np.complex64)),
        _npy(np.zeros((3, 6400, 64), np.uint8)),  # shape checked before the data is read
        b"PK\x03\x04 an npz",
        b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}     ",
    ],
)
def test_npy_bodies_are_checked_from_the_header(body: bytes) -> None:
    with pytest.raises(BadRequest, match="body"):
        parse_patch(body, "application/octet-stream", 3, 64)


def test_good_patches_parse() -> None:
    arr = np.random.default_rng(0).normal(size=(3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(parse_patch(_npy(arr), "application/x-npy", 3, 64), arr)
    doc = parse_json(b'{"pixels": [[1, 2], [3, 4]]}', EmbedRequest)
    assert doc.pixels == [[1, 2], [3, 4]]
    for bad in (b"[" * 50_000, b'{"pixels": [' + b"9" * 5000 + b"]}", b"\xff"):
        with pytest.raises(BadRequest, match="body"):
            parse_json(bad, EmbedRequest)


def test_api_replicas_are_replaced_fast_and_backpressure_says_when_to_retry() -> None:
    """bench/failover.py: a crashed Api replica is noticed on the next health check and
    its replacement's start is mostly imports; the proxy's own 503 carries Retry-After."""
    import subprocess
    import sys

    from antssl.serve.app import Api
    from antssl.serve.errors import RETRY_AFTER_S

    config = Api._deployment_config
    assert config.health_check_period_s <= 2 and config.health_check_timeout_s <= 5
    assert config.backpressure_config.retry_after_s == RETRY_AFTER_S
    assert config.backpressure_config.status_code == 503
    # an Api replica imports the app module: torch (the Embedder's) and matplotlib (the
    # viewer's colours) stay out of it, ~3 s less per replacement on this machine
    code = "import sys, antssl.serve.app; print(sorted({'torch', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
