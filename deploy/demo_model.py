"""The random-weight demo U-Net, written straight into ONNX from numpy weights, with its card.

The image's ``model`` stage runs it when no trained model is in the build
context, so it imports numpy and onnx alone (no torch, no onnxruntime). The
tests' tiny networks (``tests/nets.py``) and the benchmarks' are built by the
same code. The graph is the paper's: per level two 3x3 convolutions + ReLU,
2x2 max-pool, 2x2 transposed convolution up, concatenation with the
centre-cropped skip, 1x1 convolution to K logits.

    python -m deploy.demo_model --out model/unet.onnx --base 16
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Weights = dict[str, np.ndarray]


@dataclass(frozen=True)
class UNetSpec:
    depth: int = 4
    base: int = 64
    in_channels: int = 1
    out_channels: int = 1
    padding: Literal["valid", "same"] = "valid"

    # The geometry repeats app.inference.geometry.unet_geometry on purpose: this module
    # must import with numpy + onnx alone (the image's model-builder stage runs it,
    # and app.inference pulls in onnxruntime). tests/inference/test_tiling.py pins
    # the two together.
    @property
    def halo(self) -> int:
        return 2 * (3 * 2**self.depth - 2) if self.padding == "valid" else 0

    @property
    def size_multiple(self) -> int:
        return int(2**self.depth)  # mypy: int ** int is Any (a negative power is a float)

    @property
    def size_offset(self) -> int:
        return (-4) % self.size_multiple if self.padding == "valid" else 0

    @property
    def min_size(self) -> int:
        if self.padding == "same":
            return self.size_multiple
        smallest = 2 * self.halo + (self.size_offset - 2 * self.halo) % self.size_multiple
        return smallest if smallest > 2 * self.halo else smallest + self.size_multiple

    def widths(self) -> list[int]:
        return [self.base * 2**i for i in range(self.depth + 1)]


def conv_layers(spec: UNetSpec) -> list[tuple[str, int, int, int]]:
    """(name, in, out, kernel) of every convolution, in graph order."""
    w = spec.widths()
    convs = []
    cin = spec.in_channels
    for i, c in enumerate(w):
        convs += [(f"enc{i}.conv1", cin, c, 3), (f"enc{i}.conv2", c, c, 3)]
        cin = c
    for i in reversed(range(spec.depth)):
        convs += [(f"dec{i}.conv1", 2 * w[i], w[i], 3), (f"dec{i}.conv2", w[i], w[i], 3)]
    convs.append(("head", w[0], spec.out_channels, 1))
    return convs


def random_weights(spec: UNetSpec, seed: int = 0) -> Weights:
    """He-normal weights (as the paper), small random biases."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for name, cin, cout, k in conv_layers(spec):
        std = np.sqrt(2.0 / (cin * k * k))
        weights[f"{name}.weight"] = (rng.standard_normal((cout, cin, k, k)) * std).astype(
            np.float32
        )
        weights[f"{name}.bias"] = (rng.standard_normal(cout) * 0.01).astype(np.float32)
    w = spec.widths()
    for i in range(spec.depth):
        std = np.sqrt(2.0 / (w[i + 1] * 4))
        weights[f"up{i}.weight"] = (rng.standard_normal((w[i + 1], w[i], 2, 2)) * std).astype(
            np.float32
        )
        weights[f"up{i}.bias"] = (rng.standard_normal(w[i]) * 0.01).astype(np.float32)
    return weights


def skip_crops(spec: UNetSpec) -> list[int]:
    """Pixels cropped per side from level i's skip before concatenation (0 for same).

    The loss of the sub-network below level i is the same for every input size:
    D_depth = 4, D_i = 4 + 2 D_(i+1) + 4, and level i crops D_(i+1) per side
    (paper: 88, 40, 16, 4 -> 568 cropped to 392 at the top level).
    """
    if spec.padding == "same":
        return [0] * spec.depth
    loss = [0] * (spec.depth + 1)
    loss[spec.depth] = 4
    for i in reversed(range(spec.depth)):
        loss[i] = 8 + 2 * loss[i + 1]
    return [loss[i + 1] for i in range(spec.depth)]


