"""Overlap-tile geometry and exactness (DESIGN.md, "Overlap-tile, exactly")."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.inference.geometry import Geometry, unet_geometry
from app.inference.plan import DEFAULT_MARGIN, plan_axis, plan_tiles
from app.inference.sinks import ArraySink
from app.inference.tiler import predict_tiled, predict_whole, reflect_indices, run_tiles
from tests.inference.conftest import ort_predict

PAPER = Geometry("valid", halo=92, size_multiple=16, size_offset=12, min_size=188)
SAME16 = Geometry("same", halo=0, size_multiple=16, size_offset=0, min_size=16)


def rand_image(h: int, w: int, c: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


# -- the plan -----------------------------------------------------------------------------


def check_axis_plan(length: int, g: Geometry, tile_size: int, margin: int = DEFAULT_MARGIN) -> None:
    tiles = plan_axis(length, g, tile_size, margin)
    assert tiles[0].keep_start == 0
    assert tiles[-1].keep_stop == length
    for a, b in itertools.pairwise(tiles):
        assert a.keep_stop == b.keep_start, "keep ranges must partition the axis"
    sizes = {t.size for t in tiles}
    assert len(sizes) == 1
    size = sizes.pop()
    assert g.is_valid_size(size)
    assert size <= max(tile_size, g.valid_size_at_least(length + 2 * g.halo))
    for t in tiles:
        assert t.keep_start < t.keep_stop
        out_stop = t.out_start + g.output_size(t.size)
        assert t.out_start <= t.keep_start
        assert t.keep_stop <= out_stop
        if g.padding == "valid":
            # Every tile sees the whole image's pooling grid: its input starts on a
            # multiple of 2^depth in the reference's padded coordinates.
            assert (t.start + g.halo) % g.size_multiple == 0
            assert out_stop - length < g.size_multiple or len(tiles) == 1
        else:
            inner_lo = t.start > 0
            inner_hi = t.start + t.size < g.valid_size_at_least(length)
            assert not inner_lo or t.keep_start - t.start >= margin
            assert not inner_hi or t.start + t.size - t.keep_stop >= margin
            assert t.start % g.size_multiple == 0


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 40_000), tile=st.integers(204, 1600))
def test_valid_axis_plan_properties(length: int, tile: int) -> None:
    check_axis_plan(length, PAPER, tile)


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 40_000), tile=st.integers(208, 1600), ctx=st.integers(0, 96))
def test_same_axis_plan_properties(length: int, tile: int, ctx: int) -> None:
    check_axis_plan(length, SAME16, tile, ctx)


def test_worked_example_of_the_docstring() -> None:
    tiles = plan_axis(1000, PAPER, 572)
    assert [t.out_start for t in tiles] == [0, 336, 672]
    assert {t.size for t in tiles} == {524}


def test_single_tile_is_the_reference_size() -> None:
    (tile,) = plan_axis(1, PAPER, 572)
    assert (tile.start, tile.size) == (-92, 188)
    (tile,) = plan_axis(388, PAPER, 572)
    assert (tile.start, tile.size) == (-92, 572)


def test_plan_counts_and_computed_pixels() -> None:
    plan = plan_tiles(4096, 4096, PAPER, 572)
    assert len(plan) == 11 * 11
    assert plan.tile_shape == (572, 572)
    assert plan.computed_pixels == 121 * 388 * 388


@pytest.mark.parametrize(
    ("g", "tile", "message"),
    [
        (PAPER, 100, "below the network's minimum input 188"),
        (PAPER, 190, "use a tile size >= 204"),
        (SAME16, 200, "use a tile size >= 208"),
    ],
)
def test_too_small_tiles_are_refused_with_the_fix(g: Geometry, tile: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_axis(5000, g, tile)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"padding": "valid", "halo": 0}, "halo >= 1"),
        ({"padding": "same", "halo": 4}, "halo 0"),
        ({"size_offset": 16}, "size_offset must be in"),
        ({"min_size": 100}, "min_size must exceed"),
        ({"padding": "full"}, "padding must be"),
    ],
)
def test_geometry_validation_names_the_value(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "padding": "valid",
        "halo": 92,
        "size_multiple": 16,
        "size_offset": 12,
        "min_size": 188,
    }
    with pytest.raises(ValueError, match=message):
        Geometry(**{**base, **kwargs})  # type: ignore[arg-type]


def test_nearest_valid_sizes() -> None:
    assert PAPER.nearest_valid_sizes(500) == (492, 508)
    assert PAPER.nearest_valid_sizes(100) == (None, 188)
    assert PAPER.valid_size_at_least(572) == 572


@settings(max_examples=200, deadline=None)
@given(start=st.integers(-500, 500), size=st.integers(1, 400), length=st.integers(1, 60))
def test_reflect_indices_equal_numpy_reflect_pad(start: int, size: int, length: int) -> None:
    axis = np.arange(length)
    before, after = max(0, -start), max(0, start + size - length)
    padded = np.pad(axis, (before, after), mode="reflect")
    expected = padded[start + before : start + before + size]
    assert np.array_equal(axis[reflect_indices(start, size, length)], expected)


# -- known predictors: the stitched output must equal f(input) exactly -----------------------


def crop_times_two(halo: int):
    def predict(batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[2:]
        return batch[:, :, halo : h - halo, halo : w - halo] * 2

    return predict


def block_mean(halo: int, block: int = 16):
    """Mean over aligned block x block cells of the tile, cropped: sees the pooling grid."""

    def predict(batch: np.ndarray) -> np.ndarray:
        n, c, h, w = batch.shape
        hb, wb = h // block * block, w // block * block
        cells = batch[:, :, :hb, :wb].reshape(n, c, hb // block, block, wb // block, block)
        means = cells.mean(axis=(3, 5))
        up = np.repeat(np.repeat(means, block, axis=2), block, axis=3)
        full = np.zeros_like(batch)
        full[:, :, :hb, :wb] = up
        return full[:, :, halo : h - halo, halo : w - halo]

    return predict


FIXED = pytest.mark.parametrize("fixed", [False, True], ids=["shrinking", "fixed-shape"])


@FIXED
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (7, 13), (700, 900), (1000, 37), (333, 1024)])
@pytest.mark.parametrize("g", [PAPER, SAME16], ids=["valid", "same"])
def test_known_predictor_times_two(shape: tuple[int, int], g: Geometry, fixed: bool) -> None:
    image = rand_image(*shape)
    predict = crop_times_two(g.halo)
    out = predict_tiled(
        image, predict, g, channels=1, tile_size=252, batch_size=3, fixed_shape=fixed
    )
    assert out.shape == (1, *shape)
    assert np.array_equal(out[0], image[:, :, 0].astype(np.float32) * 2)


@FIXED
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (700, 900), (1000, 37)])
@pytest.mark.parametrize("tile", [204, 252, 572])
def test_known_predictor_sees_the_whole_image_pooling_grid(
    shape: tuple[int, int], tile: int, fixed: bool
) -> None:
    image = rand_image(*shape, seed=3)
    predict = block_mean(PAPER.halo)
    tiled = predict_tiled(
        image, predict, PAPER, channels=1, tile_size=tile, batch_size=2, fixed_shape=fixed
    )
    whole = predict_whole(image, predict, PAPER, channels=1)
    assert np.array_equal(tiled, whole)


def test_shifted_crop_reads_the_reflection_past_the_border() -> None:
    image = rand_image(300, 260, seed=5)

    def shifted(batch: np.ndarray) -> np.ndarray:  # output pixel y reads input y + 1
        h, w = batch.shape[2:]
        return batch[:, :, 93 : h - 91, 92 : w - 92]

    out = predict_tiled(image, shifted, PAPER, channels=1, tile_size=252, batch_size=4)
    reflected = np.pad(image[:, :, 0], ((0, 1), (0, 0)), mode="reflect").astype(np.float32)
    assert np.array_equal(out[0], reflected[1:])


def test_accumulate_into_a_flipped_view() -> None:
    image = rand_image(230, 300)
    out = np.ones((1, 230, 300), dtype=np.float32)
    sink = ArraySink(230, 300, out[:, ::-1], accumulate=True)
    run_tiles(image[::-1], crop_times_two(92), PAPER, sink, channels=1, tile_size=252)
    assert np.array_equal(out[0], image[:, :, 0] * np.float32(2) + 1)


def test_progress_reports_every_batch() -> None:
    calls: list[tuple[int, int]] = []
    run_tiles(
        rand_image(700, 900),
        crop_times_two(92),
        PAPER,
        ArraySink(700, 900),
        channels=1,
        tile_size=252,
        batch_size=4,
        progress=lambda done, total: calls.append((done, total)),
    )
    total = len(plan_tiles(700, 900, PAPER, 252))
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted({min(total, 4 * i) for i in range(1, len(calls) + 1)})


def test_a_network_of_the_wrong_geometry_is_reported() -> None:
    with pytest.raises(ValueError, match="expected"):
        predict_tiled(rand_image(50, 50), crop_times_two(90), PAPER, channels=1, tile_size=252)


# -- a real network through ONNX Runtime: tiled == whole-image reference -------------------


@pytest.fixture(scope="module")
def valid_predict(valid_model):
    return ort_predict(valid_model)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


@FIXED
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (7, 13), (700, 900), (1000, 37)])
@pytest.mark.parametrize(("tile", "batch"), [(204, 1), (252, 3), (572, 4), ((380, 220), 2)])
def test_tiled_equals_whole_image_reference(valid_predict, shape, tile, batch, fixed) -> None:
    image = rand_image(*shape, seed=11)
    tiled = predict_tiled(
        image, valid_predict, PAPER, channels=1, tile_size=tile, batch_size=batch, fixed_shape=fixed
    )
    whole = predict_whole(image, valid_predict, PAPER, channels=1)
    assert tiled.shape == (1, *shape)
    # Probabilities, the bottom/right border included.
    assert np.abs(sigmoid(tiled) - sigmoid(whole)).max() <= 1e-5


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 600), w=st.integers(1, 600), tile=st.integers(204, 600), fixed=st.booleans()
)
def test_tiled_equals_reference_random_sizes(
    valid_predict, h: int, w: int, tile: int, fixed: bool
) -> None:
    image = rand_image(h, w, seed=h * 1000 + w)
    shapes: set[tuple[int, ...]] = set()

    def recording(batch: np.ndarray) -> np.ndarray:
        shapes.add(batch.shape)
        return valid_predict(batch)

    tiled = predict_tiled(
        image, recording, PAPER, channels=1, tile_size=tile, batch_size=2, fixed_shape=fixed
    )
    if fixed:  # the GPU plan: exactly one input shape, whatever the image
        size = PAPER.valid_size_at_most(tile)
        assert shapes == {(2, 1, size, size)}
    whole = predict_whole(image, valid_predict, PAPER, channels=1)
    assert np.abs(sigmoid(tiled) - sigmoid(whole)).max() <= 1e-5


@pytest.mark.parametrize("shape", [(3, 5), (700, 900), (1000, 37)])
def test_rgb_model_tiled_equals_reference(valid_rgb_model, shape) -> None:
    predict = ort_predict(valid_rgb_model)
    image = rand_image(*shape, c=3, seed=2)
    tiled = predict_tiled(image, predict, PAPER, channels=3, tile_size=252, batch_size=2)
    whole = predict_whole(image, predict, PAPER, channels=3)
    assert np.abs(sigmoid(tiled) - sigmoid(whole)).max() <= 1e-5


def test_the_papers_unaligned_stepping_would_not_be_exact(valid_predict) -> None:
    """Control: tiles stepped by the output size (388, not a multiple of 16) differ."""
    image = rand_image(800, 300, seed=4)
    whole = predict_whole(image, valid_predict, PAPER, channels=1)
    stepped = np.empty_like(whole)
    for y0 in (0, 388, 776):
        rows = np.pad(image[:, :, 0], ((92, 92 + 400), (92, 92 + 300)), mode="reflect")
        tile = rows[y0 : y0 + 572, :492][None, None].astype(np.float32)
        out = valid_predict(tile)[0, :, :, :300]
        stepped[:, y0 : y0 + 388] = out[:, : min(388, 800 - y0)]
    assert np.abs(stepped - whole).max() > 1e-3


# -- same padding: the deviation from whole-image inference is measured --------------------


@FIXED
@pytest.mark.parametrize(("margin", "within"), [(96, 1e-5), (48, None)])
def test_same_padding_deviation(same_model, margin: int, within: float | None, fixed) -> None:
    predict = ort_predict(same_model)
    image = rand_image(700, 900, seed=9)
    tiled = predict_tiled(
        image,
        predict,
        SAME16,
        channels=1,
        tile_size=320,
        batch_size=2,
        margin=margin,
        fixed_shape=fixed,
    )
    whole = predict_whole(image, predict, SAME16, channels=1)
    deviation = float(np.abs(sigmoid(tiled) - sigmoid(whole)).max())
    if within is not None:
        # 96 px of margin covers this net's receptive field once tiles sit on its
        # pooling grid: measured deviation 0 (float noise at most).
        assert deviation <= within
    else:
        # Too little margin: the tiles' zero padding shows at the seams.
        assert deviation > 1e-4


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6])
def test_unet_geometry_matches_real_networks(depth: int, padding: str) -> None:
    """The formula against deploy.demo_model's own copy and an actual ONNX network's output size."""
    from tests.inference.conftest import ort_session_predict
    from tests.nets import UNetSpec, build_onnx, random_weights

    g = unet_geometry(depth, padding)  # type: ignore[arg-type]
    spec = UNetSpec(depth=depth, base=1, padding=padding)  # type: ignore[arg-type]
    assert (g.halo, g.size_multiple, g.size_offset, g.min_size) == (
        spec.halo,
        spec.size_multiple,
        spec.size_offset,
        spec.min_size,
    )
    predict = ort_session_predict(build_onnx(spec, random_weights(spec)).SerializeToString())
    for size in (g.min_size, g.min_size + g.size_multiple):
        out = predict(np.zeros((1, 1, size, size), dtype=np.float32))
        assert out.shape[2:] == (g.output_size(size),) * 2
    if padding == "valid":  # one below the minimum yields no output at all
        assert g.output_size(g.min_size - g.size_multiple) < 1


def test_paper_geometry() -> None:
    assert unet_geometry(4, "valid") == PAPER
    with pytest.raises(ValueError, match="depth must be >= 1"):
        unet_geometry(0, "valid")


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(1, 5000),
    w=st.integers(1, 5000),
    tile=st.integers(208, 1200),  # same nets need 2 x 96 px of margin and 16 between
    padding=st.sampled_from(["valid", "same"]),
)
def test_the_fixed_plan_has_one_tile_shape_and_partitions_the_image(
    h: int, w: int, tile: int, padding: str
) -> None:
    g = PAPER if padding == "valid" else SAME16
    plan = plan_tiles(h, w, g, tile, fixed=True)
    size = g.valid_size_at_most(tile)
    assert {(r.size, c.size) for r, c in plan} == {(size, size)}
    for axis, length in ((plan.rows, h), (plan.cols, w)):
        assert axis[0].keep_start == 0
        assert axis[-1].keep_stop == length
        assert all(a.keep_stop == b.keep_start for a, b in itertools.pairwise(axis))
        if padding == "valid":
            assert all((t.start + g.halo) % g.size_multiple == 0 for t in axis)
