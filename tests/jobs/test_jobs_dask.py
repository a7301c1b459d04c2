"""Jobs on a real Dask LocalCluster (2 worker processes on 127.0.0.1, UNET_DASK_SCHEDULER):
the result equals the in-service job's bit for bit, both workers run its tasks, a worker
killed mid-job still gives the same succeeded result, a scheduler killed mid-job requeues
the job, which finishes once a scheduler is back, a cancelled job leaves nothing, and an
unreachable scheduler stops start-up with one clear line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.test_startup import assert_fails_clearly, start
from tests.conftest import free_port, settings
from tests.jobs.helpers import leftovers, wait, zipped_labels
from tests.nets import PAPER, default_card, save_model
from tests.samples import smooth_noise

pytestmark = pytest.mark.slow
distributed = pytest.importorskip("distributed", reason="the `dask` extra is not installed")

TILE = 380


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a tiled 3000 x 5000 TIFF, a depth-4 model)."""
    folder = tmp_path_factory.mktemp("dask-jobs")
    model = folder / "paper.onnx"
    save_model(model, PAPER, seed=5, card=default_card(PAPER, name="paper"))
    tif = folder / "slide.tif"
    tifffile.imwrite(tif, smooth_noise(3000, 5000, seed=4), tile=(256, 256), compression="zlib")
    return tif, model


def app(model: Path, jobs: Path, **overrides: Any) -> TestClient:
    config = settings(model, jobs_dir=jobs, tile_size=TILE, max_image_pixels=1_000_000, **overrides)
    return TestClient(create_app(config))