def default_card(spec: UNetSpec, name: str = "synthetic-unet", **extra: Any) -> dict[str, Any]:
    classes = (
        ["background", "foreground"]
        if spec.out_channels == 1
        else ["background", *(f"class_{k}" for k in range(1, spec.out_channels))]
    )
    return {
        "name": name,
        "version": "0.0.0",
        "classes": classes,
        "in_channels": spec.in_channels,
        "padding": spec.padding,
        "halo": spec.halo,
        "size_multiple": spec.size_multiple,
        "size_offset": spec.size_offset,
        "min_size": spec.min_size,
        "normalization": {"scale": 1 / 255, "offset": 0.0},
        "activation": "sigmoid" if spec.out_channels == 1 else "softmax",
        **extra,
    }


class _Graph:
    def __init__(self, weights: Weights) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.weights = weights
        self.used: list[str] = []

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, name: str, pad: int, relu: bool = True) -> str:
        self.used += [f"{name}.weight", f"{name}.bias"]
        y = self.node("Conv", [x, f"{name}.weight", f"{name}.bias"], name, pads=[pad] * 4)
        return self.node("Relu", [y], f"{name}.relu") if relu else y


def build_onnx(
    spec: UNetSpec, weights: Weights, card: dict[str, Any] | None = None, opset: int = 17
) -> onnx.ModelProto:
    """The U-Net as an ONNX model: input ``image`` N x C x H x W -> ``logits`` N x K x H' x W'."""
    g = _Graph(weights)
    pad = 1 if spec.padding == "same" else 0
    x, skips = "image", []
    for i in range(spec.depth + 1):
        x = g.conv(g.conv(x, f"enc{i}.conv1", pad), f"enc{i}.conv2", pad)
        if i < spec.depth:
            skips.append(x)
            x = g.node("MaxPool", [x], f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
    crops = skip_crops(spec)
    for i in reversed(range(spec.depth)):
        g.used += [f"up{i}.weight", f"up{i}.bias"]
        x = g.node(
            "ConvTranspose",
            [x, f"up{i}.weight", f"up{i}.bias"],
            f"up{i}",
            kernel_shape=[2, 2],
            strides=[2, 2],
        )
        skip = skips[i]
        if crops[i]:
            c = crops[i]
            starts, ends, axes = f"crop{i}.starts", f"crop{i}.ends", f"crop{i}.axes"
            weights[starts] = np.array([c, c], dtype=np.int64)
            weights[ends] = np.array([-c, -c], dtype=np.int64)
            weights[axes] = np.array([2, 3], dtype=np.int64)
            g.used += [starts, ends, axes]
            skip = g.node("Slice", [skip, starts, ends, axes], f"crop{i}")
        x = g.node("Concat", [skip, x], f"cat{i}", axis=1)
        x = g.conv(g.conv(x, f"dec{i}.conv1", pad), f"dec{i}.conv2", pad)
    g.nodes.append(
        helper.make_node(
            "Conv", [x, "head.weight", "head.bias"], ["logits"], name="head", pads=[0] * 4
        )
    )
    g.used += ["head.weight", "head.bias"]
    graph = helper.make_graph(
        g.nodes,
        "unet",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["N", spec.in_channels, "H", "W"]
            )
        ],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["N", spec.out_channels, "Ho", "Wo"]
            )
        ],
        [numpy_helper.from_array(weights[name], name) for name in g.used],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if card is not None:
        helper.set_model_props(model, {"unet": json.dumps(card)})
    onnx.checker.check_model(model)
    return model


def save_model(
    path: Path, spec: UNetSpec, seed: int = 0, card: dict[str, Any] | None = None
) -> Path:
    model = build_onnx(
        spec, random_weights(spec, seed), card if card is not None else default_card(spec)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the random-weight demo U-Net.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--out-channels", type=int, default=1)
    parser.add_argument("--padding", choices=["valid", "same"], default="valid")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = UNetSpec(args.depth, args.base, args.in_channels, args.out_channels, args.padding)
    card = default_card(spec, name="demo-random-unet", note="random weights, for demonstration")
    save_model(args.out, spec, args.seed, card)
    print(json.dumps({"path": str(args.out), "spec": asdict(spec)}))


if __name__ == "__main__":
    main()
