"""format=dicom-sr: a TID 1500 measurement report about the SEG of the same request, read
back with highdicom, judged by dciodvfy, its volumes checked against known shapes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset

from app.codecs.dicom_sr import extents, geometry, measurements
from app.codecs.errors import DicomSegError
from app.main import create_app
from tests.app.conftest import settings
from tests.app.test_dicom_series import ct_series, dciodvfy_errors, files

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def client(softmax_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(softmax_model))) as c:
        yield c


def read_sr(data: bytes) -> hd.sr.Comprehensive3DSR:
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data)))


def figures(sr: hd.sr.Comprehensive3DSR) -> dict[int, tuple[str, str, float, str]]:
    """Segment number -> (referenced SEG UID, measurement name, value, unit)."""
    out = {}
    for group in sr.content.get_volumetric_roi_measurement_groups():
        (reference,) = group.referenced_segment[0].ReferencedSOPSequence  # the SEG item
        (measurement,) = group.get_measurements()
        number = int(reference.ReferencedSegmentNumber)
        out[number] = (
            str(reference.ReferencedSOPInstanceUID),
            str(measurement.name.meaning),
            float(measurement.value),
            str(measurement.unit.value),
        )
    return out


def test_a_series_gives_an_sr_about_its_seg_with_volumes_in_mm3(
    client: TestClient, tmp_path: Path
) -> None:
    series = ct_series(5, seed=3)
    shuffled = [series[i] for i in (3, 0, 4, 1, 2)]
    answer = client.post("/segment?format=dicom-sr", files=files(shuffled))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/dicom"
    seg_answer = client.post("/segment?format=dicom-seg", files=files(series))
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(seg_answer.content)))
    sr = read_sr(answer.content)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    found = figures(sr)
    assert found  # the softmax model finds both classes somewhere in noise
    first = pydicom.dcmread(io.BytesIO(series[0]))
    voxel = float(first.PixelSpacing[0]) * float(first.PixelSpacing[1]) * 2.0  # 2 mm apart
    uids = [str(pydicom.dcmread(io.BytesIO(s)).SOPInstanceUID) for s in series]
    for number, (seg_uid, name, value, unit) in found.items():
        assert seg_uid == seg.SOPInstanceUID  # the SEG that dicom-seg returns
        assert (name, unit) == ("Volume", "mm3")
        pixels = seg.get_pixels_by_source_instance(
            uids, segment_numbers=[number], skip_overlap_checks=True
        )
        assert value == pytest.approx(int(pixels.sum()) * voxel, rel=1e-6)
    # Its evidence: the source instances and the SEG.
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series_item in study.ReferencedSeriesSequence
        for item in series_item.ReferencedSOPSequence
    }
    assert evidence == {*uids, seg.SOPInstanceUID}
    assert dciodvfy_errors(answer.content, tmp_path) == []
    again = client.post("/segment?format=dicom-sr", files=files(series))
    assert read_sr(again.content).SOPInstanceUID == sr.SOPInstanceUID  # deterministic UIDs


def test_a_single_slice_gives_areas_in_mm2(client: TestClient, tmp_path: Path) -> None:
    (data,) = ct_series(1, seed=4)
    answer = client.post("/segment?format=dicom-sr", content=data)
    assert answer.status_code == 200, answer.text
    found = figures(read_sr(answer.content))
    assert found
    assert {(name, unit) for _, name, _, unit in found.values()} == {("Area", "mm2")}
    assert dciodvfy_errors(answer.content, tmp_path) == []


def test_dicom_sr_for_a_png_is_415_and_without_spacing_422(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((50, 50), dtype=np.uint8)).save(buffer, format="PNG")
    response = client.post("/segment?format=dicom-sr", content=buffer.getvalue())
    assert response.status_code == 415
    assert "dicom-sr needs a DICOM input" in response.json()["detail"]
    ds = pydicom.dcmread(io.BytesIO(ct_series(1)[0]))
    del ds.PixelSpacing
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    no_spacing = client.post("/segment?format=dicom-sr", content=out.getvalue())
    assert no_spacing.status_code == 422
    assert "pixel spacing" in no_spacing.json()["detail"]


def slices(spacing: tuple[float, float], zs: list[float]) -> list[Dataset]:
    out = []
    for z in zs:
        ds = Dataset()
        ds.PixelSpacing = list(spacing)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, z]
        out.append(ds)
    return out


def test_a_cube_and_a_sphere_at_anisotropic_spacing_shuffled() -> None:
    """Volumes within 1 % of the analytic ones: rows 0.4 mm, columns 0.5 mm, slices 0.8 mm
    apart, the slices in a shuffled order (the masks in the same order)."""
    dy, dx, dz, n = 0.4, 0.5, 0.8, 120
    z = np.arange(n) * dz
    y, x = (np.arange(200) + 0.5) * dy, (np.arange(200) + 0.5) * dx
    zz, yy, xx = np.meshgrid(z + dz / 2, y, x, indexing="ij")
    sphere = (zz - 48) ** 2 + (yy - 40) ** 2 + (xx - 50) ** 2 <= 20.0**2
    cube = (zz >= 8) & (zz < 24) & (yy >= 8) & (yy < 24) & (xx >= 70) & (xx < 86)  # 16 mm
    masks = np.where(sphere, 1, 0) + np.where(cube, 2, 0)
    order = np.random.default_rng(0).permutation(n)
    sources = slices((dy, dx), list(z[order]))
    found = measurements(sources, list(masks[order].astype(np.uint8)), ["bg", "sphere", "cube"])
    assert found[1][0] == found[2][0] == "volume"
    assert found[1][1] == pytest.approx(4 / 3 * np.pi * 20.0**3, rel=0.01)
    assert found[2][1] == pytest.approx(16.0**3, rel=0.01)


def test_uneven_gaps_count_as_they_are_and_thickness_is_not_used() -> None:
    """Slices at 0, 1, 3 and 6 mm: each counts half the gap to each neighbour."""
    assert list(extents([3.0, 0.0, 6.0, 1.0])) == [2.5, 1.0, 3.0, 1.5]
    sources = slices((1.0, 1.0), [0.0, 1.0, 3.0, 6.0])
    for ds in sources:
        ds.SliceThickness = 10.0  # ignored
    masks = [np.ones((2, 2), dtype=np.uint8) for _ in sources]
    assert measurements(sources, masks, ["bg", "x"]) == {1: ("volume", 4 * 8.0)}
    with pytest.raises(DicomSegError, match="share a position"):
        extents([0.0, 2.0, 2.0])


def test_a_multi_frame_image_is_read_from_its_functional_groups() -> None:
    ds = Dataset()
    ds.NumberOfFrames = 3
    shared = Dataset()
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing = [0.5, 0.25]
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal: normal along y
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for y in (10.0, 12.0, 14.0):
        position, frame = Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, y, 0.0]
        frame.PlanePositionSequence = [position]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    along, area = geometry([ds])
    assert area == 0.125
    assert [abs(a) for a in along] == [10.0, 12.0, 14.0]