@pytest.fixture(scope="module")
def in_service(
    slide: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The results of the same jobs run by the service itself, by format."""
    folder = tmp_path_factory.mktemp("in-service")
    results = {}
    with app(slide[1], folder / "jobs") as client:
        for fmt in ("ome-zarr", "instances"):
            job, _ = wait(client, submit(client, slide[0], fmt), timeout_s=300)
            assert job["status"] == "succeeded", job
            results[fmt] = zipped_labels(client.get(f"/jobs/{job['id']}/result").content, folder)
    return results


@pytest.fixture
def on_cluster(
    slide: tuple[Path, Path], cluster: str, tmp_path: Path
) -> Iterator[tuple[TestClient, Any]]:
    """An app whose jobs run on the LocalCluster, and a client of that cluster."""
    with (
        app(slide[1], tmp_path / "jobs", dask_scheduler=cluster) as client,
        distributed.Client(cluster) as dask,
    ):
        yield client, dask


def submit(client: TestClient, tif: Path, fmt: str) -> str:
    answer = client.post(f"/jobs?format={fmt}", content=tif.read_bytes())
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def blocks_run(dask: Any) -> dict[str, int]:
    """Block tasks each worker has finished so far (its log of task transitions)."""

    def count(dask_worker: Any) -> int:
        return sum(
            1 for t in dask_worker.state.log if "_block_task" in str(t[0]) and t[2] == "memory"
        )

    return dask.run(count)  # type: ignore[no-any-return]


@pytest.mark.parametrize("fmt", ["ome-zarr", "instances"])
def test_a_job_on_the_cluster_equals_the_job_in_the_service(
    fmt: str,
    slide: tuple[Path, Path],
    on_cluster: tuple[TestClient, Any],
    in_service: dict[str, Any],
    tmp_path: Path,
) -> None:
    client, dask = on_cluster
    before = blocks_run(dask)
    job, seen = wait(client, submit(client, slide[0], fmt), timeout_s=300)
    assert job["status"] == "succeeded", job
    assert seen == sorted(seen)
    assert seen[-1] == job["progress"]["tiles_total"]
    result = zipped_labels(client.get(f"/jobs/{job['id']}/result").content, tmp_path)
    np.testing.assert_array_equal(result, in_service[fmt])
    after = blocks_run(dask)
    assert len(after) == 2
    assert all(after[w] > before.get(w, 0) for w in after), (before, after)  # both ran blocks
    metrics = client.get("/metrics").text
    assert "unet_job_tiles_total" in metrics


def test_a_worker_killed_mid_job_still_gives_the_same_result(
    slide: tuple[Path, Path],
    on_cluster: tuple[TestClient, Any],
    in_service: dict[str, Any],
    tmp_path: Path,
) -> None:
    client, dask = on_cluster
    job_id = submit(client, slide[0], "ome-zarr")
    while client.get(f"/jobs/{job_id}").json()["progress"]["tiles_done"] == 0:
        time.sleep(0.05)
    victim = sorted(dask.scheduler_info()["workers"])[0]
    with contextlib.suppress(Exception):  # it dies before it answers: what was wanted
        dask.run(os._exit, 1, workers=[victim])  # its nanny starts another
    job, _ = wait(client, job_id, timeout_s=300)
    assert job["status"] == "succeeded", job["error"]
    result = zipped_labels(client.get(f"/jobs/{job_id}/result").content, tmp_path)
    np.testing.assert_array_equal(result, in_service["ome-zarr"])
    dask.wait_for_workers(2, timeout=120)


@contextlib.contextmanager
def scheduler_and_worker(port: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """A real ``dask scheduler`` on 127.0.0.1:``port`` and one ``dask worker`` process."""
    address = f"tcp://127.0.0.1:{port}"
    commands = [
        ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", "127.0.0.1:0"],
        ["distributed.cli.dask_worker", address, "--nthreads", "1", "--host", "127.0.0.1",
         "--dashboard-address", "127.0.0.1:0", "--no-nanny"],
    ]  # fmt: skip
    processes = [
        subprocess.Popen([sys.executable, "-m", *c], start_new_session=True) for c in commands
    ]
    try:
        with distributed.Client(address, timeout="60s") as dask:
            dask.wait_for_workers(1, timeout=60)
        yield processes
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_scheduler_lost_mid_job_requeues_it_and_it_finishes_once_one_is_back(
    slide: tuple[Path, Path], in_service: dict[str, Any], tmp_path: Path
) -> None:
    port = free_port()
    with scheduler_and_worker(port) as processes:
        client = app(slide[1], tmp_path / "jobs", dask_scheduler=f"tcp://127.0.0.1:{port}")
        with client:
            job_id = submit(client, slide[0], "ome-zarr")
            while client.get(f"/jobs/{job_id}").json()["progress"]["tiles_done"] == 0:
                time.sleep(0.05)
            for process in processes:  # the scheduler's machine is gone, and its worker
                os.killpg(process.pid, signal.SIGKILL)
            statuses = set()
            deadline = time.monotonic() + 120
            while "queued" not in statuses and time.monotonic() < deadline:
                statuses.add(client.get(f"/jobs/{job_id}").json()["status"])
                time.sleep(0.05)
            assert "queued" in statuses, statuses
            assert not statuses & {"failed", "cancelled"}, statuses
            time.sleep(3)  # it stays queued, not failed, while no scheduler answers
            assert client.get(f"/jobs/{job_id}").json()["status"] in ("queued", "running")
            with scheduler_and_worker(port):  # a new scheduler at the same address
                job, _ = wait(client, job_id, timeout_s=300)
                assert job["status"] == "succeeded", job["error"]
                result = zipped_labels(client.get(f"/jobs/{job_id}/result").content, tmp_path)
    np.testing.assert_array_equal(result, in_service["ome-zarr"])


def test_a_job_cancelled_on_the_cluster_leaves_nothing(
    slide: tuple[Path, Path], on_cluster: tuple[TestClient, Any], tmp_path: Path
) -> None:
    client, _ = on_cluster
    job_id = submit(client, slide[0], "ome-zarr")
    while client.get(f"/jobs/{job_id}").json()["progress"]["tiles_done"] == 0:
        time.sleep(0.05)
    assert client.delete(f"/jobs/{job_id}").status_code == 202
    job, _ = wait(client, job_id, timeout_s=300)
    assert job["status"] == "cancelled"
    assert leftovers(tmp_path / "jobs") == []


def test_an_unreachable_scheduler_stops_start_up(binary_model: Path, tmp_path: Path) -> None:
    result = start(
        {
            "UNET_MODEL_PATH": str(binary_model),
            "UNET_JOBS_DIR": str(tmp_path / "jobs"),
            "UNET_DASK_SCHEDULER": "tcp://127.0.0.1:9",  # nothing listens on port 9
        }
    )
    assert_fails_clearly(result, "UNET_DASK_SCHEDULER", "tcp://127.0.0.1:9")
    assert result.returncode == 3


def test_a_job_the_cluster_fails_runs_again_twice_then_fails() -> None:
    from types import SimpleNamespace

    from app.jobs.cluster import JobCluster

    cluster = JobCluster.__new__(JobCluster)  # its client only: no scheduler needed here
    cluster.client, cluster.faults = SimpleNamespace(status="running"), {}
    fault = RuntimeError("an asyncio event of another loop")
    assert cluster.retry("a", fault) == "a fault on the Dask cluster (RuntimeError); try 2"
    assert cluster.retry("a", fault) == "a fault on the Dask cluster (RuntimeError); try 3"
    assert cluster.retry("a", fault) is None  # the job's own fault, it seems: it fails
    assert cluster.retry("b", fault) is not None  # another job's count is its own
    cluster.client.status = "closed"
    assert cluster.retry("a", fault) == "the Dask scheduler is out of reach"  # always
