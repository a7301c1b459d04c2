"""Where the labels sit against the image, to a tenth of a pixel.

    python -m training offset --data ../shared/data/isbi2012/train --foreground-value 0 \
        --exclude 4,10,11,19,24        # the validation slices: measure on what trains

Hand-drawn labels can be offset from what they trace: ISBI 2012's membranes
lie about 0.57 px above and 0.17 px left of the dark membranes of the EM slices,
on every training slice. A network can learn a constant offset, but a vertical flip
turns 0.6 px up into 0.6 px down: trained with flips and rot90 it is taught two
places at once and draws membranes between them. When the offset is over a
quarter of a pixel, train with ``--label-offset=DY,DX``: the augmentation then
keeps it through flips and quarter turns (training/augment.py). Without flips
(``--no-flips --no-rot90``) the network learns it too, but overfits ISBI's 20
slices (model card, "Recipes tried"). A network that has learnt an offset is not
flip-equivariant: averaging its predictions over flips (``tta=true``) blurs them.

The offset is the peak of the cross-correlation between the label's foreground
and the image's intensity (its largest magnitude: a dark foreground correlates
negatively), located to 1/20 px by scikit-image's upsampled cross-correlation
(``phase_cross_correlation`` without the phase normalisation, which would
whiten a binary label into noise).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from skimage.registration import phase_cross_correlation

from training.config import comma_list
from training.data import Sample, load_samples

UPSAMPLE = 20  # the offset in steps of 1/20 px
ADVICE = 0.25  # px: above this, flips and rot90 teach the offset both ways


def label_offset(sample: Sample) -> tuple[float, float]:
    """(dy, dx) in px from the image's foreground to the label's: (-0.6, -0.2) = the label is
    0.6 px up and 0.2 px left of what it traces."""
    signal = sample.image.astype(np.float64).mean(axis=2)
    label = (sample.label > 0).astype(np.float64)
    if not label.any() or label.all():
        raise ValueError(f"image {sample.name}: its label needs both classes to be compared")
    shift, _, _ = phase_cross_correlation(
        label - label.mean(), signal - signal.mean(), upsample_factor=UPSAMPLE, normalization=None
    )
    return float(shift[0]), float(shift[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="folder with image/ and label/")
    parser.add_argument(
        "--foreground-value",
        type=int,
        default=255,
        help="binary masks: the pixel value of the foreground (ISBI membranes: 0)",
    )
    parser.add_argument(
        "--exclude",
        type=comma_list(str),
        default=(),
        help="images to leave out, comma-separated (e.g. the validation split)",
    )


def main(args: argparse.Namespace) -> tuple[float, float]:
    """Prints each image's offset and the mean; returns the mean (dy, dx)."""
    samples = load_samples(args.data, foreground_value=args.foreground_value)
    unknown = sorted(set(args.exclude) - {s.name for s in samples})
    if unknown:
        raise ValueError(f"--exclude names images that are not in {args.data}: {unknown[:5]}")
    samples = [s for s in samples if s.name not in args.exclude]
    if not samples:
        raise ValueError(f"--exclude leaves no image of {args.data} to measure")
    offsets = np.array([label_offset(s) for s in samples])
    for sample, (dy, dx) in zip(samples, offsets, strict=True):
        print(f"{sample.name:<24} dy {dy:+.2f}  dx {dx:+.2f}")
    mean, spread = offsets.mean(axis=0), offsets.std(axis=0)
    print(
        f"mean over {len(samples)} images: dy {mean[0]:+.2f} (sd {spread[0]:.2f}), "
        f"dx {mean[1]:+.2f} (sd {spread[1]:.2f}) px; + = the label lies down / right"
    )
    if np.abs(mean).max() > ADVICE:
        print(
            f"over {ADVICE} px: flips and quarter turns teach this offset both ways; train with "
            f"--label-offset={mean[0]:.2f},{mean[1]:.2f} to keep it through them"
        )
    return float(mean[0]), float(mean[1])
