"""A series in, one SEG out: several instances of one CT series in one request."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from app.main import create_app
from tests.conftest import settings

SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
DCIODVFY = shutil.which("dciodvfy")


def ct_series(count: int, seed: int = 0) -> list[bytes]:
    """``count`` CT slices of one new series 2 mm apart along z, each with other pixels."""
    base = pydicom.dcmread(str(get_testdata_file("CT_small.dcm", download=False)))
    rng = np.random.default_rng(seed)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    slices = []
    for i in range(count):
        ds = base.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
        ds.InstanceNumber = i + 1
        pixels = base.pixel_array.astype(np.int16) + rng.integers(-200, 200, (128, 128))
        ds.PixelData = pixels.astype(np.int16).tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        slices.append(buffer.getvalue())
    return slices


def uid(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def z(data: bytes) -> float:
    return float(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).ImagePositionPatient[2])


def files(slices: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"{i}.dcm", s, "application/dicom")) for i, s in enumerate(slices)]


def stow(slices: list[bytes]) -> tuple[bytes, str]:
    """A DICOMweb STOW-RS style multipart/related body."""
    boundary = "DICOMwebBoundary"
    body = (
        b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + s + b"\r\n"
            for s in slices
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def dciodvfy_errors(data: bytes, folder: Path) -> list[str]:
    if DCIODVFY is None:
        message = "dciodvfy (Debian's dicom3tools) is missing: make system-deps"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    path = folder / "seg.dcm"
    path.write_bytes(data)
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def client(softmax_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(softmax_model))) as c:
        yield c


@pytest.fixture(scope="module")
def series() -> list[bytes]:
    return ct_series(30)


def test_thirty_shuffled_instances_make_one_seg_in_slice_order(
    client: TestClient, series: list[bytes], tmp_path: Path
) -> None:
    shuffled = [series[i] for i in np.random.default_rng(1).permutation(len(series))]
    answer = client.post("/segment?format=dicom-seg", files=files(shuffled))
    assert answer.status_code == 200, answer.text
    ds = pydicom.dcmread(io.BytesIO(answer.content))
    assert ds.SOPClassUID == SEGMENTATION
    referenced = [
        r.ReferencedSOPInstanceUID
        for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    ]
    assert sorted(referenced) == sorted(uid(s) for s in series)
    z_of = {uid(s): z(s) for s in series}
    frame_sources = [
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    # Frames come segment by segment, each in slice order (highdicom's: along the normal).
    segment_of = [
        int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    for segment in set(segment_of):
        zs = [z_of[s] for s, n in zip(frame_sources, segment_of, strict=True) if n == segment]
        assert zs in (sorted(zs), sorted(zs, reverse=True))
        assert len(set(zs)) == len(zs)
    # Each instance's frames equal that instance's own answer.
    seg = hd.seg.Segmentation.from_dataset(ds)
    for data in series[::7]:
        alone = pydicom.dcmread(
            io.BytesIO(client.post("/segment?format=dicom-seg", content=data).content)
        )
        alone_pixels = hd.seg.Segmentation.from_dataset(alone).get_pixels_by_source_instance(
            [uid(data)], combine_segments=True
        )
        together = seg.get_pixels_by_source_instance([uid(data)], combine_segments=True)
        np.testing.assert_array_equal(together, alone_pixels)
        assert alone.SeriesInstanceUID == ds.SeriesInstanceUID  # one SEG series per series
    assert dciodvfy_errors(answer.content, tmp_path) == []


def test_stow_rs_body_gives_the_same_seg(client: TestClient, series: list[bytes]) -> None:
    form = client.post("/segment?format=dicom-seg", files=files(series[:5]))
    body, content_type = stow(series[:5][::-1])
    related = client.post(
        "/segment?format=dicom-seg", content=body, headers={"Content-Type": content_type}
    )
    assert related.status_code == 200, related.text
    a, b = (pydicom.dcmread(io.BytesIO(r.content)) for r in (form, related))
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    assert a.PixelData == b.PixelData


def test_the_same_series_twice_has_the_same_uids(client: TestClient, series: list[bytes]) -> None:
    uids = []
    for _ in range(2):
        ds = pydicom.dcmread(
            io.BytesIO(client.post("/segment?format=dicom-seg", files=files(series[:4])).content)
        )
        uids.append((ds.SeriesInstanceUID, ds.SOPInstanceUID))
    assert uids[0] == uids[1]
    assert all(len(u) <= 64 for u in uids[0])
    other = pydicom.dcmread(
        io.BytesIO(
            client.post("/segment?format=dicom-seg", files=files(ct_series(4, seed=2))).content
        )
    )
    assert other.SeriesInstanceUID != uids[0][0]


def test_rle_lists_segments_per_instance(client: TestClient, series: list[bytes]) -> None:
    segments = client.post("/segment?format=rle", files=files(series[:3])).json()["segments"]
    assert len(segments) == 3 * 2  # 3 instances x 2 non-background classes
    assert {s["sop_instance_uid"] for s in segments} == {uid(s) for s in series[:3]}
    assert client.post("/segment", files=files(series[:3])).status_code == 422  # png: one frame


def edit(data: bytes, **changes: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"SeriesInstanceUID": "1.2.3.4"}, "series"),
        ({"PixelSpacing": [0.5, 0.5]}, "pixel spacing"),
        ({"ImageOrientationPatient": [0, 1, 0, 0, 0, -1]}, "orientation"),
        ({"FrameOfReferenceUID": "1.2.3.5"}, "frame of reference"),
        ({"ImagePositionPatient": [0.0, 0.0, 0.0]}, "same position"),
    ],
)
def test_an_inconsistent_series_is_422_naming_what_differs(
    client: TestClient, series: list[bytes], change: dict[str, object], named: str
) -> None:
    bad = [series[0], series[1], edit(series[2], **change)]
    answer = client.post("/segment?format=dicom-seg", files=files(bad))
    assert answer.status_code == 422
    assert named in answer.json()["detail"]


def test_limits_hold_for_the_whole_request(softmax_model: Path, series: list[bytes]) -> None:
    with TestClient(create_app(settings(softmax_model, max_image_pixels=128 * 128 * 10))) as small:
        assert small.post("/segment?format=rle", files=files(series[:4])).status_code == 200
        refused = small.post("/segment?format=rle", files=files(series[:11]))
        assert refused.status_code == 413
        assert "UNET_MAX_IMAGE_PIXELS" in refused.json()["detail"]


def test_several_non_dicom_files_are_refused(client: TestClient) -> None:
    from tests.samples import noise, png

    answer = client.post(
        "/segment", files=[("file", ("a.png", png(noise(50, 50)), "image/png"))] * 2
    )
    assert answer.status_code == 422
    assert "one series" in answer.json()["detail"]


def test_a_single_instance_seg_validates_too(
    client: TestClient, series: list[bytes], tmp_path: Path
) -> None:
    answer = client.post("/segment?format=dicom-seg", content=series[0])
    assert dciodvfy_errors(answer.content, tmp_path) == []


def test_a_stow_rs_body_of_more_parts_than_frames_is_refused_before_it_is_parsed(
    client: TestClient,
) -> None:
    body, content_type = stow([b"x"] * 1001)  # UNET_MAX_FRAMES is 1000
    answer = client.post("/segment", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400, answer.text
    assert "more than 1000 parts" in answer.json()["detail"]
    assert "UNET_MAX_FRAMES" in answer.json()["detail"]


def test_a_short_boundary_inside_the_parts_is_no_part(client: TestClient) -> None:
    """Only CRLF -- boundary delimits a part (RFC 2046): "--x" in an instance's bytes is
    not counted, and a series of a few parts is never taken for more than 1000."""
    part = b"--x" * 600  # 600 look-alikes in each of three parts
    body = b"".join(
        b"--x\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n" for _ in range(3)
    )
    body += b"--x--\r\n"
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'}
    answer = client.post("/segment", content=body, headers=headers)
    assert answer.status_code == 400, answer.text  # three parts that are no DICOM
    assert "parts" not in answer.json()["detail"]
