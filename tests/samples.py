"""Image bytes for the tests: good images in every format, and a corpus of bad ones."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def noise(height: int, width: int, channels: int = 0, dtype: type = np.uint8, seed: int = 0):
    """Random pixels, H x W (channels 0) or H x W x C."""
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    shape = (height, width) if channels == 0 else (height, width, channels)
    return rng.integers(0, top + 1, size=shape).astype(dtype)


def encode(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def png(array: np.ndarray) -> bytes:
    return encode(array, "PNG")


def jpeg(array: np.ndarray) -> bytes:
    return encode(array, "JPEG", quality=95)


def tiff(*pages: np.ndarray) -> bytes:
    images = [Image.fromarray(p) for p in pages]
    buffer = io.BytesIO()
    images[0].save(buffer, "TIFF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG header declaring width x height gray pixels, with ~2 KB of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1_000_000, 9)  # the first rows of zeros
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian baseline TIFF header declaring a width x height 8-bit image, no pixels."""
    tags = [  # (tag, type SHORT=3 / LONG=4, value)
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 12 * 8 + 4),  # StripOffsets: right after the IFD
        (278, 4, height),
        (279, 4, min(width * height, 2**32 - 1)),
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        ifd += (
            struct.pack("<HHII", tag, kind, 1, value)
            if kind == 4
            else struct.pack("<HHIHH", tag, kind, 1, value, 0)
        )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + b"\x00" * 64


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header is patched to declare width x height."""
    data = bytearray(jpeg(noise(16, 16)))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def dicom_without_pixels() -> bytes:
    """An RT Plan (no Pixel Data): a DICOM that holds no image."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("rtplan.dcm", download=False)
    if path is None:
        raise RuntimeError("pydicom's bundled rtplan.dcm is missing")
    with open(path, "rb") as f:
        return f.read()


