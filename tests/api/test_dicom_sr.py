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

from app.codecs.dicom_geometry import extents, geometry
from app.codecs.dicom_sr import component_counts, measurements
from app.codecs.errors import DicomSegError
from app.main import create_app
from app.service import RecentMasks
from tests.api.test_dicom_series import ct_series, dciodvfy_errors, files
from tests.conftest import settings
from tests.nets import SOFTMAX3, default_card, save_model

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def client(softmax_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(softmax_model))) as c:
        yield c


def read_sr(data: bytes) -> hd.sr.Comprehensive3DSR:
    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data)))


def figures(sr: hd.sr.Comprehensive3DSR) -> dict[int, tuple[str, str, float, str]]:
    """Segment number -> (referenced SEG UID, measurement name, value, unit): the first
    measurement of each group (its volume or area)."""
    out = {}
    for group in sr.content.get_volumetric_roi_measurement_groups():
        (reference,) = group.referenced_segment[0].ReferencedSOPSequence  # the SEG item
        measurement = group.get_measurements()[0]
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


def counted(sr: hd.sr.Comprehensive3DSR) -> dict[int, tuple[float, str]]:
    """Segment number -> (its number of objects, unit), for the groups that count."""
    out = {}
    for group in sr.content.get_volumetric_roi_measurement_groups():
        (reference,) = group.referenced_segment[0].ReferencedSOPSequence
        for measurement in group.get_measurements():
            if measurement.name.meaning == "Number of similar findings":
                out[int(reference.ReferencedSegmentNumber)] = (
                    float(measurement.value),
                    str(measurement.unit.value),
                )
    return out


def test_components_are_counted_through_the_slices_in_position_order() -> None:
    """Two blobs of class 1 that touch only across shuffled slices, one of class 2, and a
    one-voxel speck left out by min_size 2."""
    masks = np.zeros((4, 6, 6), dtype=np.uint8)
    masks[0, 0:2, 0:2] = 1  # z 0 mm
    masks[1, 0:2, 0:2] = 1  # z 2 mm: the same blob as z 0
    masks[3, 4:6, 4:6] = 1  # z 6 mm: another
    masks[1:3, 3, 0] = 2  # z 2 and 4 mm: one object of class 2
    masks[2, 5, 2] = 1  # a speck at z 4 mm, touching nothing
    along = [0.0, 2.0, 4.0, 6.0]
    order = [2, 0, 3, 1]
    shuffled = [masks[i] for i in order]
    classes = ["bg", "a", "b"]
    assert component_counts([along[i] for i in order], shuffled, classes, 2) == {1: 2, 2: 1}
    assert component_counts(along, list(masks), classes, 0) == {1: 3, 2: 1}
    # Taken in the order given, z 0 and z 6 would touch: in position order, z 3 parts them.
    dot, empty = np.ones((1, 1), dtype=np.uint8), np.zeros((1, 1), dtype=np.uint8)
    assert component_counts([0.0, 6.0, 3.0], [dot, dot, empty], ["bg", "a"], 0) == {1: 2}


def _objects_model(model_dir: Path, recipe: dict[str, object]) -> Path:
    path = model_dir / f"objects-{recipe['method']}.onnx"
    if not path.exists():
        card = default_card(SOFTMAX3, name=f"objects-{recipe['method']}", objects=recipe)
        save_model(path, SOFTMAX3, seed=5, card=card)  # seed 5: objects of both classes
    return path


def test_an_object_model_counts_each_segments_objects(model_dir: Path, tmp_path: Path) -> None:
    """components: the SEG's own segments, labelled in 3D by scipy, give the same numbers;
    the SR stays dciodvfy-clean with a count beside each volume."""
    from scipy import ndimage

    model = _objects_model(model_dir, {"method": "components", "min_area": 3})
    series = ct_series(4, seed=5)
    with TestClient(create_app(settings(model))) as client:
        answer = client.post("/segment?format=dicom-sr", files=files(series[::-1]))
        seg_answer = client.post("/segment?format=dicom-seg", files=files(series))
    assert answer.status_code == 200, answer.text
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(seg_answer.content)))
    uids = [str(pydicom.dcmread(io.BytesIO(s)).SOPInstanceUID) for s in series]  # z order
    found = counted(read_sr(answer.content))
    assert found
    dropped = 0
    for number, (value, unit) in found.items():
        pixels = seg.get_pixels_by_source_instance(
            uids, segment_numbers=[number], skip_overlap_checks=True
        )[..., 0]
        labels, n = ndimage.label(pixels, structure=ndimage.generate_binary_structure(3, 1))
        sizes = np.bincount(labels.ravel())[1:]
        assert (value, unit) == (int((sizes >= 3).sum()), "1")
        dropped += n - int((sizes >= 3).sum())
    assert dropped > 0  # the noise model makes specks: min_area mattered
    assert dciodvfy_errors(answer.content, tmp_path) == []


