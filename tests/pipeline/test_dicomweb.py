"""A DICOMweb series as an input of the command line, served by a real Orthanc with its
DICOMweb plugin on 127.0.0.1: the same output as the DICOM WSI's folder on disk, nothing
left of the download, credentials never shown, and clear failures for what is not a
whole-slide series."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import zarr
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from app import cli
from app.api import job_upload
from app.errors import SourceFetchError, SourceUrlError, StorageFullError
from app.main import create_app
from app.pipeline.dicomweb import SeriesUrl, _stream_part
from tests.conftest import settings
from tests.deploy.pacs import Orthanc, ct_series, missing_tools, require
from tests.jobs.helpers import leftovers, wait, zipped_labels

pytestmark = pytest.mark.slow

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SCAN = Path(__file__).parents[1] / "codecs" / "wsidicomizer" / "scan-dicom"
USER, PASSWORD = "reader", "s3cret-word"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """An Orthanc (DICOMweb plugin, a password) holding wsidicomizer's slide and a CT series."""
    missing = missing_tools()[:1] + ([] if DICOMWEB_PLUGIN.exists() else ["orthanc-dicomweb"])
    require(missing, "make system-deps (Debian: orthanc, orthanc-dicomweb)")
    folder = tmp_path_factory.mktemp("dicomweb")
    extra = {"Plugins": [str(DICOMWEB_PLUGIN)], "AuthenticationEnabled": True,
             "RegisteredUsers": {USER: PASSWORD}}  # fmt: skip
    server = Orthanc(folder / "orthanc", extra=extra, auth=(USER, PASSWORD))
    server.start(wait_forwarder=False)
    try:
        for file in [*sorted(SCAN.iterdir()), *ct_series(folder / "ct", 2)]:
            answer = httpx.post(
                f"{server.url}/instances", content=file.read_bytes(), auth=(USER, PASSWORD)
            )
            answer.raise_for_status()
        yield server
    finally:
        server.stop()


def series_url(server: Orthanc, file: Path, credentials: bool = True) -> str:
    header = pydicom.dcmread(file, stop_before_pixels=True)
    root = server.url.replace("://", f"://{USER}:{PASSWORD}@") if credentials else server.url
    return f"{root}/dicom-web/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}"


def labels(store: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(store / "0"), mode="r"))


def test_a_dicomweb_series_segments_as_its_folder(
    orthanc: Orthanc, rgb_model: Path, tmp_path: Path
) -> None:
    url = series_url(orthanc, SCAN / "level0.dcm")
    uid = url.rsplit("/", 1)[1]
    out = tmp_path / "out"
    argv = ["--model", str(rgb_model), "--out", str(out), "--tile", "256", "--max-pixels", "100000"]
    assert cli.main([url, str(SCAN), *argv]) == 0
    rows = json.loads((out / "summary.json").read_text())
    shown = url.replace(f"{USER}:{PASSWORD}@", "")
    assert [(r["input"], r["status"], r["format"]) for r in rows] == [
        (str(SCAN.resolve()), "ok", "ome-zarr"), (shown, "ok", "ome-zarr"),
    ]  # fmt: skip
    assert PASSWORD not in (out / "summary.json").read_text()
    from_web, from_disk = labels(out / f"{uid}.ome.zarr"), labels(out / "scan-dicom.ome.zarr")
    assert from_web.shape == (700, 900)
    assert np.array_equal(from_web, from_disk)
    assert 0 < from_web.mean() < 1
    assert not any((out / ".dicomweb").iterdir())  # the download is gone
    assert cli.main([url, *argv]) == 0  # done already: skipped, nothing fetched
    (again,) = json.loads((out / "summary.json").read_text())
    assert (again["status"], again["output"]) == ("skipped", str(out / f"{uid}.ome.zarr"))


