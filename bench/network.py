"""The benchmarked U-Net outside ONNX Runtime: what its convolutions cost, and the same
weights in torch (functional) for MONAI's sliding window.

The network is deploy.demo_model's; these two follow its graph layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy.demo_model import UNetSpec, Weights, conv_layers, skip_crops


def conv_flops(spec: UNetSpec, height: int, width: int) -> int:
    """Floating-point operations (2 per multiply-add) of one H x W input, convolutions only."""
    pad = 1 if spec.padding == "same" else 0
    crops = skip_crops(spec)
    total = 0
    h, w = height, width
    sizes = []
    convs = iter(conv_layers(spec))

    def conv(h: int, w: int, k: int = 3) -> tuple[int, int]:
        nonlocal total
        _, cin, cout, _ = next(convs)
        h, w = h - k + 1 + 2 * pad * (k == 3), w - k + 1 + 2 * pad * (k == 3)
        total += 2 * cin * cout * k * k * h * w
        return h, w

    for i in range(spec.depth + 1):
        h, w = conv(*conv(h, w))
        if i < spec.depth:
            sizes.append((h, w))
            h, w = h // 2, w // 2
    widths = spec.widths()
    for i in reversed(range(spec.depth)):
        total += 2 * widths[i + 1] * widths[i] * 4 * h * w  # each input pixel -> 2x2 outputs
        h, w = 2 * h, 2 * w
        assert (h, w) == (sizes[i][0] - 2 * crops[i], sizes[i][1] - 2 * crops[i])
        h, w = conv(*conv(h, w))
    conv(h, w, k=1)
    return total


def torch_forward(spec: UNetSpec, weights: Weights) -> Callable[[Any], Any]:
    """The same network in torch (functional), for MONAI's sliding window."""
    import torch
    import torch.nn.functional as F

    tw = {k: torch.from_numpy(v) for k, v in weights.items() if k.endswith(("weight", "bias"))}
    pad = 1 if spec.padding == "same" else 0
    crops = skip_crops(spec)

    def conv(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.relu(F.conv2d(x, tw[f"{name}.weight"], tw[f"{name}.bias"], padding=pad))

    def forward(x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i in range(spec.depth + 1):
            x = conv(conv(x, f"enc{i}.conv1"), f"enc{i}.conv2")
            if i < spec.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for i in reversed(range(spec.depth)):
            x = F.conv_transpose2d(x, tw[f"up{i}.weight"], tw[f"up{i}.bias"], stride=2)
            c = crops[i]
            skip = skips[i][:, :, c : skips[i].shape[2] - c, c : skips[i].shape[3] - c]
            x = conv(conv(torch.cat([skip, x], 1), f"dec{i}.conv1"), f"dec{i}.conv2")
        return F.conv2d(x, tw["head.weight"], tw["head.bias"])

    return forward