def test_a_watershed_model_counts_a_single_frame_as_format_objects_does(
    model_dir: Path,
) -> None:
    model = _objects_model(model_dir, {"method": "watershed", "boundary_class": 1})
    (data,) = ct_series(1, seed=6)
    with TestClient(create_app(settings(model))) as client:
        sr = read_sr(client.post("/segment?format=dicom-sr", content=data).content)
        objects = client.post("/segment?format=objects", content=data).json()["objects"]
        volume = read_sr(client.post("/segment?format=dicom-sr", files=files(ct_series(2))).content)
    by_class = np.bincount([o["class_index"] for o in objects], minlength=3)
    assert by_class[2] > 0
    assert counted(sr) == {2: (float(by_class[2]), "1")}  # never the boundary class
    assert counted(volume) == {}  # a per-frame recipe: no count for a volume


def test_the_sr_after_its_seg_recalls_the_masks_and_is_the_same_sr(
    softmax_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's and the plugin's order: the SEG, then the SR of the same series. The SR
    runs no inference and is the SR of a service that never saw the SEG, element for element
    but the clock's (dates and times);
    another threshold, another series or a second SR infer again."""
    series = ct_series(3, seed=9)
    with TestClient(create_app(settings(softmax_model))) as fresh:
        alone = fresh.post("/segment?format=dicom-sr", files=files(series)).content
    with TestClient(create_app(settings(softmax_model))) as client:
        predictor = client.app.state.service.predictor  # type: ignore[attr-defined]
        calls: list[int] = []
        predict = predictor.predict
        monkeypatch.setattr(
            predictor, "predict", lambda *a, **k: calls.append(1) or predict(*a, **k)
        )

        def frames_inferred(url: str, parts: list[bytes]) -> int:
            before = len(calls)
            answer = client.post(url, files=files(parts))
            assert answer.status_code == 200, answer.text
            return len(calls) - before

        assert frames_inferred("/segment?format=dicom-seg", series) == 3
        answer = client.post("/segment?format=dicom-sr", files=files(series[::-1]))  # any order
        assert "inference;dur=0.0" in answer.headers["server-timing"]
        assert timeless(answer.content) == timeless(alone)
        assert frames_inferred("/segment?format=dicom-sr", series) == 3  # used once
        assert frames_inferred("/segment?format=dicom-seg&threshold=0.3", series) == 3
        assert frames_inferred("/segment?format=dicom-sr", series) == 3  # threshold 0.5 now
        assert frames_inferred("/segment?format=dicom-seg", ct_series(3, seed=10)) == 3
        assert frames_inferred("/segment?format=objects", series) == 3  # needs probabilities


def timeless(data: bytes) -> Dataset:
    """An SR with every date and time emptied (they say when it was made)."""
    ds = pydicom.dcmread(io.BytesIO(data))

    def blank(dataset: Dataset, element: pydicom.DataElement) -> None:
        if element.VR in ("DA", "TM", "DT"):
            element.value = ""

    ds.walk(blank)
    return ds


def test_recent_masks_are_used_once_and_dropped_when_too_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    masks = [np.zeros((4, 4), np.uint8)]
    recent = RecentMasks()
    recent.put("a", masks)
    recent.expire()  # young: kept
    assert recent.get("a") is masks
    assert recent.get("a") is None  # used once
    recent.put("a", masks)
    monkeypatch.setattr(RecentMasks, "TTL_S", -1.0)  # now too old
    recent.expire()
    monkeypatch.setattr(RecentMasks, "TTL_S", 300.0)
    assert recent.get("a") is None  # dropped by the request that came after
    monkeypatch.setattr(RecentMasks, "MAX_BYTES", 8)
    recent.put("a", masks)  # 16 bytes: too large to keep
    assert recent.get("a") is None