def test_what_is_no_whole_slide_series_fails_clearly(
    orthanc: Orthanc, rgb_model: Path, tmp_path: Path
) -> None:
    scan = series_url(orthanc, SCAN / "level0.dcm")
    urls = {
        "unknown": scan.rsplit("/", 1)[0] + "/1.2.3.4",
        "no password": series_url(orthanc, SCAN / "level0.dcm", credentials=False),
        "down": scan.replace(str(orthanc.http_port), "9"),  # nothing listens on port 9
    }
    out = tmp_path / "out"
    argv = ["--model", str(rgb_model), "--out", str(out), "--tile", "256"]
    assert cli.main([*urls.values(), *argv]) == 1
    rows = json.loads((out / "summary.json").read_text())
    errors = dict(zip(urls, (r["error"] for r in rows), strict=True))
    assert all(r["status"] == "failed" for r in rows)
    assert "no instances" in errors["unknown"]
    assert "answered 401" in errors["no password"]
    assert errors["down"].startswith("SourceFetchError")
    assert "ConnectError" in errors["down"]
    assert PASSWORD not in json.dumps(rows)
    assert not any((out / ".dicomweb").iterdir())


def test_a_ct_series_on_the_server_is_refused_before_any_download(
    orthanc: Orthanc, rgb_model: Path, tmp_path: Path
) -> None:
    studies = httpx.get(f"{orthanc.url}/dicom-web/series", auth=(USER, PASSWORD)).json()
    ct = next(s for s in studies if s["00080060"]["Value"] == ["CT"])
    study, series = ct["0020000D"]["Value"][0], ct["0020000E"]["Value"][0]
    root = orthanc.url.replace("://", f"://{USER}:{PASSWORD}@")
    out = tmp_path / "out"
    url = f"{root}/dicom-web/studies/{study}/series/{series}"
    assert cli.main([url, "--model", str(rgb_model), "--out", str(out)]) == 1
    (row,) = json.loads((out / "summary.json").read_text())
    assert "not a DICOM whole-slide image" in row["error"]
    assert "1.2.840.10008.5.1.4.1.1.2" in row["error"]  # CT Image Storage
    assert not any((out / ".dicomweb").iterdir())


def test_a_job_reads_a_dicomweb_series_under_its_allowed_prefixes(
    orthanc: Orthanc, rgb_model: Path, tmp_path: Path
) -> None:
    """A job's source: a series of an allowed DICOMweb server, fetched into the job's folder
    (the server's token or the URL's password), the same labels as the command line's;
    a server, a port or a look-alike host not allowed is 403, before any request to it."""
    url = series_url(orthanc, SCAN / "level0.dcm")
    uid = url.rsplit("/", 1)[1]
    out = tmp_path / "cli"
    argv = ["--model", str(rgb_model), "--out", str(out), "--tile", "256", "--format", "ome-zarr"]
    assert cli.main([url, *argv]) == 0
    jobs = tmp_path / "jobs"
    allowed = (f"{orthanc.url}/dicom-web/",)
    config = settings(rgb_model, jobs_dir=jobs, tile_size=256, job_source_urls=allowed)
    with TestClient(create_app(config)) as client:
        answer = client.post("/jobs?format=ome-zarr", json={"source": url})
        assert answer.status_code == 202, answer.text
        job, _ = wait(client, answer.json()["id"])
        assert job["status"] == "succeeded", job
        result = client.get(f"/jobs/{job['id']}/result")
        assert uid in result.headers["content-disposition"]
        from_job = zipped_labels(result.content, tmp_path)
        assert np.array_equal(from_job, labels(out / f"{uid}.ome.zarr"))
        refused = [
            url.replace(str(orthanc.http_port), str(orthanc.dicom_port)),  # another port
            url.replace("127.0.0.1", "127.0.0.1.nip.io"),  # a host that starts alike
            url.replace("/dicom-web/", "/dicom-webx/"),  # a path that starts alike
        ]
        for source in refused:
            answer = client.post("/jobs?format=ome-zarr", json={"source": source})
            assert answer.status_code == 403, (source, answer.text)
        unknown = url.rsplit("/", 1)[0] + "/1.2.3.4"
        answer = client.post("/jobs?format=ome-zarr", json={"source": unknown})
        assert answer.status_code == 400
        assert "no instances" in answer.json()["detail"]
        no_password = url.replace(f"{USER}:{PASSWORD}@", "")
        answer = client.post("/jobs?format=ome-zarr", json={"source": no_password})
        assert answer.status_code == 502
        assert "answered 401" in answer.json()["detail"]
        client.delete(f"/jobs/{job['id']}")
    assert leftovers(jobs) == []
    closed = settings(rgb_model, jobs_dir=tmp_path / "closed")
    with TestClient(create_app(closed)) as client:
        answer = client.post("/jobs", json={"source": url})
        assert answer.status_code == 403
        assert "UNET_JOB_SOURCE_URLS" in answer.json()["detail"]


