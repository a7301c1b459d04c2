"""Float against INT8, side by side: the same image through both models, in turn.

    python -m bench.int8                                  # model/unet.onnx vs model/unet-int8.onnx
    python -m bench.int8 --float a.onnx --int8 b.onnx --size 2048 --repeats 5

Each model with the service's CPU tiling (``Predictor`` defaults, ONNX Runtime
CPU), on a seeded synthetic ``--size`` px image (an ISBI 2012 slice mosaic when
``../shared/data`` has one); the two run alternately after warm-up runs, so that
the machine's noise hits both alike (``bench.service.interleaved_medians``). Also
the largest difference of their probabilities and the share of pixels whose mask
differs at the card's threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from app.inference import Predictor, load_model
from bench.large import REPO, content, tiles
from bench.report import report
from bench.service import interleaved_medians


def mosaic(size: int) -> np.ndarray:
    """``size`` x ``size`` px of ISBI 2012 slices (or seeded noise), as bench.large makes them."""
    count = -(-size // 512)
    image = np.zeros((count * 512, count * 512), dtype=np.uint8)
    for index, tile in enumerate(tiles(count * 512)):
        r, c = divmod(index, count)
        image[r * 512 : (r + 1) * 512, c * 512 : (c + 1) * 512] = tile
    return image[:size, :size]


def run(args: argparse.Namespace) -> dict[str, Any]:
    image = mosaic(args.size)
    predictors = {}
    for name, path in (("float", args.float), ("int8", args.int8)):
        loaded = load_model(path, "cpu")
        predictors[name] = Predictor(loaded.engine.run, loaded.card)
    seconds = interleaved_medians(
        {name: (lambda p=p: p.probabilities(image)) for name, p in predictors.items()},
        args.repeats,
    )
    threshold = predictors["float"].card.threshold or 0.5
    probs = {name: p.probabilities(image)[0] for name, p in predictors.items()}
    masks = {name: predictors[name].mask(p, threshold) for name, p in probs.items()}
    return {
        "image": f"{args.size}² ({content()})",
        "float_s": round(seconds["float"], 3),
        "int8_s": round(seconds["int8"], 3),
        "speed_ratio_float_over_int8": round(seconds["float"] / seconds["int8"], 2),
        "max_abs_probability_difference": float(np.abs(probs["float"] - probs["int8"]).max()),
        "mask_pixels_differing": float((masks["float"] != masks["int8"]).mean()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--float", type=Path, default=REPO / "model" / "unet.onnx")
    parser.add_argument("--int8", type=Path, default=REPO / "model" / "unet-int8.onnx")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    report(run(args), args.json)


if __name__ == "__main__":
    main()
