"""DICOM whole-slide images (VL Whole Slide Microscopy) read as slides through wsidicom: the
same pixels and levels as the TIFF they were written from, the same segmentation from the
command line, and other DICOM (a CT slice) left to the in-memory decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from pydicom.data import get_testdata_file

from app import cli
from app.codecs.dicom_wsi import is_dicom_wsi
from app.codecs.errors import CorruptImageError
from app.codecs.overview import overview
from app.codecs.slides import lazy_readable, open_slide
from tests.samples import gradient_rgb, write_dicom_wsi, write_ome_tiff


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path, Path]:
    """An RGB image as an OME-TIFF and as a DICOM WSI (two levels, 256 px tiles), side by
    side in one folder."""
    folder = tmp_path_factory.mktemp("wsi")
    image = gradient_rgb(1100, 1500)
    image[300:700, 200:900] = [200, 120, 170]  # something to segment
    write_ome_tiff(folder / "scan.ome.tif", image)
    write_dicom_wsi(folder / "scan-dicom", image)
    return image, folder / "scan.ome.tif", folder / "scan-dicom"


def test_a_dicom_wsi_reads_its_pixels_and_levels(scan: tuple[np.ndarray, Path, Path]) -> None:
    image, _, folder = scan
    assert is_dicom_wsi(folder)
    assert is_dicom_wsi(folder / "level0.dcm")
    with open_slide(folder) as slide:
        assert (slide.format, slide.shape, slide.dtype) == ("dicom-wsi", (1100, 1500, 3), np.uint8)
        region = slide[slice(250, 777), slice(1000, 1500)]  # across tiles, to the right edge
        assert np.array_equal(region, image[250:777, 1000:1500])
        (level,) = slide.lower
        assert level.shape == (550, 750, 3)
        picture, scale = overview(slide, side=600)  # the file's own level 1
        assert np.array_equal(picture, image[::2, ::2])
        assert scale == (2.0, 2.0)


def test_other_dicom_and_other_folders_are_not_slides(tmp_path: Path) -> None:
    ct = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    assert not is_dicom_wsi(ct)
    (tmp_path / "ct.dcm").write_bytes(ct.read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    assert not is_dicom_wsi(tmp_path)
    assert not lazy_readable(tmp_path)


def test_a_broken_dicom_wsi_is_a_clear_error(
    scan: tuple[np.ndarray, Path, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (scan[2] / "level0.dcm").read_bytes()
    (broken / "level0.dcm").write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptImageError, match="broken"):
        open_slide(broken)[slice(0, 1100), slice(0, 1500)]


def test_the_command_line_segments_a_dicom_wsi_as_its_tiff(
    scan: tuple[np.ndarray, Path, Path], rgb_model: Path, tmp_path: Path
) -> None:
    """A folder holding the TIFF and the DICOM WSI's folder: two inputs, equal outputs."""
    _, tif, _ = scan
    out = tmp_path / "out"
    argv = [str(tif.parent), "--model", str(rgb_model), "--out", str(out), "--tile", "256"]
    assert cli.main([*argv, "--max-pixels", "100000", "--format", "ome-zarr"]) == 0
    rows = json.loads((out / "summary.json").read_text())
    assert sorted((Path(r["input"]).name, r["status"]) for r in rows) == [
        ("scan-dicom", "ok"), ("scan.ome.tif", "ok"),
    ]  # fmt: skip
    from_dicom = np.asarray(zarr.open_array(str(out / "scan-dicom.ome.zarr" / "0"), mode="r"))
    from_tiff = np.asarray(zarr.open_array(str(out / "scan.ome.zarr" / "0"), mode="r"))
    assert from_dicom.shape == (1100, 1500)
    assert np.array_equal(from_dicom, from_tiff)
    assert 0 < from_tiff.mean() < 1
    assert np.array_equal(tifffile.imread(tif), scan[0])


def test_a_damaged_header_or_a_mixed_folder_is_no_slide(
    scan: tuple[np.ndarray, Path, Path], tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f")
    assert not is_dicom_wsi(damaged)
    mixed = tmp_path / "inbox"
    mixed.mkdir()
    (mixed / "level0.dcm").write_bytes((scan[2] / "level0.dcm").read_bytes())
    (mixed / "cells.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert not is_dicom_wsi(mixed)  # its files are inputs of their own
    assert is_dicom_wsi(mixed / "level0.dcm")
    two = tmp_path / "two"
    write_dicom_wsi(two / "a", scan[0][:300, :300])
    write_dicom_wsi(two / "b", scan[0][:300, :300])
    for name in ("a", "b"):
        (two / f"{name}.dcm").write_bytes((two / name / "level0.dcm").read_bytes())
    assert not is_dicom_wsi(two)  # two slides' instances: not one slide


WSIDICOMIZER = Path(__file__).parent / "wsidicomizer"  # made by its make.py


def test_a_dicom_wsi_written_by_wsidicomizer_reads_and_segments_as_its_svs(
    rgb_model: Path, tmp_path: Path
) -> None:
    """An SVS and wsidicomizer's conversion of it (JPEG-LS lossless tiles): the same pixels
    at both levels, the same pixel size, and the same segmentation from the command line."""
    svs, dicom = WSIDICOMIZER / "scan.svs", WSIDICOMIZER / "scan-dicom"
    assert is_dicom_wsi(dicom)
    with open_slide(svs) as tiff, open_slide(dicom) as wsi:
        assert (wsi.format, wsi.shape) == ("dicom-wsi", (700, 900, 3))
        assert wsi.pixel_size_um == (0.5, 0.5)
        for ours, theirs in zip((tiff, *tiff.lower), (wsi, *wsi.lower), strict=True):
            everything = (slice(0, ours.height), slice(0, ours.width))
            assert ours.shape == theirs.shape
            assert np.array_equal(ours[everything], theirs[everything])
    out = tmp_path / "out"
    argv = ["--model", str(rgb_model), "--out", str(out), "--tile", "256", "--format", "ome-zarr"]
    assert cli.main([str(svs), str(dicom), *argv, "--max-pixels", "100000"]) == 0
    from_dicom = np.asarray(zarr.open_array(str(out / "scan-dicom.ome.zarr" / "0"), mode="r"))
    from_svs = np.asarray(zarr.open_array(str(out / "scan.ome.zarr" / "0"), mode="r"))
    assert from_dicom.shape == (700, 900)
    assert np.array_equal(from_dicom, from_svs)
    assert 0 < from_svs.mean() < 1