def test_the_free_space_reserve_holds_while_a_series_downloads(
    orthanc: Orthanc, rgb_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A series is gigabytes: the volume is looked at after each instance fetched (it was
    checked against the JSON body's few bytes alone); a volume that fills meanwhile is a
    507, and nothing of the job stays."""
    url = series_url(orthanc, SCAN / "level0.dcm")
    looks: list[int] = []
    check_free = job_upload.check_free

    def filling(settings: Any, more: int = 0) -> None:
        looks.append(more)
        if len(looks) > 2:  # the body's, the one before the fetch, then: full
            raise StorageFullError("the jobs volume is nearly full (UNET_JOB_MIN_FREE_BYTES)")
        check_free(settings, more)

    monkeypatch.setattr(job_upload, "check_free", filling)
    config = settings(rgb_model, jobs_dir=tmp_path / "jobs",
                      job_source_urls=(f"{orthanc.url}/dicom-web/",))  # fmt: skip
    with TestClient(create_app(config)) as client:
        answer = client.post("/jobs", json={"source": url})
        assert answer.status_code == 507, answer.text
        assert client.get("/jobs").json() == {"jobs": []}
    assert len(looks) == 3
    assert leftovers(tmp_path / "jobs") == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://u:p@pacs.example/dicom-web/studies/1.2/series/3.4",
         "https://pacs.example/dicom-web/studies/1.2/series/3.4"),
        ("http://[::1]:8042/wado/studies/1/series/2/", "http://[::1]:8042/wado/studies/1/series/2"),
    ],
)  # fmt: skip
def test_series_urls_are_recognised_and_shown_without_credentials(text: str, shown: str) -> None:
    parsed = SeriesUrl.parse(text)
    assert parsed is not None
    assert parsed.shown == shown


@pytest.mark.parametrize(
    "text",
    ["scan.svs", "https://pacs/dicom-web/studies/1.2", "https://pacs/studies/1/series/x",
     "ftp://pacs/studies/1/series/2", "https://pacs/studies/1/series/2?x=1"],
)  # fmt: skip
def test_other_inputs_are_no_series_urls(text: str) -> None:
    assert SeriesUrl.parse(text) is None


BAD_URLS = [
    "https://pacs:99999/dicom-web/studies/1.2/series/3.4",  # port out of range
    "https://pacs:abc/dicom-web/studies/1.2/series/3.4",  # not a port
    "https://[::1/dicom-web/studies/1.2/series/3.4",  # an IPv6 host not closed
    "https://:8042/dicom-web/studies/1.2/series/3.4",  # no host
]


@pytest.mark.parametrize("text", BAD_URLS)
def test_a_series_url_whose_host_or_port_is_not_one_is_a_422_and_exit_2(
    text: str, client: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SourceUrlError, match="not valid"):
        SeriesUrl.parse(text)
    answer = client.post("/jobs", json={"source": text})  # it was a 500
    assert answer.status_code == 422, answer.text
    assert "DICOMweb series URL is not valid" in answer.json()["detail"]
    assert cli.main([text, "--out", str(tmp_path)]) == 2
    assert "DICOMweb series URL is not valid" in capsys.readouterr().err


@settings_(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3200), max_size=8))
def test_one_part_is_written_whole_however_the_body_is_cut(payload: bytes, cuts: list[int]) -> None:
    """WADO-RS's multipart/related answer, in arbitrary chunks: the part's bytes exactly."""
    boundary = "b0und-ary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + payload + f"\r\n--{boundary}--\r\n".encode()
    )  # fmt: skip
    edges = [0, *sorted(c for c in cuts if c < len(body)), len(body)]
    chunks = iter([body[a:b] for a, b in itertools.pairwise(edges)])
    out = io.BytesIO()
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    assert _stream_part(chunks, content_type, out) == len(payload)
    assert out.getvalue() == payload


def test_an_answer_that_is_no_multipart_is_a_fetch_error() -> None:
    with pytest.raises(SourceFetchError, match="not multipart/related"):
        _stream_part(iter([b"DICM"]), "application/dicom", io.BytesIO())
    two = b"--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n"
    with pytest.raises(SourceFetchError, match="2 parts"):
        _stream_part(iter([two]), "multipart/related; boundary=b", io.BytesIO())
