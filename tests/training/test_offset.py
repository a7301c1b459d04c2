"""The label offset: known shifts of a smooth field are found, to a tenth of a pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as subpixel_shift

from training import __main__ as cli
from training.data import Sample
from training.offset import label_offset

ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isbi2012" / "train"


def field(seed: int, size: int = 96) -> np.ndarray:
    """A smooth random field scaled to 0..255 (blobs about 6 px across)."""
    f = gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), 3.0, mode="wrap")
    f = (f - f.min()) / (f.max() - f.min())
    return 255 * f


def sample_of(image: np.ndarray, label_field: np.ndarray) -> Sample:
    """Gray image H x W -> H x W x 1; the label: where label_field is above its median."""
    label = (label_field > np.median(label_field)).astype(np.int64)
    return Sample("s", image[..., None], label)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.integers(0, 10_000), st.integers(-2, 2), st.integers(-2, 2))
def test_whole_pixel_shifts_are_found(seed: int, dy: int, dx: int) -> None:
    """The image holds the field moved (dy, dx); its label is the unmoved field: the label lies
    (-dy, -dx) from what it traces."""
    f = field(seed)
    found = label_offset(sample_of(np.roll(f, (dy, dx), axis=(0, 1)), f))
    np.testing.assert_allclose(found, (-dy, -dx), atol=0.05)


@pytest.mark.parametrize("move", [(0.5, -0.3), (-0.6, -0.2), (0.25, 0.0)])
def test_fractions_of_a_pixel_are_found(move: tuple[float, float]) -> None:
    f = field(7)
    image = subpixel_shift(f, move, order=3, mode="grid-wrap")
    found = label_offset(sample_of(image, f))
    np.testing.assert_allclose(found, (-move[0], -move[1]), atol=0.1)


def test_a_dark_foreground_gives_the_same_offset() -> None:
    """Foreground = the dark region (ISBI's membranes): the inverted image gives the same shift."""
    f = field(3)
    bright = sample_of(np.roll(f, (1, 0), axis=(0, 1)), f)
    dark = sample_of(255 - np.roll(f, (1, 0), axis=(0, 1)), f)
    np.testing.assert_allclose(label_offset(bright), (-1, 0), atol=0.05)
    np.testing.assert_allclose(label_offset(dark), (-1, 0), atol=0.05)


def test_a_label_of_one_class_is_a_clear_error() -> None:
    f = field(1)
    with pytest.raises(ValueError, match="both classes"):
        label_offset(Sample("empty", f[..., None], np.zeros(f.shape, np.int64)))


def write_pairs(root: Path, move: tuple[int, int]) -> Path:
    for folder in ("image", "label"):
        (root / folder).mkdir(parents=True)
    for i in range(3):
        f = field(i)
        image = np.roll(f, move, axis=(0, 1)).astype(np.uint8)
        Image.fromarray(image).save(root / "image" / f"{i}.png")
        Image.fromarray(((f > np.median(f)) * 255).astype(np.uint8)).save(
            root / "label" / f"{i}.png"
        )
    return root


def numbers(line: str) -> tuple[float, float]:
    """(dy, dx) of a printed line: '... dy -0.61 (sd 0.08), dx -0.20 ...'."""
    dy, dx = (float(line.split(key)[1].split()[0]) for key in ("dy ", "dx "))
    return dy, dx


@pytest.mark.parametrize(("move", "advice"), [((1, 0), True), ((0, 0), False)])
def test_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], move: tuple[int, int], advice: bool
) -> None:
    """`python -m training offset` prints every image, the mean, and the advice only when the
    offset is over a quarter of a pixel."""
    assert cli.main(["offset", "--data", str(write_pairs(tmp_path, move))]) == 0
    out = capsys.readouterr().out
    assert out.count("dy ") == 4  # three images and the mean
    mean = out.splitlines()[3]
    assert numbers(mean) == pytest.approx((-move[0], 0.0), abs=0.01)
    assert (f"--label-offset={-move[0]:.2f},0.00" in out) == advice


def test_command_line_leaves_out_what_it_is_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pairs(tmp_path, (1, 0))
    assert cli.main(["offset", "--data", str(root), "--exclude", "0, 2"]) == 0
    assert "mean over 1 images" in capsys.readouterr().out
    assert cli.main(["offset", "--data", str(root), "--exclude", "0,7"]) == 2
    assert "['7']" in capsys.readouterr().err
    assert cli.main(["offset", "--data", str(root), "--exclude", "0,1,2"]) == 2
    assert "no image" in capsys.readouterr().err


@pytest.mark.skipif(not ISBI.is_dir(), reason=f"ISBI 2012 data not found at {ISBI}")
def test_isbi_labels_sit_above_the_membranes(capsys: pytest.CaptureFixture[str]) -> None:
    """What the model card reports: ISBI 2012's membranes are labelled about 0.6 px up and
    0.2 px left of the image's dark membranes."""
    assert cli.main(["offset", "--data", str(ISBI), "--foreground-value", "0"]) == 0
    mean = capsys.readouterr().out.splitlines()[-2]
    dy, dx = numbers(mean)
    assert -0.7 < dy < -0.5
    assert -0.3 < dx < -0.1
