"""Sinks: where tile outputs go. A chunked zarr array on disk takes the same writes, bit for bit.

The zarr sink here is test-only: it proves that the sink protocol admits a
chunked on-disk store (the large-image path), with output chunks aligned with
the tiles' keep ranges, and that its result equals the in-memory one exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from app.inference.geometry import unet_geometry
from app.inference.plan import plan_tiles
from app.inference.sinks import ArraySink, FlipMean
from app.inference.tiler import run_tiles
from tests.inference.conftest import ort_predict

PAPER = unet_geometry(4, "valid")


class ZarrSink:
    """Tile outputs written straight into a K x H x W zarr array (one chunk per tile's keep)."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.writes = 0

    def write(self, rows: slice, cols: slice, values: npt.NDArray[np.float32]) -> None:
        self.array[:, rows, cols] = values
        self.writes += 1


def image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


@settings(max_examples=8, deadline=None)
@given(height=st.integers(1, 700), width=st.integers(1, 700), seed=st.integers(0, 99))
def test_a_zarr_array_on_disk_gets_the_same_result_bit_for_bit(
    valid_model: Path, tmp_path_factory: pytest.TempPathFactory, height: int, width: int, seed: int
) -> None:
    predict = ort_predict(valid_model)
    frame = image(height, width, seed)
    in_memory = ArraySink(height, width)
    run_tiles(frame, predict, PAPER, in_memory, channels=1, tile_size=252, batch_size=3)

    plan = plan_tiles(height, width, PAPER, 252)
    # Chunks = the tiles' keep ranges (all but the last the same size): one writer per chunk.
    chunks = (1, plan.rows[0].keep_stop, plan.cols[0].keep_stop)
    store = tmp_path_factory.mktemp("zarr") / "p.zarr"
    array = zarr.create_array(store, shape=(1, height, width), chunks=chunks, dtype="float32")
    on_disk = ZarrSink(array)
    run_tiles(frame, predict, PAPER, on_disk, channels=1, tile_size=252, batch_size=3)

    assert on_disk.writes == len(plan)
    reopened = zarr.open_array(store, mode="r")[...]
    assert np.array_equal(reopened, in_memory.array)
    assert reopened.tobytes() == in_memory.array.tobytes()


def test_array_sink_overwrites_or_adds() -> None:
    out = np.ones((1, 4, 5), dtype=np.float32)
    ArraySink(4, 5, out).write(slice(1, 3), slice(0, 2), np.full((1, 2, 2), 7, np.float32))
    assert out[0, 1:3, 0:2].tolist() == [[7, 7], [7, 7]]
    ArraySink(4, 5, out, accumulate=True).write(
        slice(0, 1), slice(0, 5), np.ones((1, 1, 5), np.float32)
    )
    assert out[0, 0].tolist() == [2, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="K x 4 x 6"):
        ArraySink(4, 6, out)
    with pytest.raises(RuntimeError, match="nothing"):
        _ = ArraySink(4, 5).array


def test_flip_mean_is_the_mean_of_the_flipped_predictions() -> None:
    rng = np.random.default_rng(0)
    flips = ((1, 1), (1, -1), (-1, 1), (-1, -1))
    predictions = {f: rng.random((2, 6, 7), dtype=np.float32) for f in flips}
    mean = FlipMean(np.zeros((2, 6, 7), np.float32), flips)
    for fy, fx in flips:  # each prediction is of the flipped image: written through the view
        mean.view(fy, fx).write(slice(0, 6), slice(0, 7), predictions[(fy, fx)])
    expected = sum(p[:, ::fy, ::fx] for (fy, fx), p in predictions.items()) * np.float32(0.25)
    np.testing.assert_allclose(mean.finish(), expected, rtol=1e-6)
