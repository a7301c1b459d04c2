"""Objects measured and RLE-encoded from vertical runs equal what scikit-image's regionprops
and pycocotools compute from the pixels, on random id images (hypothesis)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask
from skimage.measure import regionprops

from app.codecs.encode import object_rles
from app.inference.objects import Objects, measure
from app.inference.runs import vertical_runs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode


@st.composite
def id_images(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """Small H x W id images, ids 0..count; some ids may hold no pixel."""
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    count = draw(st.integers(0, 6))
    labels = draw(arrays(np.int32, (height, width), elements=st.integers(0, count)))
    return labels, count


@settings(max_examples=150, deadline=None)
@given(id_images(), st.integers(0, 2**31 - 1))
def test_measure_and_rles_equal_the_pixel_readers(image: tuple[np.ndarray, int], seed: int) -> None:
    labels, count = image
    probability = np.random.default_rng(seed).random(labels.shape, dtype=np.float32)
    objects = Objects(labels, np.ones(count + 1, dtype=np.int64))
    runs = vertical_runs(labels, count)
    assert int(runs.length.sum()) == int((labels > 0).sum())
    m = measure(objects, probability[None], runs)
    rles = object_rles(runs, count)
    assert len(rles) == count
    props = {p.label: p for p in regionprops(labels, intensity_image=probability)}
    for i in range(1, count + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            rle = {"size": rles[i - 1]["size"], "counts": rles[i - 1]["counts"].encode()}
            decoded = coco_mask.decode(rle)
        np.testing.assert_array_equal(decoded, labels == i)
        if i not in props:  # no pixel: zeros
            assert m.area[i] == 0
            assert m.bbox[i].tolist() == [0, 0, 0, 0]
            continue
        p = props[i]
        assert m.area[i] == p.area
        y0, x0, y1, x1 = p.bbox
        assert m.bbox[i].tolist() == [x0, y0, x1 - x0, y1 - y0]
        cy, cx = p.centroid  # pixel centres at integers there, at + 1/2 here
        assert m.centroid[i].tolist() == pytest.approx([cx + 0.5, cy + 0.5], abs=1e-9)
        assert m.score[i] == pytest.approx(p.intensity_mean, rel=1e-5)


def test_runs_cross_columns_in_coco_order() -> None:
    labels = np.array([[0, 1], [1, 1], [1, 0]], dtype=np.int32)  # column 0 foot, column 1 top
    runs = vertical_runs(labels, 1)
    assert runs.column.tolist() == [0, 1]
    assert runs.row.tolist() == [1, 0]
    assert runs.length.tolist() == [2, 2]
    assert runs.start.tolist() == [1, 3]
    (rle,) = object_rles(runs, 1)
    assert (
        coco_mask.frPyObjects({"counts": [1, 4, 1], "size": [3, 2]}, 3, 2)["counts"].decode()
        == rle["counts"]
    )  # one run of 4 across the column boundary
