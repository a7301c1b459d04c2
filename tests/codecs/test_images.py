"""app.codecs.images: formats by magic number, pixels as stored, limits before decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile

from app.codecs import images
from app.codecs.errors import (
    CodecError,
    CorruptImageError,
    EmptyInputError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedFormatError,
)
from app.codecs.images import DecodedImage, Format, decode
from tests.samples import (
    bad_corpus,
    encode,
    jpeg,
    jpeg_declaring,
    noise,
    png,
    png_bomb,
    tiff,
    tiff_declaring,
    truncated,
)

BIG = 1 << 30


@pytest.mark.parametrize(
    ("array", "fmt"),
    [
        (noise(30, 40), "PNG"),
        (noise(30, 40, 3), "PNG"),
        (noise(30, 40, 4), "PNG"),
        (noise(30, 40, 2), "PNG"),
        (noise(30, 40, dtype=np.uint16), "PNG"),
        (noise(30, 40), "TIFF"),
        (noise(30, 40, 3), "TIFF"),
        (noise(30, 40, 4), "TIFF"),
        (noise(30, 40, dtype=np.uint16), "TIFF"),
    ],
)
def test_lossless_formats_give_the_stored_pixels(array: np.ndarray, fmt: str) -> None:
    image = decode(encode(array, fmt), BIG)
    assert image.format == fmt.lower()
    assert (image.width, image.height) == (40, 30)
    assert len(image.frames) == 1
    assert image.frames[0].dtype == array.dtype  # 16-bit stays uint16
    np.testing.assert_array_equal(image.frames[0], array)


def test_jpeg_decodes_gray_and_rgb() -> None:
    gray, rgb = decode(jpeg(noise(24, 32)), BIG), decode(jpeg(noise(24, 32, 3)), BIG)
    assert gray.format == rgb.format == "jpeg"
    assert gray.frames[0].shape == (24, 32)
    assert rgb.frames[0].shape == (24, 32, 3)
    assert rgb.frames[0].dtype == np.uint8


def test_big_endian_16_bit_tiff_becomes_native_uint16() -> None:
    array = noise(8, 9, dtype=np.uint16)
    frame = decode(encode(array.astype(">u2"), "TIFF"), BIG).frames[0]
    assert frame.dtype == np.dtype(np.uint16)
    np.testing.assert_array_equal(frame, array)


def test_palette_images_are_expanded() -> None:
    indices = noise(10, 12) % 4
    im = Image.fromarray(indices, mode="L").convert("P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    im.frombytes(indices.tobytes())
    buffer = io.BytesIO()
    im.save(buffer, "PNG")
    frame = decode(buffer.getvalue(), BIG).frames[0]
    assert frame.shape == (10, 12, 3)
    np.testing.assert_array_equal(frame[..., 0] == 255, indices == 1)


def test_one_bit_images_become_0_or_255() -> None:
    bits = noise(10, 12) > 127
    buffer = io.BytesIO()
    Image.fromarray(bits).save(buffer, "TIFF")
    frame = decode(buffer.getvalue(), BIG).frames[0]
    np.testing.assert_array_equal(frame, bits.astype(np.uint8) * 255)


def test_multi_page_tiff_gives_every_page() -> None:
    pages = [noise(20, 30, seed=s) for s in range(3)]
    image = decode(tiff(*pages), BIG)
    assert len(image.frames) == 3
    for got, want in zip(image.frames, pages, strict=True):
        np.testing.assert_array_equal(got, want)


def test_tiff_pages_of_different_sizes_are_refused() -> None:
    with pytest.raises(UnsupportedFormatError, match="share a size"):
        decode(tiff(noise(20, 30), noise(10, 30)), BIG)


def test_exif_orientation_is_not_applied() -> None:
    array = noise(10, 20, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", exif=exif)
    np.testing.assert_array_equal(decode(buffer.getvalue(), BIG).frames[0], array)


def test_pixel_limit_is_inclusive_and_counts_frames() -> None:
    single, double = png(noise(10, 10)), tiff(noise(10, 10), noise(10, 10))
    decode(single, 100)
    decode(double, 200)
    with pytest.raises(ImageTooLargeError, match="UNET_MAX_IMAGE_PIXELS"):
        decode(single, 99)
    with pytest.raises(ImageTooLargeError, match="2 frame"):
        decode(double, 199)


@pytest.mark.parametrize(
    "data", [png_bomb(), tiff_declaring(100_000, 100_000), jpeg_declaring(65_000, 65_000)]
)
def test_huge_declared_sizes_are_refused_from_the_header(data: bytes) -> None:
    assert len(data) < 20_000
    with pytest.raises(ImageTooLargeError):
        decode(data, 64 << 20)


def test_pillow_global_limits_do_not_interfere() -> None:
    # Above Pillow's own bomb threshold (89 Mpx) but within ours: no warning, no error
    # from Pillow; the header is read, the (absent) pixels then fail as corrupt.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(CorruptImageError):
        decode(png_bomb(10_000, 10_000), 200_000_000)


def tifffile_bytes(pixels: np.ndarray) -> bytes:
    """A well-formed TIFF of a layout Pillow cannot open, written by tifffile."""
    out = io.BytesIO()
    tifffile.imwrite(out, pixels, photometric="minisblack", planarconfig="contig")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyInputError),
        (b"%PDF-1.4 hello", NotAnImageError),
        (b"<html></html>", NotAnImageError),
        (truncated(png(noise(64, 64))), CorruptImageError),
        (truncated(jpeg(noise(64, 64, 3))), CorruptImageError),
        (truncated(tiff(noise(64, 64)), 0.5), CorruptImageError),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, CorruptImageError),
        (b"II*\x00" + b"\xff" * 40, CorruptImageError),
        (encode(noise(8, 8), "GIF"), UnsupportedFormatError),
        (encode(noise(8, 8), "BMP"), UnsupportedFormatError),
        (encode(noise(8, 8, 3), "WEBP"), UnsupportedFormatError),
        (tifffile_bytes(np.zeros((8, 8, 5), np.uint8)), UnsupportedFormatError),  # 5 samples
        (tifffile_bytes(np.zeros((8, 8), np.float64)), UnsupportedFormatError),  # 64-bit float
    ],
)
def test_bad_bytes_raise_the_documented_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode(data, BIG)


@pytest.mark.parametrize(
    ("pixels", "said"),
    [
        (np.zeros((8, 8, 5), np.uint8), "5 samples per pixel of 8-bit unsigned numbers"),
        (np.zeros((8, 8), np.float16), "1 samples per pixel of 16-bit float numbers"),
    ],
)
def test_a_tiff_of_a_layout_not_supported_says_what_it_is(pixels: np.ndarray, said: str) -> None:
    with pytest.raises(UnsupportedFormatError, match=said):
        decode(tifffile_bytes(pixels), BIG)


def test_unsupported_formats_name_the_supported_ones() -> None:
    with pytest.raises(UnsupportedFormatError, match="PNG, JPEG, TIFF"):
        decode(encode(noise(8, 8), "GIF"), BIG)


@pytest.mark.parametrize(("name", "data"), [(k, v[0]) for k, v in bad_corpus().items()])
def test_the_whole_bad_corpus_raises_only_codec_errors(name: str, data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data, 64 << 20)


def test_dicom_is_recognised_before_tiff_and_pluggable() -> None:
    # A DICOM whose 128-byte preamble starts with a TIFF header is DICOM.
    dicom = b"II*\x00" + b"\x00" * 124 + b"DICM" + b"\x00" * 16

    def fake_dicom(data: bytes, limits: images.Limits) -> DecodedImage:
        return DecodedImage("dicom", [np.zeros((2, 3), np.uint8)], 3, 2, source="dataset")

    decoders = images.Decoders(images.BASE_FORMATS)
    assert "DICOM" not in decoders.supported()  # recognised, not decoded
    with_fake = decoders.with_format(Format("dicom", "DICOM", images.is_dicom, fake_dicom, 0))
    image = with_fake.decode(dicom, BIG)
    assert (image.format, image.source) == ("dicom", "dataset")
    assert with_fake.supported() == ["DICOM", "PNG", "JPEG", "TIFF"]
    assert "DICOM" not in decoders.supported()  # the original is unchanged
