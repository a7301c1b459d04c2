"""Mask encoders: PNG and COCO RLE read back exactly (API.md, POST /segment formats)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as coco_mask

from app.codecs.encode import encode_label_png, encode_probability_png, encode_rle, palette

# pycocotools 2.0.11's decode (only the tests decode) trips numpy 2's __array__ copy
# deprecation inside its Cython code; the encoder the service uses does not.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

sizes = st.integers(min_value=1, max_value=300)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def random_labels(h: int, w: int, num_classes: int, seed: int) -> np.ndarray:
    """Blocky regions (long runs) with some isolated pixels (runs of 1), some classes absent."""
    rng = np.random.default_rng(seed)
    block = int(rng.integers(1, 40))
    coarse = rng.integers(0, num_classes, (h // block + 1, w // block + 1), dtype=np.uint8)
    labels = np.kron(coarse, np.ones((block, block), dtype=np.uint8))[:h, :w]
    noise = rng.random((h, w)) < rng.uniform(0.0, 0.2)
    labels[noise] = rng.integers(0, num_classes, int(noise.sum()), dtype=np.uint8)
    return np.ascontiguousarray(labels)


def decode(counts: str, h: int, w: int) -> np.ndarray:
    return np.asarray(coco_mask.decode({"size": [h, w], "counts": counts.encode()}))


def numpy_bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0, 0, 0, 0]
    x, y = int(xs.min()), int(ys.min())
    return [x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1]


def read_png(data: bytes) -> tuple[str, np.ndarray]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.mode, np.asarray(image)


# -- COCO RLE -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(h=sizes, w=sizes, num_classes=st.integers(2, 6), seed=seeds)
def test_rle_round_trips_through_pycocotools(h: int, w: int, num_classes: int, seed: int) -> None:
    labels = random_labels(h, w, num_classes, seed)
    classes = [f"class {k}" for k in range(num_classes)]
    segments = encode_rle(labels, classes)
    assert [s["class_index"] for s in segments] == list(range(1, num_classes))
    for segment in segments:
        k = segment["class_index"]
        expected = labels == k
        assert segment["label"] == classes[k]
        assert segment["rle"]["size"] == [h, w]
        assert isinstance(segment["rle"]["counts"], str)
        decoded = decode(segment["rle"]["counts"], h, w)
        assert decoded.shape == (h, w)
        np.testing.assert_array_equal(decoded, expected.astype(np.uint8))
        assert segment["area"] == int(expected.sum())
        assert segment["bbox"] == numpy_bbox(expected)
        assert "frame" not in segment


def test_rle_known_answer() -> None:
    # COCO compressed counts: each count (from the 4th on: minus the count two before)
    # in 5-bit groups, low first, bit 5 = "more follows", + 48; a group whose bit 4 is
    # set needs one more group unless the rest is the sign (-1).
    # Class 2, column-major: 0 px off, 3 on, 30 off, 5 on, 2 off -> [0, 3, 30, 5, 2]:
    # 0 -> "0"; 3 -> "3"; 30 = 0b11110 -> (30|32)+48 "n", then 0 -> "0";
    # 5 - 3 = 2 -> "2"; 2 - 30 = -28 -> low group 4 (|32) "T", then -1 -> 31+48 "O".
    # Class 1, one pixel at row 4, col 0 -> [4, 1, 35]: "4", "1", 35 = 1*32 + 3 -> "S", "1".
    labels = np.array(
        [
            [2, 0, 0, 0, 0, 0, 0, 2],
            [2, 0, 0, 0, 0, 0, 0, 2],
            [2, 0, 0, 0, 0, 0, 0, 2],
            [0, 0, 0, 0, 0, 0, 2, 0],
            [1, 0, 0, 0, 0, 0, 2, 0],
        ],
        dtype=np.uint8,
    )
    segments = encode_rle(labels, ["background", "cell", "nucleus"], frame=3)
    assert segments == [
        {
            "frame": 3,
            "class_index": 1,
            "label": "cell",
            "area": 1,
            "bbox": [0, 4, 1, 1],
            "rle": {"size": [5, 8], "counts": "41S1"},
        },
        {
            "frame": 3,
            "class_index": 2,
            "label": "nucleus",
            "area": 8,
            "bbox": [0, 0, 8, 5],
            "rle": {"size": [5, 8], "counts": "03n02TO"},
        },
    ]
    # Cross-check the hand-derived strings with pycocotools' own compression.
    for segment, counts in zip(segments, ([4, 1, 35], [0, 3, 30, 5, 2]), strict=True):
        reference = coco_mask.frPyObjects({"size": [5, 8], "counts": counts}, 5, 8)
        assert reference["counts"].decode() == segment["rle"]["counts"]


@pytest.mark.parametrize(("h", "w"), [(1, 1), (1, 7), (9, 1), (40, 33)])
def test_rle_absent_class_has_area_0_and_empty_bbox(h: int, w: int) -> None:
    labels = np.zeros((h, w), dtype=np.uint8)
    labels[0, 0] = 2
    segments = encode_rle(labels, ["background", "absent", "corner"])
    absent = segments[0]
    assert absent["class_index"] == 1
    assert absent["area"] == 0
    assert absent["bbox"] == [0, 0, 0, 0]
    np.testing.assert_array_equal(decode(absent["rle"]["counts"], h, w), 0)
    assert segments[1]["area"] == 1
    assert segments[1]["bbox"] == [0, 0, 1, 1]


def test_rle_full_mask() -> None:
    labels = np.ones((6, 4), dtype=np.uint8)
    (segment,) = encode_rle(labels, ["background", "all"])
    assert segment["area"] == 24
    assert segment["bbox"] == [0, 0, 4, 6]
    np.testing.assert_array_equal(decode(segment["rle"]["counts"], 6, 4), 1)


def test_rle_accepts_non_contiguous_labels() -> None:
    labels = random_labels(50, 70, 3, seed=1)
    view = labels[::-1, ::2]
    for segment in encode_rle(view, ["b", "x", "y"]):
        expected = (view == segment["class_index"]).astype(np.uint8)
        np.testing.assert_array_equal(decode(segment["rle"]["counts"], *view.shape), expected)


@pytest.mark.parametrize(
    ("labels", "classes", "message"),
    [
        (np.zeros((4, 4), dtype=np.int64), ["b", "x"], "uint8"),
        (np.zeros((4, 4, 1), dtype=np.uint8), ["b", "x"], "H x W"),
        (np.full((4, 4), 2, dtype=np.uint8), ["b", "x"], "class 2"),
        (np.zeros((4, 4), dtype=np.uint8), ["b"], "background and >= 1 class"),
    ],
)
def test_rle_rejects_bad_input(labels: np.ndarray, classes: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_rle(labels, classes)


# -- label PNG ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(h=sizes, w=sizes, num_classes=st.integers(1, 256), seed=seeds)
def test_label_png_reads_back_as_exact_indices(h: int, w: int, num_classes: int, seed: int) -> None:
    labels = random_labels(h, w, num_classes, seed)
    mode, pixels = read_png(encode_label_png(labels, num_classes))
    assert mode == "L"  # grayscale, no palette: every reader gives the indices
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, labels)


def test_class_colours_are_distinct_and_visible() -> None:
    """The colours of format=overlay."""
    colours = np.asarray(palette(30)).reshape(30, 3)
    with Image.open(io.BytesIO(encode_label_png(np.zeros((2, 2), np.uint8), 30))) as image:
        assert image.getpalette() is None
    np.testing.assert_array_equal(colours[0], [0, 0, 0])
    assert len({tuple(c) for c in colours}) == 30  # every class its own colour
    assert (colours[1:].max(axis=1) >= 128).all()  # none near-black like the background
    assert len(palette(256)) == 768


def test_label_png_rejects_labels_beyond_classes() -> None:
    with pytest.raises(ValueError, match="only 2 classes"):
        encode_label_png(np.full((3, 3), 5, dtype=np.uint8), 2)


# -- probability PNG ----------------------------------------------------------------------


def expected_uint16(p: np.ndarray) -> np.ndarray:
    """round(p * 65535) with Python's round, pixel by pixel."""
    flat = [round(float(v) * 65535) for v in np.clip(p, 0, 1).ravel()]
    return np.array(flat, dtype=np.uint16).reshape(p.shape)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 120), w=st.integers(1, 120), seed=seeds)
def test_probability_png_reads_back_as_rounded_16_bit(h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.random((h, w), dtype=np.float32)
    p.ravel()[:: max(1, p.size // 3)] = 0.0  # the extremes must survive exactly
    p.ravel()[1 :: max(2, p.size // 3)] = 1.0
    mode, pixels = read_png(encode_probability_png(p))
    assert mode.startswith("I")
    np.testing.assert_array_equal(pixels.astype(np.int64), expected_uint16(p))


def test_probability_png_extremes_halves_and_clipping() -> None:
    p = np.array(
        [[0.0, 1.0, 0.5, 1 / 65535], [-0.25, 1.5, 0.5 / 65535, 1.5 / 65535]], dtype=np.float32
    )
    _, pixels = read_png(encode_probability_png(p))
    np.testing.assert_array_equal(pixels.astype(np.int64), expected_uint16(p))
    assert pixels[0, 0] == 0
    assert pixels[0, 1] == 65535
    assert pixels[1, 0] == 0
    assert pixels[1, 1] == 65535


def test_probability_png_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="H x W"):
        encode_probability_png(np.zeros((1, 4, 4), dtype=np.float32))
