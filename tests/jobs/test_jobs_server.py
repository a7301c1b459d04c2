"""Jobs against a real uvicorn on 127.0.0.1: a 20000 x 20000 tiled TIFF uploaded as a job
survives kill -9, goes on from its finished blocks and equals unet-segment bit for bit;
/segment is answered while it runs; a short TTL leaves nothing behind; an upload cut off
mid-stream leaves nothing; 16 concurrent submissions are each accepted or 503, and no
accepted one is lost."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import tifffile
import zarr

from app import cli
from app.pipeline.resume import _blocks
from tests.conftest import API_KEY, Server, start_server, stop_server
from tests.jobs.helpers import leftovers, wait, zipped_labels
from tests.samples import noise, png, smooth_noise

SIDE = 20000


def serve(model: Path, jobs: Path, log: Path, **env: str) -> Server:
    settings = {"UNET_MODEL_PATH": str(model), "UNET_JOBS_DIR": str(jobs), "UNET_THREADS": "1"}
    return start_server({**settings, **env}, log)


@pytest.fixture(scope="module")
def montage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20000 x 20000 tiled TIFF (8 x 8 copies of a 2500 x 2500 patch of blobs, zlib)."""
    path = tmp_path_factory.mktemp("montage") / "montage.tif"
    image = np.tile(smooth_noise(2500, 2500, seed=7), (SIDE // 2500, SIDE // 2500))
    tifffile.imwrite(path, image, tile=(512, 512), compression="zlib", compressionargs={"level": 1})
    return path


def test_a_20000_px_job_survives_kill_9_and_equals_unet_segment(
    binary_model: Path, montage: Path, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    server = serve(binary_model, jobs, tmp_path / "first.log")
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http, montage.open("rb") as body:
            answer = http.post("/jobs?format=ome-zarr", content=body)
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["id"]
            total = answer.json()["progress"]["tiles_total"]
            while http.get(f"/jobs/{job_id}").json()["progress"]["tiles_done"] < total // 3:
                time.sleep(0.05)
    finally:
        server.process.kill()  # kill -9 mid-job: no shutdown code runs
        server.process.wait(timeout=30)
    ledger = _blocks(jobs / job_id / ".resume" / "blocks")  # the blocks it had finished
    finished = sum(ledger.values())
    assert 0 < finished < total
    server = serve(binary_model, jobs, tmp_path / "second.log")
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            while http.get(f"/jobs/{job_id}").json()["progress"]["tiles_done"] <= finished:
                time.sleep(0.05)
            # An interactive request while the job runs: answered before the job ends.
            segment = http.post("/segment", content=png(noise(512, 512)))
            assert segment.status_code == 200
            during = http.get(f"/jobs/{job_id}").json()
            assert during["status"] == "running", during
            assert during["progress"]["tiles_done"] < total
            job, seen = wait(http, job_id, timeout_s=600)
            assert job["status"] == "succeeded", job
            assert seen == sorted(seen)
            assert seen[0] > finished  # it went on from the finished blocks' count
            assert seen[-1] == total == job["progress"]["tiles_total"]
            # Only the blocks left ran: over both runs, the tiles of one block at most
            # (the one the kill interrupted) ran twice.
            assert tiles_run(http) == total - finished
            assert job["result"] == f"/jobs/{job_id}/result"
            download = tmp_path / "result.zip"
            with http.stream("GET", f"/jobs/{job_id}/result") as result, download.open("wb") as f:
                assert result.status_code == 200
                for chunk in result.iter_bytes():
                    f.write(chunk)
    finally:
        stop_server(server)
    restarted = zipped_labels(download.read_bytes(), tmp_path)
    out = tmp_path / "cli"
    assert cli.main([str(montage), "--model", str(binary_model), "--out", str(out)]) == 0
    expected = zarr.open_group(str(out / "montage.ome.zarr"), mode="r")["0"][:]
    assert restarted.shape == (SIDE, SIDE)
    np.testing.assert_array_equal(restarted, expected)
    # Past its TTL the job and every file of it are gone (swept at start, then periodically).
    time.sleep(1.1)
    server = serve(binary_model, jobs, tmp_path / "third.log", UNET_JOB_TTL="1")
    try:
        assert httpx.get(f"{server.url}/jobs/{job_id}").status_code == 404
        assert leftovers(jobs) == []
    finally:
        stop_server(server)


def tiles_run(http: httpx.Client) -> float:
    """The service's ``unet_job_tiles`` counter: tiles run for jobs since it started."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("unet_job_tiles_total "):
            return float(line.split()[1])
    raise AssertionError("no unet_job_tiles_total in /metrics")


@pytest.fixture
def jobs_server(binary_model: Path, tmp_path: Path) -> Iterator[Server]:
    server = serve(binary_model, tmp_path / "jobs", tmp_path / "server.log", UNET_JOB_MAX_QUEUE="6")
    yield server
    stop_server(server)


def test_an_upload_cut_off_mid_stream_leaves_nothing_behind(
    jobs_server: Server, tmp_path: Path
) -> None:
    address = urlsplit(jobs_server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as s:
        head = "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n"
        s.sendall(head.encode() + png(noise(256, 256)))
        time.sleep(0.3)  # the server is writing the upload now
    jobs = tmp_path / "jobs"
    deadline = time.monotonic() + 10
    while list((jobs / "uploads").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((jobs / "uploads").iterdir()) == []
    assert leftovers(jobs) == []
    assert httpx.get(f"{jobs_server.url}/jobs").json() == {"jobs": []}


def test_16_concurrent_submissions_are_accepted_or_503_and_none_is_lost(
    jobs_server: Server,
) -> None:
    bodies = [png(noise(1450, 1450, seed=i)) for i in range(16)]  # ~2 MB each
    assert all(len(b) > 2_000_000 for b in bodies)

    def send(body: bytes) -> httpx.Response:
        return httpx.post(f"{jobs_server.url}/jobs?format=rle", content=body, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, bodies))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {202, 503}, [a.text for a in answers]
    assert 202 in statuses
    for answer in answers:
        if answer.status_code == 503:
            assert int(answer.headers["retry-after"]) > 0
    accepted = {a.json()["id"] for a in answers if a.status_code == 202}
    with httpx.Client(base_url=jobs_server.url, timeout=60) as http:
        for job_id in accepted:
            assert wait(http, job_id, timeout_s=120)[0]["status"] == "succeeded"
        listed = {job["id"] for job in http.get("/jobs").json()["jobs"]}
    assert listed == accepted


def test_jobs_need_the_same_api_key_as_segment(server: Server) -> None:
    assert httpx.get(f"{server.url}/jobs").status_code == 401
    assert httpx.post(f"{server.url}/jobs", content=png(noise(64, 64))).status_code == 401
    keyed = httpx.get(f"{server.url}/jobs", headers={"X-API-Key": API_KEY})
    assert keyed.status_code == 200
