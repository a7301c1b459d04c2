"""The model card's example figure: an input, the service's mask, and the overlay.

    curl -s --data-binary @IMAGE "http://localhost:8000/segment" -o mask.png
    python -m training.showcase --image IMAGE --mask mask.png --out model/example.png

The mask is what ``POST /segment`` returned (class indices); the figure is
derived from it, so what the card shows is what the service serves.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """H x W gray + H x W class indices -> H x W x 3 uint8, foreground tinted half-way."""
    rgb = np.repeat(image[:, :, None], 3, axis=2).astype(np.float32)
    tint = np.array(colour, dtype=np.float32)
    rgb[mask > 0] = 0.5 * rgb[mask > 0] + 0.5 * tint
    return rgb.astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--mask", type=Path, required=True, help="PNG from /segment?format=png")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    image = np.asarray(Image.open(args.image).convert("L"))
    mask = np.asarray(Image.open(args.mask))
    if mask.shape != image.shape:
        raise SystemExit(f"mask {mask.shape} and image {image.shape} differ in size")
    panels = [
        (image, "input", "gray"),
        ((mask > 0).astype(np.uint8) * 255, "mask (membrane = white)", "gray"),
        (overlay(image, mask, (255, 40, 40)), "overlay", None),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.3), constrained_layout=True)
    for axis, (data, title, cmap) in zip(axes, panels, strict=True):
        axis.imshow(data, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        axis.set_title(title)
        axis.axis("off")
    if args.title:
        figure.suptitle(args.title)
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
