"""Physical units for non-DICOM clients: the pixel size an input states (DICOM Pixel Spacing,
OME-TIFF, ImageJ and centimetre TIFF resolutions; never a PNG's or an inch TIFF's print
dpi), and ``area_um2`` / ``volume_mm3`` in format=objects and geojson."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import tifffile
from fastapi.testclient import TestClient
from PIL import Image

from app.codecs.images import Limits
from app.codecs.pillow import pillow_decoder, tiff_pixel_size_um
from tests.api.test_dicom_series import ct_series, files
from tests.api.test_dicom_sr import figures, read_sr

RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 255, (96, 80), dtype=np.uint8)


def tiff(**options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, PIXELS, **options)  # type: ignore[call-overload]
    return buffer.getvalue()


CASES = {
    "ome": (tiff(ome=True, metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.5}), (0.5, 0.25)),
    "ome in nm": (
        tiff(
            ome=True,
            metadata={
                "PhysicalSizeX": 250,
                "PhysicalSizeXUnit": "nm",
                "PhysicalSizeY": 500,
                "PhysicalSizeYUnit": "nm",
            },
        ),
        (0.5, 0.25),
    ),
    "imagej": (tiff(imagej=True, resolution=(4.0, 2.0), metadata={"unit": "um"}), (0.5, 0.25)),
    "centimetre": (tiff(resolution=(40000.0, 20000.0), resolutionunit="CENTIMETER"), (0.5, 0.25)),
    "inch, a print size": (tiff(resolution=(300.0, 300.0), resolutionunit="INCH"), None),
    "no resolution": (tiff(), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_pixel_size_a_tiff_states(name: str) -> None:
    data, expected = CASES[name]
    with Image.open(io.BytesIO(data)) as im:
        found = tiff_pixel_size_um(im)
    assert found == (None if expected is None else pytest.approx(expected))
    decode = pillow_decoder("TIFF", "TIFF", "tiff", True, tiff_pixel_size_um)
    image = decode(data, Limits(10**8))
    assert image.pixel_size_um == found
    assert np.array_equal(image.frames[0], PIXELS)


def test_objects_carry_areas_in_um2_when_the_size_is_stated(softmax_client: TestClient) -> None:
    stated = softmax_client.post("/segment?format=objects", content=CASES["ome"][0]).json()
    unstated = softmax_client.post("/segment?format=objects", content=CASES["no resolution"][0])
    png = io.BytesIO()
    Image.fromarray(PIXELS).save(png, format="PNG", dpi=(300, 300))
    from_png = softmax_client.post("/segment?format=objects", content=png.getvalue()).json()
    assert stated["pixel_size_um"] == [0.5, 0.25]
    assert stated["objects"]
    for row in stated["objects"]:
        assert row["area_um2"] == pytest.approx(row["area"] * 0.125, abs=1e-3)
    for document in (unstated.json(), from_png):
        assert "pixel_size_um" not in document
        assert all("area_um2" not in row for row in document["objects"])
    # The same objects either way: only the units are added.
    plain = [{k: v for k, v in r.items() if k != "area_um2"} for r in stated["objects"]]
    assert plain == unstated.json()["objects"]
    geojson = softmax_client.post("/segment?format=geojson", content=CASES["ome"][0]).json()
    for item in geojson["features"]:
        measured = item["properties"]["measurements"]
        assert measured["area_um2"] == pytest.approx(measured["area"] * 0.125, abs=1e-3)


def test_a_dicom_series_gives_um2_per_object_and_the_srs_volumes(
    softmax_client: TestClient,
) -> None:
    series = ct_series(4, seed=8)
    spacing = [float(v) * 1000 for v in pydicom.dcmread(io.BytesIO(series[0])).PixelSpacing]
    document = softmax_client.post("/segment?format=objects", files=files(series[::-1])).json()
    assert document["pixel_size_um"] == pytest.approx(spacing)
    rows = document["objects"]
    assert rows
    for row in rows:
        assert row["area_um2"] == pytest.approx(row["area"] * spacing[0] * spacing[1], abs=1e-3)
    report = softmax_client.post("/segment?format=dicom-sr", files=files(series))
    sr_volumes = {
        number: value for number, (_, _, value, _) in figures(read_sr(report.content)).items()
    }
    names = ["background", "class_1", "class_2"]
    assert {names[n]: v for n, v in sr_volumes.items()} == pytest.approx(document["volume_mm3"])
    single = softmax_client.post("/segment?format=objects", content=series[0]).json()
    assert "volume_mm3" not in single  # one slice: areas, no volume
    assert single["pixel_size_um"] == pytest.approx(spacing)
