"""The U-Net of Ronneberger et al. (2015): parts first, then the assembly.

Shapes in the comments are the paper's (Fig. 1): depth 4, base 64, valid
padding, a 1 x 572 x 572 input giving K x 388 x 388 logits. With
``padding="same"`` every 3x3 convolution keeps the size and an N x N input
gives N x N logits (N a multiple of 2^depth).

Options beyond the paper (a practitioner's three improvements): batch
normalisation after every 3x3 convolution; a classification head on the
bottleneck (global average pooling + a fully connected layer -> ``image_scores``);
deep supervision -- a 1x1 prediction at every lower decoder level, upsampled to
the final output and added to it (FPN-like fusion), each also trained on its own.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from training.config import Padding, UNetConfig


class UNetOutput(NamedTuple):
    """logits: N x K x H' x W'. image_scores: N x (num_classes - 1) presence logits, or None.
    sides: deep supervision's side logits, each N x K x H' x W' (already fused into logits).
    """

    logits: torch.Tensor
    image_scores: torch.Tensor | None
    sides: tuple[torch.Tensor, ...]


def center_crop(x: torch.Tensor, crop: int) -> torch.Tensor:
    """N x C x H x W -> N x C x (H - 2 crop) x (W - 2 crop).

    ``crop`` is a constant of the architecture (not computed from the tensor),
    so the ONNX graph gets a static Slice that works for every input size.
    """
    return x[:, :, crop:-crop, crop:-crop] if crop else x


class DoubleConv(nn.Sequential):
    """(3x3 conv [-> BatchNorm] -> ReLU) x 2.

    N x C_in x H x W -> N x C_out x (H - 4) x (W - 4) (valid) or x H x W (same).
    """

    def __init__(self, c_in: int, c_out: int, padding: Padding, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            # A bias before BatchNorm is cancelled by its mean subtraction.
            layers.append(
                nn.Conv2d(c, c_out, 3, padding=1 if padding == "same" else 0, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Down(nn.Sequential):
    """2x2 max-pool, then DoubleConv: N x C x H x W -> N x 2C x (H/2 - 4) x (W/2 - 4) (valid)."""

    def __init__(self, c_in: int, c_out: int, padding: Padding, batch_norm: bool) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(c_in, c_out, padding, batch_norm))


class Up(nn.Module):
    """2x2 up-convolution halving the channels, concatenation with the centre-cropped skip,
    DoubleConv: (N x 2C x h x w, skip N x C x H x W) -> N x C x (2h - 4) x (2w - 4) (valid).

    skip_crop: pixels cropped per side from the skip, H = 2h + 2 skip_crop (0 for same).
    """

    def __init__(
        self, c_in: int, c_out: int, padding: Padding, batch_norm: bool, skip_crop: int
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * c_out, c_out, padding, batch_norm)
        self.skip_crop = skip_crop

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # N x C x 2h x 2w
        return self.conv(torch.cat([center_crop(skip, self.skip_crop), x], dim=1))


class ClassificationHead(nn.Module):
    """Global average pooling + fully connected: N x C x h x w -> N x classes (logits)."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class SideOutput(nn.Module):
    """Deep supervision at one decoder level: 1x1 conv, bilinear upsampling by ``scale``,
    centre crop to the final output: N x C x h x w -> N x K x (scale h - 2 crop) x ...

    The crop is constant: a valid decoder level is centred on the final output and
    exceeds it by ``crop`` px per side after upsampling (paper, level 1 -> 8x: 52 * 8
    = 416 = 388 + 2 * 14). Bilinear upsampling (half-pixel centres) is symmetric, and
    it only clamps at the border the crop removes (at most scale/2 px < crop), so the
    side outputs stay exact under overlap-tiling.
    """

    def __init__(self, channels: int, out_channels: int, scale: int, crop: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=1)
        self.scale, self.crop = scale, crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(
            self.conv(x), scale_factor=float(self.scale), mode="bilinear", align_corners=False
        )
        return center_crop(x, self.crop)


def skip_crops(depth: int, padding: Padding) -> list[int]:
    """Pixels cropped per side from level i's skip (paper: 88, 40, 16, 4; 0 for same).

    The sub-network below level i loses the same number of pixels D_(i+1) for any
    input: D_depth = 4, D_i = 4 + 2 D_(i+1) + 4. Its upsampled output is thus
    D_(i+1) px smaller per side than level i's skip: 568 -> 392 at the top (88).
    """
    if padding == "same":
        return [0] * depth
    loss = [0] * (depth + 1)
    loss[depth] = 4
    for i in reversed(range(depth)):
        loss[i] = 8 + 2 * loss[i + 1]
    return [loss[i + 1] for i in range(depth)]


