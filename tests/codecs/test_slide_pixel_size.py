"""The pixel size a slide's file states, read as pathologists' tools read it: OME-XML,
an Aperio SVS's MPP, TIFF resolution in centimetres (never inches), an OME-Zarr's scale
with its unit, a DICOM WSI's pixel spacing, OpenSlide's mpp properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from app.codecs.pixel_size import ngff_pixel_size_um, openslide_pixel_size_um
from app.codecs.slides import open_slide
from tests.samples import gradient_rgb, write_dicom_wsi, write_ome_tiff, write_ome_zarr, write_svs

IMAGE = gradient_rgb(300, 400)


def pixel_size(path: Path) -> tuple[float, float] | None:
    with open_slide(path) as slide:
        return slide.pixel_size_um


def test_ome_tiff_svs_and_dicom_wsi_state_theirs(tmp_path: Path) -> None:
    ome = tmp_path / "scan.ome.tif"
    metadata = {"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.26, "PhysicalSizeXUnit": "µm"}
    write_ome_tiff(ome, IMAGE, metadata=metadata)
    assert pixel_size(ome) == pytest.approx((0.26, 0.25))
    write_svs(tmp_path / "scan.svs", IMAGE)  # "MPP = 0.5"
    assert pixel_size(tmp_path / "scan.svs") == (0.5, 0.5)
    write_dicom_wsi(tmp_path / "wsi", IMAGE)  # 0.0005 mm
    assert pixel_size(tmp_path / "wsi") == pytest.approx((0.5, 0.5))


@pytest.mark.parametrize(
    ("unit", "expected"), [("CENTIMETER", (0.25, 0.25)), ("INCH", None), ("NONE", None)]
)
def test_tiff_resolution_counts_in_centimetres_never_inches(
    unit: str, expected: tuple[float, float] | None, tmp_path: Path
) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, IMAGE, tile=(256, 256), resolution=(40000, 40000),
                     resolutionunit=unit)  # fmt: skip
    assert pixel_size(path) == (pytest.approx(expected) if expected else None)


def test_an_ome_zarr_states_its_scale_only_with_a_unit(tmp_path: Path) -> None:
    write_ome_zarr(tmp_path / "a.ome.zarr", IMAGE, pixel_size_um=0.5)
    assert pixel_size(tmp_path / "a.ome.zarr") == (0.5, 0.5)
    write_ome_zarr(tmp_path / "b.ome.zarr", IMAGE)  # a scale of 1 without a unit: no size
    assert pixel_size(tmp_path / "b.ome.zarr") is None
    nanometres = {
        "axes": [{"name": "y", "unit": "nanometer"}, {"name": "x", "unit": "nanometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [4.0, 5.0]}]}],
    }  # fmt: skip
    assert ngff_pixel_size_um(nanometres) == pytest.approx((0.004, 0.005))
    assert ngff_pixel_size_um({"axes": "yx"}) is None
    for unit, size in (("meter", 2.5e6), ("angstrom", 2.5e-4), ("picometer", 2.5e-6)):
        scale = [{"type": "scale", "scale": [2.5, 2.5]}]
        axes = [{"name": a, "unit": unit} for a in "yx"]
        scaled = {"axes": axes, "datasets": [{"coordinateTransformations": scale}]}
        assert ngff_pixel_size_um(scaled) == pytest.approx((size, size))


def test_openslide_states_its_mpp() -> None:
    assert openslide_pixel_size_um({"openslide.mpp-x": "0.2525", "openslide.mpp-y": "0.25"}) == (
        0.25, 0.2525,
    )  # fmt: skip
    assert openslide_pixel_size_um({"openslide.mpp-x": "0.25"}) is None
    assert openslide_pixel_size_um({"openslide.mpp-x": "nan", "openslide.mpp-y": "0"}) is None


def test_an_unstated_size_is_none(tmp_path: Path) -> None:
    path = tmp_path / "bare.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), tile=(32, 32))
    assert pixel_size(path) is None
