"""Lazy region readers: what they read equals the pixels written, by tifffile, zarr and
OpenSlide; nothing is read before a rectangle is asked for; broken files say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from app.codecs.errors import CorruptImageError, NotAnImageError, UnsupportedFormatError
from app.codecs.slides import _open_openslide, lazy_readable, open_slide
from app.inference.plan import AxisTile
from app.inference.tiler import extract_tile
from tests.samples import (
    gradient_rgb,
    noise,
    write_ome_tiff,
    write_ome_zarr,
    write_svs,
)


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return noise(700, 900, seed=11)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, gray: np.ndarray) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("slides")
    paths = {
        "ome.tif": folder / "a.ome.tif",
        "planar.tif": folder / "planar.tif",
        "zarr2": folder / "v2.ome.zarr",
        "zarr3": folder / "v3.ome.zarr",
        "array": folder / "bare.zarr",
        "u16.tif": folder / "u16.tif",
    }
    write_ome_tiff(paths["ome.tif"], gray)
    tifffile.imwrite(
        paths["planar.tif"],
        np.stack([gray, gray // 2, gray // 3]),
        tile=(128, 128),
        photometric="rgb",
        planarconfig="separate",
    )
    write_ome_zarr(paths["zarr2"], gray, 2)
    write_ome_zarr(paths["zarr3"], gray, 3)
    zarr.create_array(str(paths["array"]), data=gray, chunks=(100, 100))
    tifffile.imwrite(paths["u16.tif"], gray.astype(np.uint16) * 257, tile=(64, 64))
    return paths


@pytest.mark.parametrize("name", ["ome.tif", "zarr2", "zarr3", "array"])
def test_gray_regions_equal_the_written_pixels(
    name: str, files: dict[str, Path], gray: np.ndarray
) -> None:
    with open_slide(files[name]) as slide:
        assert slide.shape == (*gray.shape, 1)
        assert slide.dtype == np.uint8
        assert np.array_equal(slide[slice(0, 700), slice(0, 900)][:, :, 0], gray)
        assert np.array_equal(slide[slice(123, 456), slice(789, 900)][:, :, 0], gray[123:456, 789:])


def test_planar_channels_and_16_bit(files: dict[str, Path], gray: np.ndarray) -> None:
    with open_slide(files["planar.tif"]) as slide:
        assert slide.shape == (700, 900, 3)
        region = slide[slice(10, 20), slice(30, 50)]
        assert np.array_equal(region[..., 1], gray[10:20, 30:50] // 2)
    with open_slide(files["u16.tif"]) as slide:
        assert slide.dtype == np.uint16
        assert np.array_equal(
            slide[slice(0, 5), slice(0, 5)][..., 0], gray[:5, :5].astype(np.uint16) * 257
        )


@settings(max_examples=25, deadline=None)
@given(
    start=st.tuples(st.integers(-300, 800), st.integers(-300, 1000)),
    size=st.tuples(st.integers(1, 400), st.integers(1, 400)),
)
def test_a_reflected_tile_from_a_lazy_reader_is_the_in_memory_tile(
    start: tuple[int, int], size: tuple[int, int], files: dict[str, Path], gray: np.ndarray
) -> None:
    row, col = (AxisTile(s, n, s, s, s + n) for s, n in zip(start, size, strict=True))
    with open_slide(files["ome.tif"]) as slide:
        assert np.array_equal(
            extract_tile(slide, row, col), extract_tile(gray[:, :, None], row, col)
        )


def test_svs_by_tifffile_equals_openslide(tmp_path: Path) -> None:
    """A JPEG-tiled Aperio SVS: tifffile's region reader and OpenSlide's read the same pixels."""
    rgb = gradient_rgb(1100, 1500)
    path = tmp_path / "scan.svs"
    write_svs(path, rgb)
    with open_slide(path) as ours, _open_openslide(path) as theirs:
        assert ours.format == "tiff"
        assert theirs.format == "openslide"
        assert ours.shape == theirs.shape == (1100, 1500, 3)
        area = (slice(100, 700), slice(200, 1500))
        assert np.array_equal(ours[area], theirs[area])
        assert np.abs(ours[area].astype(int) - rgb[area]).mean() < 3  # JPEG, quality 90


def test_nothing_is_read_before_a_region_is_asked_for(tmp_path: Path) -> None:
    """Opening a 2-gigapixel tiled TIFF (sparse: no tile written) takes no memory."""
    path = tmp_path / "huge.tif"
    shape = (46_000, 46_000)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(shape=shape, dtype=np.uint8, tile=(512, 512))  # empty tiles
    with open_slide(path) as slide:
        assert slide.shape == (*shape, 1)
        assert slide[slice(45_990, 46_000), slice(0, 4)].shape == (10, 4, 1)


def test_a_truncated_tiled_tiff_fails_when_its_missing_tile_is_read(
    tmp_path: Path, gray: np.ndarray
) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, gray, tile=(128, 128), compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match=r"cut\.tif"), open_slide(path) as slide:
        slide[slice(0, 700), slice(0, 900)]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"not an image at all", NotAnImageError),
        (b"II*\x00" + b"\x00" * 20, CorruptImageError),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, error: type[Exception]) -> None:
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(error, match=r"bad\.tif"):
        open_slide(path)


def test_refused_with_the_reason(tmp_path: Path) -> None:
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 40, 50), np.uint8), photometric="minisblack")
    with pytest.raises(UnsupportedFormatError, match="split it into planes"):
        open_slide(stack)
    floats = tmp_path / "float.tif"
    tifffile.imwrite(floats, np.zeros((40, 50), np.float32))
    with pytest.raises(UnsupportedFormatError, match="float32"):
        open_slide(floats)
    group = tmp_path / "plain.zarr"
    zarr.open_group(str(group), mode="w")
    with pytest.raises(UnsupportedFormatError, match="multiscales"):
        open_slide(group)
    assert lazy_readable(group)
    assert not lazy_readable(tmp_path / "missing.tif")


def test_a_tiff_in_huge_strips_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.codecs.slides

    monkeypatch.setattr(app.codecs.slides, "LARGEST_CHUNK", 10_000)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, np.zeros((200, 300), np.uint8), rowsperstrip=200)
    with pytest.raises(UnsupportedFormatError, match="convert it to a tiled TIFF"):
        open_slide(path)


def test_an_ome_zarr_whose_metadata_lies_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "lies.ome.zarr"
    write_ome_zarr(path, noise(50, 60), 2)
    group = zarr.open_group(str(path), mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["datasets"][0]["path"] = "missing"
    group.attrs["multiscales"] = multiscales
    with pytest.raises(CorruptImageError, match=r"lies\.ome\.zarr: not a readable OME-Zarr"):
        open_slide(path)


def test_openslide_no_data_shows_the_background_colour() -> None:
    """OpenSlide's RGBA is not premultiplied: alpha 0 is the slide's background colour."""
    from PIL import Image

    from app.codecs.openslide_levels import OpenSlideLevel

    class Handle:  # the three things OpenSlideLevel asks of openslide.OpenSlide
        level_dimensions, level_downsamples = ((4, 2),), (1.0,)

        def __init__(self) -> None:
            self.properties = {"openslide.background-color": "F0E0D0"}

        def read_region(
            self, at: tuple[int, int], level: int, size: tuple[int, int]
        ) -> Image.Image:
            rgba = np.zeros((size[1], size[0], 4), np.uint8)
            rgba[..., :3] = 100
            rgba[:, 0, 3] = 255  # scanned
            rgba[:, 1, 3] = 0  # no data
            rgba[:, 2:, 3] = 128  # half
            return Image.fromarray(rgba, "RGBA")

    level = OpenSlideLevel(Handle())
    rgb = level[slice(0, 2), slice(0, 4), slice(0, 3)]
    assert rgb[0, 0].tolist() == [100, 100, 100]
    assert rgb[0, 1].tolist() == [0xF0, 0xE0, 0xD0]
    half = 128 / 255
    assert rgb[0, 2].tolist() == [round(100 * half + c * (1 - half)) for c in (0xF0, 0xE0, 0xD0)]
