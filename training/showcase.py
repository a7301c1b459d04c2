"""The README's and model card's figure, drawn by the service itself (``format=overlay``).

    make run &    # or any running service
    python -m training.showcase --image IMAGE --out model/example.png [--url http://localhost:8000]

Three panels: the input; ``/segment?format=overlay`` (the classes, tinted); and
``/segment?format=overlay&objects=true`` (each object outlined: for the shipped
membrane model, the cells its watershed finds), with the object count that
``format=instances`` reports. What the figure shows is what the service serves.
"""

from __future__ import annotations

import argparse
import io
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def segment(url: str, image: bytes, query: str) -> tuple[np.ndarray, dict[str, str]]:
    request = urllib.request.Request(
        f"{url.rstrip('/')}/segment?{query}", data=image, method="POST"
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        return np.asarray(Image.open(io.BytesIO(answer.read()))), dict(answer.headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--url", default="http://localhost:8000")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    data = args.image.read_bytes()
    image = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    classes, _ = segment(args.url, data, "format=overlay")
    cells, _ = segment(args.url, data, "format=overlay&objects=true")
    _, headers = segment(args.url, data, "format=instances")
    count = headers.get("X-Object-Count") or headers.get("x-object-count")
    panels = [
        (image, "input", "gray"),
        (classes, "format=overlay (membranes)", None),
        (cells, f"format=overlay&objects=true ({count} cells)", None),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.3), constrained_layout=True)
    for axis, (pixels, title, cmap) in zip(axes, panels, strict=True):
        axis.imshow(pixels, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
        axis.set_title(title)
        axis.axis("off")
    if args.title:
        figure.suptitle(args.title)
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