def side_crops(depth: int, padding: Padding) -> list[int]:
    """Deep supervision: crop per side after upsampling decoder level i by 2^i, i = 1..depth-1.

    Decoder outputs d_i satisfy d_(i-1) = 2 d_i - 4, so 2^i d_i - d_0 = 4 (2^i - 1) and
    the crop is 2 (2^i - 1): 2, 6, 14 for the paper (0 for same).
    """
    return [0 if padding == "same" else 2 * (2**i - 1) for i in range(1, depth)]


class UNet(nn.Module):
    """The U-Net; ``forward(N x C x H x W) -> UNetOutput`` (logits N x K x H' x W').

    H, W must be valid sizes (``config.geometry()``): 16k + 12 >= 188 for the paper's
    net, multiples of 2^depth for same padding; otherwise a ValueError names the
    nearest valid sizes.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c, w = config, config.widths()
        crops = skip_crops(c.depth, c.padding)
        self.inc = DoubleConv(c.in_channels, w[0], c.padding, c.batch_norm)
        self.downs = nn.ModuleList(
            Down(w[i], w[i + 1], c.padding, c.batch_norm) for i in range(c.depth)
        )
        self.dropout = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.classifier = (
            ClassificationHead(w[-1], c.num_classes - 1) if c.classification_head else None
        )
        # ups[0] is the lowest level (1024 -> 512 channels), ups[-1] the top (128 -> 64).
        self.ups = nn.ModuleList(
            Up(w[i + 1], w[i], c.padding, c.batch_norm, crops[i]) for i in reversed(range(c.depth))
        )
        self.head = nn.Conv2d(w[0], c.out_channels, kernel_size=1)
        self.sides = (
            nn.ModuleList(
                SideOutput(w[i], c.out_channels, 2**i, crop)
                for i, crop in zip(range(1, c.depth), side_crops(c.depth, c.padding), strict=True)
            )
            if c.deep_supervision
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal initialisation (paper, Sec. 3): std sqrt(2 / N), N = inputs per unit."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()  # C_in k k for a conv, C_in for a linear layer
            elif isinstance(m, nn.ConvTranspose2d):
                # kernel 2, stride 2: each output pixel sees one tap per input channel.
                fan_in = m.in_channels
            else:
                continue
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def check_input_size(self, height: int, width: int) -> None:
        """ValueError naming the nearest valid sizes when H or W is not accepted."""
        geometry = self.config.geometry()
        for axis, size in (("height", height), ("width", width)):
            if not geometry.is_valid_size(size):
                lower, upper = geometry.nearest_valid_sizes(size)
                nearest = f"{lower} or {upper}" if lower is not None else str(upper)
                c = self.config
                raise ValueError(
                    f"input {axis} {size} is not valid for this U-Net (padding={c.padding}, "
                    f"depth={c.depth}): sizes are {c.size_multiple}k + {c.size_offset} >= "
                    f"{c.min_size}; nearest valid sizes: {nearest}"
                )

    def forward(self, x: torch.Tensor) -> UNetOutput:
        """x: N x C x H x W float -> UNetOutput (paper: 1 x 572^2 -> K x 388^2 logits)."""
        # The exporter records shapes as constants; the check would only add TracerWarnings.
        if not torch.onnx.is_in_onnx_export():
            self.check_input_size(x.shape[-2], x.shape[-1])
        # Contracting path: 64 x 568^2, then 128 x 280^2, 256 x 136^2, 512 x 64^2, 1024 x 28^2
        x = self.inc(x)
        skips = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        x = self.dropout(x)  # paper: dropout at the end of the contracting path
        image_scores = self.classifier(x) if self.classifier is not None else None
        # Expansive path: 512 x 52^2, 256 x 100^2, 128 x 196^2, 64 x 388^2
        levels = []
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(x, skip)
            levels.append(x)
        logits = self.head(x)  # K x 388^2
        sides: tuple[torch.Tensor, ...] = ()
        if self.sides is not None:
            # levels[-1 - i] is decoder level i (upsampled by 2^i to reach the top).
            sides = tuple(side(levels[-1 - i]) for i, side in enumerate(self.sides, start=1))
            for side_logits in sides:
                logits = logits + side_logits
        return UNetOutput(logits, image_scores, sides)
