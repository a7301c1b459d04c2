"""The tiny test-model factory: random-weight U-Nets a few channels wide, written as ONNX
with their card, and the shapes the tests share.

The builder is the demo model's (deploy/demo_model.py: numpy + onnx, one copy for the
image, the tests and the benchmarks); the tests take it from here.
"""

from __future__ import annotations

from deploy.demo_model import UNetSpec, build_onnx, default_card, random_weights, save_model

__all__ = [
    "BINARY",
    "PAPER",
    "RGB",
    "SOFTMAX3",
    "UNetSpec",
    "build_onnx",
    "default_card",
    "random_weights",
    "save_model",
]

# depth 2, base 2: halo 20, sizes 4k, at least 44 px; a few ms per small image.
BINARY = UNetSpec(depth=2, base=2)
SOFTMAX3 = UNetSpec(depth=2, base=2, out_channels=3)
RGB = UNetSpec(depth=2, base=2, in_channels=3)
# The paper's geometry (depth 4: halo 92 px, sizes 16k + 12, inputs >= 188 px), 2 channels
# at the top level: cheap to run, yet it tiles like the real network.
PAPER = UNetSpec(depth=4, base=2)
