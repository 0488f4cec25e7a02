"""Quiet by default: our own calls into rasterio/GDAL and Ray Data print nothing of theirs.

(A whole stage's console is checked in tests/test_late_bad_scene.py.)"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from antssl.config import StorageConfig
from antssl.maps import cluster_cog_bytes
from antssl.scenes import open_raster


def test_cluster_cog_without_crs_writes_no_warning_and_no_gdal_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    grid = (np.arange(300 * 300) % 5).astype(np.uint8).reshape(300, 300)
    caplog.set_level(logging.DEBUG, logger="rasterio")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NotGeoreferencedWarning would raise
        cog = cluster_cog_bytes(grid, Affine.identity(), None, 5)
    gdal = [r.getMessage() for r in caplog.records if "GDAL signalled" in r.getMessage()]
    assert not gdal, gdal  # e.g. 'Cannot modify tag "PhotometricInterpretation" while writing'
    with rasterio.MemoryFile(cog) as mem, mem.open() as ds:  # and the map is still right
        assert ds.colormap(1)[4][:3] != (0, 0, 0) and ds.read(1)[0, 4] == 4


def test_scene_without_geotransform_opens_without_rasterio_warning(tmp_path: Path) -> None:
    path = tmp_path / "pixels.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 1, "dtype": "uint8"}
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(np.ones((1, 32, 32), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_raster(f"file://{path}", StorageConfig()) as ds:
            assert ds.crs is None and ds.read(1).sum() == 32 * 32


def test_quiet_ray_turns_ray_data_console_output_off(ray_local: None) -> None:
    from ray.data import DataContext
    from ray.data._internal.logging import SessionFileHandler

    from antssl import logs
    from antssl.runtime import quiet_ray, worker_log_env

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = ctx.print_on_execution_start = True
    logs.configure(verbose=False)
    before = {id(h): h.level for h in logging.getLogger("ray.data").handlers}
    quiet_ray()
    assert not ctx.enable_progress_bars and not ctx.print_on_execution_start
    from ray._private.log import PlainRayHandler

    handlers = logging.getLogger("ray.data").handlers
    console = [h for h in handlers if type(h) is PlainRayHandler]
    assert console and all(h.level == logging.WARNING for h in console)
    # handlers that are not Ray's (here pytest's log capture) keep their levels
    others = [h for h in handlers if type(h) is not PlainRayHandler]
    assert not any(
        h.level == logging.WARNING
        and not isinstance(h, SessionFileHandler)
        and h.level != before[id(h)]
        for h in others
        if id(h) in before
    )
    # Workers read the same settings from a file shipped with the package.
    config = Path(worker_log_env()["RAY_DATA_LOGGING_CONFIG"])
    assert config.is_file() and "level: WARNING" in config.read_text()


def test_known_ray_notices_stay_off_the_console_and_other_worker_lines_do_not(
    ray_local: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """Once quiet_ray has run, a worker's line holding one of Ray's known notices (ray#53727,
    the serve controller's shutdown) and every line of an actor named as Ray Train's
    placement-group cleaner stay off the driver's console; other workers' lines still reach
    it (real Ray tasks and actors printing them; tests/test_late_bad_scene.py checks a
    whole pretraining console)."""
    import time

    import ray

    from antssl.runtime import KNOWN_RAY_NOTICES, quiet_ray

    quiet_ray()
    quiet_ray()  # idempotent: one filter, not two

    @ray.remote
    def speak(tag: str) -> None:
        import sys

        for i, notice in enumerate(KNOWN_RAY_NOTICES):
            print(f"[E core_worker.cc:1] Actor {tag}-{i} {notice}. See ...", file=sys.stderr)
        print(f"ordinary line {tag}", file=sys.stderr, flush=True)

    @ray.remote(num_cpus=0)
    class PlacementGroupCleaner:  # the class name is the actor's name in Ray's log lines
        def speak(self, tag: str) -> None:
            import sys

            print(f"Exception in thread PlacementGroupCleanerMonitor: {tag}", file=sys.stderr)
            sys.stderr.flush()

    tag = f"t{time.monotonic_ns()}"
    cleaner = PlacementGroupCleaner.remote()  # type: ignore[attr-defined]
    ray.get(cleaner.speak.remote(tag))
    ray.get(speak.remote(tag))
    seen = ""
    for _ in range(100):  # worker lines reach the driver asynchronously
        seen += capfd.readouterr().err
        if f"ordinary line {tag}" in seen:
            break
        time.sleep(0.1)
    time.sleep(1.5)  # the cleaner's line, were it forwarded, comes from another process
    seen += capfd.readouterr().err
    ray.kill(cleaner)
    assert f"ordinary line {tag}" in seen
    assert f"Actor {tag}" not in seen
    assert f"PlacementGroupCleanerMonitor: {tag}" not in seen

    # The raylet's error messages to the driver reach the console through Ray's
    # print_to_stdstream (as its listener thread calls it): the known ones stay off it.
    from ray._private import worker as ray_worker

    for line in (f"Task ServeController.graceful_shutdown failed. {tag}", f"other error {tag}"):
        ray_worker.print_to_stdstream(
            {"lines": [line], "pid": "raylet", "is_err": False}, ignore_prefix=False
        )
    out = capfd.readouterr().out
    assert f"other error {tag}" in out and f"graceful_shutdown failed. {tag}" not in out