def bad_corpus() -> dict[str, tuple[bytes, int]]:
    """name -> (body, expected status) for bytes that must never give a 5xx."""
    image = noise(64, 80)
    rng = np.random.default_rng(1)
    tiff_body = tiff(image)
    return {
        "empty": (b"", 400),
        "random": (rng.bytes(4096), 400),
        "one byte": (b"\x89", 400),
        "png signature only": (b"\x89PNG\r\n\x1a\n", 400),
        "truncated png": (truncated(png(image)), 400),
        "truncated jpeg": (truncated(jpeg(noise(64, 80, 3))), 400),
        "truncated tiff": (tiff_body[: len(tiff_body) // 2], 400),
        "pdf": (b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", 400),
        "html": (b"<!DOCTYPE html><html><body>not an image</body></html>", 400),
        "zip": (b"PK\x03\x04" + rng.bytes(200), 400),
        "gif": (encode(image, "GIF"), 415),
        "bmp": (encode(image, "BMP"), 415),
        "webp": (encode(noise(64, 80, 3), "WEBP"), 415),
        # A DICOM preamble and magic with nothing after: corrupt DICOM, 400.
        "dicom, no data": (b"\x00" * 128 + b"DICM" + b"\x00" * 64, 400),
        "dicom, no pixel data": (dicom_without_pixels(), 415),
        "png bomb": (png_bomb(), 413),
        "tiff declaring 100000^2": (tiff_declaring(100_000, 100_000), 413),
        "jpeg declaring 65000^2": (jpeg_declaring(65_000, 65_000), 413),
    }


def gradient_rgb(height: int, width: int) -> np.ndarray:
    """Smooth RGB stripes (JPEG keeps them close), H x W x 3 uint8."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([(xx // 7) % 256, (yy // 5) % 256, ((xx + yy) // 9) % 256], -1).astype(np.uint8)


def write_svs(path: object, rgb: np.ndarray) -> None:
    """An Aperio SVS as scanners write it: tiled JPEG level 0, a thumbnail, a 4x level."""
    import tifffile

    h, w = rgb.shape[:2]
    desc = (
        f"Aperio Image Library v10.0.51\r\n{w}x{h} [0,0 {w}x{h}] (256x256) JPEG/RGB Q=90|MPP = 0.5"
    )
    tiled = {"tile": (256, 256), "compression": "jpeg", "compressionargs": {"level": 90}}
    with tifffile.TiffWriter(path) as tif:
        tif.write(rgb, photometric="rgb", description=desc, metadata=None, **tiled)
        thumbnail = "Aperio Image Library v10.0.51\r\nthumbnail"
        tif.write(rgb[::8, ::8], photometric="rgb", description=thumbnail, metadata=None)
        tif.write(rgb[::4, ::4].copy(), photometric="rgb", description=desc, metadata=None, **tiled)


def write_ome_tiff(path: object, image: np.ndarray, **options: object) -> None:
    """A tiled pyramidal OME-TIFF (tifffile's writer): level 0 and one sub-IFD level."""
    import tifffile

    tiled: dict[str, object] = {"tile": (256, 256), "compression": "zlib", **options}
    rgb = image.ndim == 3
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(image, subifds=1, photometric="rgb" if rgb else "minisblack", **tiled)
        tif.write(
            image[::2, ::2], subfiletype=1, photometric="rgb" if rgb else "minisblack", **tiled
        )


def write_ome_zarr(
    path: object, image: np.ndarray, zarr_format: int = 2, pixel_size_um: float | None = None
) -> None:
    """An OME-Zarr image (NGFF 0.4 on zarr v2, 0.5 on zarr v3) of one plane: axes c, y, x;
    with ``pixel_size_um``, y and x in micrometers at that scale."""
    import zarr

    planes = image.transpose(2, 0, 1) if image.ndim == 3 else image[None]
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    group.create_array("0", data=planes, chunks=(1, 256, 256))
    space = {"type": "space"} | ({"unit": "micrometer"} if pixel_size_um else {})
    axes = [{"name": "c", "type": "channel"}] + [{"name": a, **space} for a in "yx"]
    size = pixel_size_um or 1.0
    scale = [{"type": "scale", "scale": [1.0, size, size]}]
    multiscales = [{"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}]
    if zarr_format == 2:
        group.attrs["multiscales"] = [{"version": "0.4", **multiscales[0]}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}


def smooth_noise(height: int, width: int, seed: int) -> np.ndarray:
    """Blobs the size of cells plus pixel noise: a class map with structure at every scale."""
    coarse = noise(height // 32 + 2, width // 32 + 2, seed=seed).astype(np.float32)
    blobs = np.kron(coarse, np.ones((32, 32), np.float32))[:height, :width]
    return np.clip(blobs * 0.8 + noise(height, width, seed=seed + 1) * 0.2, 0, 255).astype(np.uint8)


def cells(height: int = 384, width: int = 384, size: int = 48, seed: int = 0) -> np.ndarray:
    """EM-like cells: bright textured cytoplasm, dark membranes about 5 px wide where two
    Voronoi regions meet, a few dark organelles; uint8. The README's tour segments it
    (examples/cells.png, checked against this function by tests/app/test_tour.py)."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, (height, width), size=(height * width // size**2, 2))
    grid = np.stack(np.mgrid[0:height, 0:width], axis=-1).reshape(-1, 2)
    distance, _ = cKDTree(seeds).query(grid, k=2)
    edge = (distance[:, 1] - distance[:, 0]).reshape(height, width)  # 0 on a boundary
    image = 170 + 25 * ndimage.gaussian_filter(rng.standard_normal((height, width)), 2)
    image -= 130 * np.exp(-((edge / 3) ** 2))  # membranes
    for y, x in rng.uniform(0, (height, width), size=(height * width // 8000, 2)):
        r2 = (np.arange(height)[:, None] - y) ** 2 + (np.arange(width)[None] - x) ** 2
        image -= 70 * np.exp(-r2 / (2 * rng.uniform(2, 5) ** 2))  # organelles
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(0, 12, (height, width))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dicom_wsi(folder: Path, image: np.ndarray, tile: int = 256, levels: int = 2) -> None:
    """A DICOM whole-slide image of ``image`` (H x W x 3 uint8) as scanners write one: a VL
    Whole Slide Microscopy instance per pyramid level (TILED_FULL, native RGB frames,
    0.5 µm/px at level 0), one study, series and frame of reference."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    wsm = "1.2.840.10008.5.1.4.1.1.77.1.6"
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    for level in range(levels):
        pixels, spacing = image[:: 2**level, :: 2**level], 0.0005 * 2**level  # mm
        h, w = pixels.shape[:2]
        rows, cols = -(-h // tile), -(-w // tile)
        padded = np.zeros((rows * tile, cols * tile, 3), np.uint8)
        padded[:h, :w] = pixels
        frames = padded.reshape(rows, tile, cols, tile, 3).swapaxes(1, 2)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = wsm
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID, ds.Modality, ds.ContainerIdentifier = frame_of_reference, "SM", "S1"
        flavour = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        ds.ImageType = flavour if level == 0 else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
        ds.Rows = ds.Columns = tile
        ds.NumberOfFrames = rows * cols
        ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = h, w
        ds.TotalPixelMatrixFocalPlanes = ds.NumberOfOpticalPaths = 1
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.ImagedVolumeWidth, ds.ImagedVolumeHeight = w * spacing, h * spacing
        ds.ImagedVolumeDepth = 0.001
        measures = Dataset()
        measures.PixelSpacing, measures.SliceThickness = [spacing, spacing], 0.001
        shared = Dataset()
        shared.PixelMeasuresSequence = [measures]
        ds.SharedFunctionalGroupsSequence = [shared]
        optical = Dataset()
        optical.OpticalPathIdentifier = "1"
        ds.OpticalPathSequence = [optical]
        origin = Dataset()
        origin.XOffsetInSlideCoordinateSystem = origin.YOffsetInSlideCoordinateSystem = 0
        ds.TotalPixelMatrixOriginSequence = [origin]
        ds.ImageOrientationSlide = [0, 1, 0, 1, 0, 0]
        ds.PixelData = frames.tobytes()
        pydicom.dcmwrite(folder / f"level{level}.dcm", ds, enforce_file_format=True)
