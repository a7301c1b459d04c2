"""DICOM through the service: SEG out, DICOM errors, no patient data where it does not belong."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.conftest import API_KEY, SERVER_ENV, start_server, stop_server

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SENTINELS = ("PHI^SENTINEL", "SENTINEL", "ID-SENTINEL-123", "19010203", "Sentinel Hospital")


def sample(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:  # bundled with pydicom: absent only in a broken install
        pytest.fail(f"pydicom's bundled test file {name} is missing")
    return Path(path)


def to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def with_phi(name: str) -> pydicom.Dataset:
    """A sample file carrying recognisable patient data and fresh UIDs."""
    ds = pydicom.dcmread(sample(name))
    ds.PatientName = "PHI^SENTINEL"
    ds.PatientID = "ID-SENTINEL-123"
    ds.PatientBirthDate = "19010203"
    ds.InstitutionName = "Sentinel Hospital"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


@pytest.fixture(scope="module")
def seg_client(softmax_model: Path) -> Iterator[TestClient]:
    from app.main import create_app
    from tests.conftest import settings

    with TestClient(create_app(settings(softmax_model))) as client:
        yield client


def test_dicom_seg_frames_equal_the_png_mask(seg_client: TestClient) -> None:
    data = sample("CT_small.dcm").read_bytes()
    source = pydicom.dcmread(io.BytesIO(data))
    seg_response = seg_client.post("/segment?format=dicom-seg", content=data)
    assert seg_response.status_code == 200, seg_response.text
    assert seg_response.headers["content-type"] == "application/dicom"
    png = seg_client.post("/segment?format=png", content=data)
    mask = np.asarray(Image.open(io.BytesIO(png.content)))

    seg = pydicom.dcmread(io.BytesIO(seg_response.content))
    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    assert seg.SegmentationType == "BINARY"
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID  # a new series
    assert seg.PatientID == source.PatientID  # the one place patient data belongs
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert labels == {1: "class_1", 2: "class_2"}
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("softmax3", "0.0.0")

    read = hd.seg.segread(io.BytesIO(seg_response.content))
    pixels = read.get_pixels_by_source_instance(
        [source.SOPInstanceUID], combine_segments=True, skip_overlap_checks=True
    )
    assert np.array_equal(pixels[0], mask)


def test_dicom_to_rle_and_probability(seg_client: TestClient) -> None:
    data = sample("MR_small.dcm").read_bytes()
    rle = seg_client.post("/segment?format=rle", content=data)
    assert rle.status_code == 200, rle.text
    assert (rle.json()["height"], rle.json()["width"]) == (64, 64)
    probability = seg_client.post("/segment?format=probability&class=2", content=data)
    assert probability.status_code == 200
    assert Image.open(io.BytesIO(probability.content)).size == (64, 64)


def test_dicom_seg_for_a_png_is_415(seg_client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((50, 50), dtype=np.uint8)).save(buffer, format="PNG")
    response = seg_client.post("/segment?format=dicom-seg", content=buffer.getvalue())
    assert response.status_code == 415
    assert "DICOM" in response.json()["detail"]


def test_non_image_truncated_and_positionless_multiframe(seg_client: TestClient) -> None:
    rtplan = seg_client.post("/segment", content=sample("rtplan.dcm").read_bytes())
    assert rtplan.status_code == 415
    truncated = seg_client.post("/segment", content=sample("CT_small.dcm").read_bytes()[:3000])
    assert truncated.status_code == 400
    multi = sample("examples_ybr_color.dcm").read_bytes()
    no_positions = seg_client.post("/segment?format=dicom-seg", content=multi)
    assert no_positions.status_code == 422
    assert "rle" in no_positions.json()["detail"]
    per_frame = seg_client.post("/segment?format=rle", content=multi)
    assert per_frame.status_code == 200
    frames = {s["frame"] for s in per_frame.json()["segments"]}
    assert frames == set(range(int(pydicom.dcmread(io.BytesIO(multi)).NumberOfFrames)))


def test_no_patient_data_in_logs_errors_or_metrics(softmax_model: Path, tmp_path: Path) -> None:
    """Every success and failure path with a file full of patient data; grep all output."""
    ct = with_phi("CT_small.dcm")
    good = to_bytes(ct)
    huge = with_phi("CT_small.dcm")
    huge.Rows, huge.Columns = 30000, 30000
    plan = with_phi("rtplan.dcm")
    uids = [ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID]
    requests = [
        ("png", good, 200),
        ("rle", good, 200),
        ("dicom-seg", good, 200),
        ("png", good[:4000], 400),
        ("png", to_bytes(huge), 413),
        ("png", to_bytes(plan), 415),
        ("nonsense", good, 422),
    ]
    log = tmp_path / "server.log"
    env = {**SERVER_ENV, "UNET_MODEL_PATH": str(softmax_model), "UNET_LOG_FORMAT": "json"}
    server = start_server(env, log)
    written: list[str] = []
    try:
        headers = {"X-API-Key": API_KEY}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
            for fmt, body, status in requests:
                response = http.post(f"/segment?format={fmt}", content=body)
                assert response.status_code == status, (fmt, response.text)
                written.append(str(dict(response.headers)))
                if status != 200 or fmt == "rle":
                    written.append(response.text)
            written.append(http.get("/metrics").text)
    finally:
        stop_server(server)
    written.append(log.read_text(encoding="utf-8"))
    assert len(log.read_text().splitlines()) >= len(requests)  # the requests were logged
    everything = "\n".join(written)
    for secret in (*SENTINELS, *uids):
        assert secret not in everything, f"{secret!r} leaked into the service's output"
