"""Jobs in-process (TestClient): results equal /segment and unet-segment bit for bit, progress
rises to tiles_total, bad input is a 4xx that leaves nothing behind, cancel/delete/TTL, a
shutdown queues the running job again and the next start finishes it."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from fastapi.testclient import TestClient

from app import cli
from app.codecs.outputs import Options
from app.errors import SourceRefusedError
from app.jobs.failure import failure
from app.jobs.gate import Gate
from app.jobs.inputs import check_source
from app.jobs.progress import TileCounter
from app.jobs.store import Submission
from app.main import create_app
from tests.conftest import settings
from tests.jobs.helpers import leftovers, wait, zipped_labels
from tests.nets import PAPER, default_card, save_model
from tests.samples import (
    noise,
    png,
    png_bomb,
    smooth_noise,
    tiff,
    truncated,
    write_ome_zarr,
)

TILE = 380
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Slide:
    tif: Path
    model: Path
    folder: Path


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Slide:
    """A tiled 3000 x 5000 TIFF (16 x 27 tiles of 380 px) and a depth-4 model."""
    folder = tmp_path_factory.mktemp("jobs")
    model = folder / "paper.onnx"
    save_model(model, PAPER, seed=5, card=default_card(PAPER, name="paper"))
    tif = folder / "slide.tif"
    tifffile.imwrite(tif, smooth_noise(3000, 5000, seed=4), tile=(256, 256), compression="zlib")
    return Slide(tif, model, folder)


def paper_app(slide: Slide, jobs: Path, **overrides: Any) -> TestClient:
    config = settings(
        slide.model, jobs_dir=jobs, tile_size=TILE, max_image_pixels=1_000_000, **overrides
    )
    return TestClient(create_app(config))


@pytest.fixture
def paper(slide: Slide, tmp_path: Path) -> Iterator[TestClient]:
    with paper_app(slide, tmp_path / "jobs", job_source_root=slide.folder) as client:
        yield client


def submit(client: TestClient, body: bytes, query: str = "", **kwargs: Any) -> str:
    answer = client.post(f"/jobs{query}", content=body, **kwargs)
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/jobs/{answer.json()['id']}"
    assert answer.json()["status"] == "queued"
    return str(answer.json()["id"])


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("", png(noise(300, 200))),
        ("?format=rle&threshold=0.4", png(noise(300, 200, seed=2))),
        ("?format=probability", png(noise(120, 90, seed=3))),
        ("?format=objects&tta=true", png(noise(200, 210, seed=4))),
        ("?format=rle", tiff(noise(64, 80, seed=5), noise(64, 80, seed=6))),
    ],
    ids=["png", "rle", "probability", "objects-tta", "rle-two-pages"],
)
def test_a_job_answers_what_segment_answers_byte_for_byte(
    client: TestClient, query: str, body: bytes
) -> None:
    job_id = submit(client, body, query)
    job, seen = wait(client, job_id)
    assert job["status"] == "succeeded", job
    assert seen == sorted(seen)
    assert job["progress"]["tiles_done"] == job["progress"]["tiles_total"]
    result = client.get(f"/jobs/{job_id}/result")
    expected = client.post(f"/segment{query}", content=body)
    assert result.status_code == expected.status_code == 200
    assert result.content == expected.content
    assert result.headers["content-type"] == expected.headers["content-type"]


def test_a_job_outlines_objects_in_an_overlay_as_segment_does(softmax_client: TestClient) -> None:
    """objects=true reaches the runner (the job keeps its Options whole): the outlined
    overlay, not the filled one (the softmax model's differ on this image)."""
    body, query = png(noise(150, 130, seed=7)), "?format=overlay&objects=true"
    job, _ = wait(softmax_client, submit(softmax_client, body, query))
    assert job["status"] == "succeeded", job
    outlined = softmax_client.post(f"/segment{query}", content=body).content
    assert outlined != softmax_client.post("/segment?format=overlay", content=body).content
    assert softmax_client.get(f"/jobs/{job['id']}/result").content == outlined


def run_cli(slide: Slide, out: Path, output: str) -> Path:
    argv = [str(slide.tif), "--model", str(slide.model), "--out", str(out), "--tile", str(TILE)]
    assert cli.main([*argv, "--format", output, "--max-pixels", "1000000"]) == 0
    return next(out.glob("slide.*"))


def test_a_large_job_equals_unet_segment_and_its_progress_rises(
    paper: TestClient, slide: Slide, tmp_path: Path
) -> None:
    upload = {"file": ("slide.tif", slide.tif.read_bytes(), "image/tiff")}
    answer = paper.post("/jobs", files=upload)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    job, seen = wait(paper, job_id)
    assert job["status"] == "succeeded", job
    assert job["format"] == "ome-zarr"  # the default above UNET_MAX_IMAGE_PIXELS
    total = job["progress"]["tiles_total"]
    assert total == 16 * 27  # the plan's tiles of 380 px over 3000 x 5000
    assert seen == sorted(seen)
    assert seen[-1] == total
    assert len(set(seen)) > 2
    assert job["stage"] is None
    assert job["eta_seconds"] == 0.0
    answer = paper.get(f"/jobs/{job_id}/result")
    assert answer.headers["content-type"] == "application/zip"
    assert 'filename="slide.ome.zarr.zip"' in answer.headers["content-disposition"]
    expected = run_cli(slide, tmp_path / "cli", "ome-zarr")
    reference = zarr.open_group(str(expected), mode="r")["0"][:]
    np.testing.assert_array_equal(zipped_labels(answer.content, tmp_path), reference)


def test_a_source_job_in_ome_tiff_equals_unet_segment(
    paper: TestClient, slide: Slide, tmp_path: Path
) -> None:
    answer = paper.post("/jobs?format=ome-tiff", json={"source": slide.tif.name})
    assert answer.status_code == 202, answer.text
    job, _ = wait(paper, answer.json()["id"])
    assert job["status"] == "succeeded"
    assert job["input"]["name"] == "slide.tif"
    result = paper.get(job["result"])
    assert result.headers["content-type"] == "image/tiff"
    expected = run_cli(slide, tmp_path / "cli", "ome-tiff")
    downloaded = tmp_path / "job.ome.tif"
    downloaded.write_bytes(result.content)
    # Equal but for the UUID tifffile stamps into each OME-XML (time-based: every run's own).
    with tifffile.TiffFile(downloaded) as got, tifffile.TiffFile(expected) as want:
        uuid = re.compile(r'UUID="urn:uuid:[0-9a-f-]+"')
        assert uuid.sub("", got.ome_metadata or "") == uuid.sub("", want.ome_metadata or "")
        levels = got.series[0].levels
        assert len(levels) == len(want.series[0].levels) > 1
        for mine, theirs in zip(levels, want.series[0].levels, strict=True):
            np.testing.assert_array_equal(mine.asarray(), theirs.asarray())
    assert slide.tif.exists()  # a source is read in place, never removed


def test_sources_that_leave_the_root_are_403(
    paper: TestClient, slide: Slide, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes(png(noise(64, 64)))
    link = slide.folder / "link.png"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    try:
        for source in ["../secret.png", str(outside), "link.png", "a/../../x.png", ""]:
            answer = paper.post("/jobs", json={"source": source})
            assert answer.status_code == 403, (source, answer.text)
    finally:
        link.unlink()
    assert paper.post("/jobs", json={"source": "nothing.png"}).status_code == 422
    assert paper.post("/jobs", json={"source": "a\u0000b.png"}).status_code == 422
    assert paper.post("/jobs", json={"source": "x" * 300 + ".png"}).status_code == 422
    deep = b'{"source": ' + b"[" * 100_00 + b"]" * 100_00 + b"}"
    assert paper.post("/jobs", content=deep, headers=JSON).status_code == 400
    assert paper.post("/jobs", content=b'{"src": 1}', headers=JSON).status_code == 400
    assert paper.post("/jobs", content=b"{not json", headers=JSON).status_code == 400


def test_a_folder_source_whose_symlinks_leave_the_root_is_403(
    paper: TestClient, slide: Slide, tmp_path: Path
) -> None:
    """A zarr reader follows the links inside the store: a chunk, or a whole folder of
    chunks, linked out of the root is refused as the store itself would be."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "0.0.0").write_bytes(b"not yours")
    for name, link, to in [("chunk", "0/0.0.0", secret / "0.0.0"), ("folder", "0", secret)]:
        store = slide.folder / f"{name}.ome.zarr"
        write_ome_zarr(store, smooth_noise(300, 300, seed=2))  # zarr v2: 0/0.0.0 ...
        inner = store / link
        shutil.rmtree(inner) if inner.is_dir() else inner.unlink()
        inner.symlink_to(to)
        try:
            answer = paper.post("/jobs", json={"source": store.name})
            assert answer.status_code == 403, (name, answer.text)
            assert "symlink" in answer.json()["detail"]
            assert str(tmp_path) not in answer.text
            assert str(slide.folder) not in answer.text
        finally:
            shutil.rmtree(store)
    assert paper.get("/jobs").json()["jobs"] == []


def test_a_folder_source_with_links_inside_the_root_runs(paper: TestClient, slide: Slide) -> None:
    store = slide.folder / "inside.ome.zarr"
    write_ome_zarr(store, smooth_noise(300, 300, seed=2))
    kept = slide.folder / "kept-chunk"
    (store / "0" / "0.0.0").replace(kept)
    (store / "0" / "0.0.0").symlink_to(kept)
    loop = store / "0" / "loop"
    loop.symlink_to(store, target_is_directory=True)  # walked once, not forever
    try:
        answer = paper.post("/jobs?format=png", json={"source": store.name})
        assert answer.status_code == 202, answer.text
        job, _ = wait(paper, answer.json()["id"])
        assert job["status"] == "succeeded", job["error"]
    finally:
        shutil.rmtree(store)
        kept.unlink()


def test_a_source_checked_again_when_its_job_starts(slide: Slide, tmp_path: Path) -> None:
    store = slide.folder / "later.ome.zarr"
    write_ome_zarr(store, smooth_noise(100, 100, seed=2))
    try:
        check_source(slide.folder, store.resolve(), store.name)  # as submitted: fine
        with pytest.raises(SourceRefusedError, match="no longer under"):
            check_source(None, store.resolve(), store.name)  # the root was unset since
        with pytest.raises(SourceRefusedError, match="no longer under"):
            check_source(tmp_path, store.resolve(), store.name)  # or moved
        (store / "0" / "extra").symlink_to(tmp_path)  # a link added since
        with pytest.raises(SourceRefusedError, match="symlink") as refused:
            check_source(slide.folder, store.resolve(), store.name)
        assert str(tmp_path) not in str(refused.value)
    finally:
        shutil.rmtree(store)


def test_a_source_named_in_any_script_downloads_under_a_safe_name(
    paper: TestClient, slide: Slide
) -> None:
    odd = slide.folder / 'cellules "été"; x.png'
    odd.write_bytes(png(noise(80, 80)))
    try:
        answer = paper.post("/jobs", json={"source": odd.name})
        job, _ = wait(paper, answer.json()["id"])
        result = paper.get(job["result"])
        assert result.status_code == 200
        assert result.headers["content-disposition"] == 'attachment; filename="cellules_t_x.png"'
    finally:
        odd.unlink()


def test_without_a_source_root_every_source_is_403(client: TestClient) -> None:
    answer = client.post("/jobs", json={"source": "image.png"})
    assert answer.status_code == 403
    assert "UNET_JOB_SOURCE_ROOT" in answer.json()["detail"]


def test_bad_input_is_a_4xx_and_leaves_nothing_behind(paper: TestClient, slide: Slide) -> None:
    jobs = Path(paper.app.state.jobs.store.root)  # type: ignore[attr-defined]
    multipart = {"Content-Type": "multipart/form-data; boundary=XX"}
    cut = b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nab'
    cases = [
        (paper.post("/jobs", content=b""), 400),
        (paper.post("/jobs", content=b"hello, not an image"), 400),
        (paper.post("/jobs", files={"other": ("a.png", png(noise(50, 50)))}), 400),
        (paper.post("/jobs", content=cut, headers=multipart), 400),
        (paper.post("/jobs", content=b"--XX\r\n" + b"X" * 40_000, headers=multipart), 400),
        (paper.post("/jobs?format=bogus", content=png(noise(50, 50))), 422),
        (paper.post("/jobs?class=7", content=png(noise(50, 50))), 422),
        (paper.post("/jobs?format=png", content=slide.tif.read_bytes()), 413),  # > max pixels
        (paper.post("/jobs?format=rle", content=png_bomb()), 413),
        (paper.post("/jobs", content=truncated(png(noise(300, 300)))), 400),
        # what /segment answers at once, a job answers before its 202: two pages for a
        # format of one (the default png), a DICOM format of a PNG
        (paper.post("/jobs", content=tiff(noise(60, 60, seed=1), noise(60, 60, seed=2))), 422),
        (paper.post("/jobs?format=dicom-seg", content=png(noise(50, 50))), 415),
    ]
    for answer, status in cases:
        assert answer.status_code == status, answer.text
        assert isinstance(answer.json()["detail"], str)
    assert paper.get("/jobs").json() == {"jobs": []}
    assert leftovers(jobs) == []


def test_unknown_ids_result_before_success_cancel_and_delete(
    paper: TestClient, slide: Slide
) -> None:
    assert paper.get("/jobs/no-such-job").status_code == 404
    assert paper.get("/jobs/no-such-job/result").status_code == 404
    assert paper.delete("/jobs/no-such-job").status_code == 404
    running = submit(paper, slide.tif.read_bytes())
    queued = submit(paper, png(noise(64, 64)))
    assert paper.get(f"/jobs/{queued}/result").status_code == 409
    assert paper.delete(f"/jobs/{queued}").status_code == 202  # cancelled before it ran
    cancelled, _ = wait(paper, queued)
    assert cancelled["status"] == "cancelled"
    while (now := paper.get(f"/jobs/{running}").json())["progress"]["tiles_done"] == 0:
        time.sleep(0.01)
    assert now["status"] == "running"
    assert now["stage"] == "tiles"
    assert now["eta_seconds"] > 0
    answer = paper.delete(f"/jobs/{running}")
    assert answer.status_code == 202
    job, _ = wait(paper, running)
    assert job["status"] == "cancelled"
    assert 0 < job["progress"]["tiles_done"] < job["progress"]["tiles_total"]
    assert paper.get(f"/jobs/{running}/result").status_code == 409
    jobs = Path(paper.app.state.jobs.store.root)  # type: ignore[attr-defined]
    assert leftovers(jobs) == []  # a cancelled job's input and partial output are gone
    assert paper.delete(f"/jobs/{running}").status_code == 204  # finished: deleted
    assert paper.get(f"/jobs/{running}").status_code == 404  # and gone
    assert paper.delete(f"/jobs/{running}").status_code == 404
    listed = [j["id"] for j in paper.get("/jobs").json()["jobs"]]
    assert listed == [queued]


def test_a_full_volume_is_507_and_leaves_nothing_behind(slide: Slide, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    free = shutil.disk_usage(jobs).free
    body = png(noise(2000, 2000))  # ~4 MB of noise
    with paper_app(slide, jobs, job_min_free_bytes=free + (1 << 40)) as full:
        answer = full.post("/jobs", content=body)
        assert answer.status_code == 507
        assert "UNET_JOB_MIN_FREE_BYTES" in answer.json()["detail"]
    # No Content-Length (chunked): refused as the bytes come, once past the free space kept.
    with paper_app(slide, jobs, job_min_free_bytes=free - (2 << 20)) as nearly:

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 1 << 16):
                yield body[start : start + (1 << 16)]

        answer = nearly.post("/jobs", content=chunks())
        assert answer.status_code == 507, answer.text
        assert nearly.get("/jobs").json() == {"jobs": []}
    assert leftovers(jobs) == []


def test_finished_jobs_expire_after_the_ttl_with_their_files(slide: Slide, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    with paper_app(slide, jobs, job_ttl=0.5) as client:
        job_id = submit(client, png(noise(100, 100)))
        job, _ = wait(client, job_id)
        assert job["status"] == "succeeded"
        assert (jobs / job_id).is_dir()
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{job_id}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(f"/jobs/{job_id}").status_code == 404
        assert leftovers(jobs) == []
        assert 'unet_jobs{status="succeeded"} 0.0' in client.get("/metrics").text


def test_a_shutdown_queues_the_running_job_and_the_next_start_finishes_it(
    slide: Slide, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    with paper_app(slide, jobs) as first:
        job_id = submit(first, slide.tif.read_bytes())
        while first.get(f"/jobs/{job_id}").json()["progress"]["tiles_done"] == 0:
            time.sleep(0.01)
    # Stopped at its next tile batch: queued again, with what it goes on from.
    assert sorted(p.name for p in (jobs / job_id).iterdir()) == [".resume", "input"]
    with paper_app(slide, jobs) as second:
        assert second.get(f"/jobs/{job_id}").json()["status"] in ("queued", "running")
        job, _ = wait(second, job_id)
        assert job["status"] == "succeeded"
        restarted = zipped_labels(second.get(f"/jobs/{job_id}/result").content, tmp_path)
        again = submit(second, slide.tif.read_bytes())
        assert wait(second, again)[0]["status"] == "succeeded"
        np.testing.assert_array_equal(
            restarted, zipped_labels(second.get(f"/jobs/{again}/result").content, tmp_path)
        )
        text = second.get("/metrics").text
        assert 'unet_jobs{status="succeeded"} 2.0' in text
        assert "unet_job_tiles_total" in text
        assert "unet_job_duration_seconds_count 2.0" in text


def test_a_job_whose_source_went_away_fails_and_says_why(
    paper: TestClient, slide: Slide, tmp_path: Path
) -> None:
    first = submit(paper, slide.tif.read_bytes())  # keeps the runner busy meanwhile
    doomed = slide.folder / "doomed.png"
    doomed.write_bytes(png(noise(100, 100)))
    answer = paper.post("/jobs", json={"source": doomed.name})
    doomed.unlink()
    job, _ = wait(paper, answer.json()["id"])
    assert job["status"] == "failed"
    assert job["error"] == "doomed.png could not be read: No such file or directory"
    assert str(slide.folder) not in job["error"]
    assert job["result"] is None
    assert paper.get(f"/jobs/{job['id']}/result").status_code == 409
    assert wait(paper, first)[0]["status"] == "succeeded"


# -- the pieces ------------------------------------------------------------------------------


def test_a_request_stored_before_options_were_kept_whole_reads_back() -> None:
    old = (
        '{"input": "/j/in.png", "name": "in.png", "output": "png", "large": false, "width": 9,'
        ' "height": 8, "frames": 1, "threshold": 0.4, "class_index": 2, "tta": true,'
        ' "min_area": 5}'
    )
    request = Submission.from_json(old)
    assert request.options == Options(0.4, 2, True, 5)
    new = Submission(
        "/j/in.png", "in.png", "overlay", False, 9, 8, 1, Options(0.4, 1, False, 5, True)
    )
    assert Submission.from_json(json.dumps(asdict(new))) == new


def test_a_failed_jobs_error_shows_no_server_path(tmp_path: Path) -> None:
    given = tmp_path / "lab" / "montage.ome.tif"
    request = Submission(str(given), "montage.ome.tif", "png", False, 10, 10, 1, Options(0.5))
    folder = tmp_path / "jobs" / "0b6c"

    def error(exc: BaseException) -> str:
        return failure(exc, request, folder)

    assert error(FileNotFoundError(2, "No such file or directory", str(given))) == (
        "montage.ome.tif could not be read: No such file or directory"
    )
    assert error(PermissionError(13, "Permission denied", str(folder / "result.png"))) == (
        "a file of the job failed: Permission denied"
    )
    assert error(ValueError(f"{given}: not a TIFF file")) == (
        "ValueError: montage.ome.tif: not a TIFF file"
    )
    assert error(KeyError(f"{folder}/levels/1")) == "KeyError: 'the job's folder/levels/1'"
    assert error(RuntimeError("cannot open '/srv/other/x/y.zarr/0' (a 1/2 size level)")) == (
        "RuntimeError: cannot open '0' (a 1/2 size level)"
    )
    assert error(OSError(28, "No space left on device")).startswith("the jobs volume is full")


def test_the_gate_lets_no_job_batch_start_while_a_request_waits_or_runs() -> None:
    gate, started, stop = Gate(), [], threading.Event()

    def job() -> None:
        while not stop.is_set():
            gate.job_batch(
                lambda: (started.append(time.monotonic()), time.sleep(0.01)), lambda: None
            )

    worker = threading.Thread(target=job)
    worker.start()
    try:
        while len(started) < 3:
            time.sleep(0.001)
        gate.arrive()
        gate.wait_turn()  # returns once the batch in flight (if any) has ended
        window_start, count = time.monotonic(), len(started)
        time.sleep(0.2)  # the request "runs": no job batch may start meanwhile
        assert len(started) == count
        gate.leave()
        while len(started) == count:
            time.sleep(0.001)
        assert started[-1] > window_start + 0.2
    finally:
        stop.set()
        worker.join()


def test_two_batches_never_run_at_once() -> None:
    """A job's tile batch and a hot-reloaded model's warm-up: one on the device at a time."""
    gate, running, overlaps = Gate(), [0], []

    def batch() -> None:
        running[0] += 1
        overlaps.append(running[0])
        time.sleep(0.005)
        running[0] -= 1

    def many() -> None:
        for _ in range(20):
            gate.job_batch(batch, lambda: None)

    threads = [threading.Thread(target=many) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(overlaps) == 60
    assert max(overlaps) == 1


def test_the_gate_stops_a_waiting_job_when_it_is_cancelled() -> None:
    gate, cancelled = Gate(), threading.Event()
    gate.arrive()  # a request holds the engine for good

    def check() -> None:
        if cancelled.is_set():
            raise KeyError("cancelled")

    threading.Timer(0.1, cancelled.set).start()
    with pytest.raises(KeyError):
        gate.job_batch(lambda: pytest.fail("ran"), check)


def test_the_tile_counter_adds_consecutive_runs() -> None:
    seen: list[int] = []
    counter = TileCounter(seen.append)
    for total in (3, 5, 1):  # three runs (frames, blocks or flips): 3, 5 and 1 tiles
        for done in range(1, total + 1):
            counter(done, total)
    assert seen == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    counter = TileCounter(seen.append)
    seen.clear()
    for done, total in ((4, 8), (8, 8), (8, 8)):  # batches of 4 and 8: runs of 8 tiles
        counter(done, total)
    assert seen == [4, 8, 16]


def test_the_jobs_open_api_is_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/result"} <= set(schema["paths"])
    post = schema["paths"]["/jobs"]["post"]
    assert {"202", "403", "413", "503", "507"} <= set(post["responses"])
    assert "application/json" in post["requestBody"]["content"]


def test_the_runner_survives_a_fault_of_its_own(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database failing once (a locked file, a full disk) costs a pause, not the runner."""
    import app.jobs.runner as runner_module

    runner = client.app.state.jobs  # type: ignore[attr-defined]
    monkeypatch.setattr(runner_module, "RETRY_S", 0.05)
    real, calls = runner.store.next_queued, []

    def flaky() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk I/O error")
        return real()

    monkeypatch.setattr(runner.store, "next_queued", flaky)
    runner.wake()
    job, _ = wait(client, submit(client, png(noise(64, 64))))
    assert job["status"] == "succeeded"
    assert len(calls) > 1
    assert "the job runner failed" in caplog.text


def test_a_submission_still_being_checked_counts_toward_the_queue_limit(
    slide: Slide, tmp_path: Path
) -> None:
    with paper_app(slide, tmp_path / "jobs", job_max_queue=1) as client:
        runner = client.app.state.jobs  # type: ignore[attr-defined]
        runner.submitting += 1  # one received, its input being checked, no row yet
        try:
            busy = client.post("/jobs", content=png(noise(64, 64)))
        finally:
            runner.submitting -= 1
        assert busy.status_code == 503
        assert "being submitted" in busy.json()["detail"]
        assert int(busy.headers["retry-after"]) > 0
        job_id = submit(client, png(noise(64, 64)))
        assert wait(client, job_id)[0]["status"] == "succeeded"
        assert runner.submitting == 0
