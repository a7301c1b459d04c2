"""Augmentation of one training tile: flips, 90-degree rotations, the paper's elastic
deformation, intensity jitter.

Every random choice comes from one ``numpy.random.Generator`` per sample, seeded
from (seed, epoch, sample index) by the dataset, so a run is reproducible
whatever the number of DataLoader workers or DDP ranks.

Why not MONAI's ``Rand2DElastic``: its control grid always carries two extra
points beyond the borders and its count follows from ``spacing``, and the
transform bundles a random affine; it cannot be asked for the paper's 3 x 3 grid
over the tile. The paper's deformation is a dozen lines of torch: Gaussian
displacements (std 10 px) on a coarse 3 x 3 grid spanning the tile, bicubic
interpolation to per-pixel displacements, then bicubic resampling of the image
and nearest-neighbour resampling of the label (labels stay the exact integers
they were) and of the weight map. Outside the tile the sample is reflected, as
the overlap-tile strategy does.

Labels drawn a fraction of a pixel off what they trace (``label_offset``, as
``python -m training offset`` measures it; ISBI 2012: 0.57 px up, 0.17 px left)
would come out of a flip or a quarter turn offset the other way, and the network
would be taught both. A flip turns the offset o into T(o); the image is then
resampled (in the same bicubic pass as the deformation) by o - T(o), which puts
the label back at o from what it traces, on every tile. (Such a tile's image is
then interpolated even when it is not deformed: a little smoother than the
others.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def elastic_displacement(
    height: int, width: int, rng: np.random.Generator, grid: int = 3, std: float = 10.0
) -> torch.Tensor:
    """Per-pixel displacements (px), 2 x H x W (dy, dx): N(0, std^2) on a grid x grid
    lattice whose corner points sit on the tile's corners, bicubically interpolated.
    """
    coarse = torch.from_numpy(rng.normal(0.0, std, size=(1, 2, grid, grid)).astype(np.float32))
    # align_corners=True puts the lattice points on the corner pixels, as the paper's figure.
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0]


def warp(image: torch.Tensor, displacement: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample C x H x W at (y + dy, x + dx) with ``mode`` ("bicubic" or "nearest"),
    reflecting past the borders. displacement: 2 x H x W (px). Returns C x H x W.
    """
    height, width = image.shape[-2:]
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1) + displacement[0]
    xs = torch.arange(width, dtype=torch.float32).view(1, -1) + displacement[1]
    # grid_sample wants (x, y) in [-1, 1], -1 and 1 on the centres of the corner pixels.
    grid = torch.stack(
        (2 * xs / max(width - 1, 1) - 1, 2 * ys / max(height - 1, 1) - 1), dim=-1
    ).unsqueeze(0)
    out = F.grid_sample(
        image.unsqueeze(0).float(), grid, mode=mode, padding_mode="reflection", align_corners=True
    )
    return out[0]


@dataclass(frozen=True)
class Augment:
    """Joint augmentation of an image tile and its label (and weight map) at the same size.

    flips, rot90: random horizontal/vertical flips and quarter turns.
    elastic_p: probability of the elastic deformation; elastic_grid, elastic_std: its
        lattice (3 x 3 in the paper) and displacement std in px (10 in the paper).
    intensity: image * (1 + a) + b, a, b ~ U(-intensity, intensity), on the
        normalised image (0 = off).
    label_offset: (dy, dx) px of the labels from what they trace, kept through the flips
        and quarter turns (see the module docstring).
    """

    flips: bool = True
    rot90: bool = True
    elastic_p: float = 0.5
    elastic_grid: int = 3
    elastic_std: float = 10.0
    intensity: float = 0.1
    label_offset: tuple[float, float] = (0.0, 0.0)

    def __call__(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        weight: torch.Tensor,
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image: C x T x T float; label: T x T int64; weight: T x T float -> the same shapes."""
        planes = [image, label.unsqueeze(0), weight.unsqueeze(0)]
        dy, dx = self.label_offset  # becomes T(o): where the moved label now sits
        if self.flips:
            for dim in (-2, -1):
                if rng.random() < 0.5:
                    planes = [p.flip(dim) for p in planes]
                    dy, dx = (-dy, dx) if dim == -2 else (dy, -dx)
        if self.rot90 and (k := int(rng.integers(4))):
            planes = [p.rot90(k, dims=(-2, -1)) for p in planes]
            for _ in range(k):  # a quarter turn moves (r, c) to (W - 1 - c, r)
                dy, dx = -dx, dy
        height, width = planes[0].shape[-2:]  # after the turns
        d = torch.zeros(2, height, width)
        deform = rng.random() < self.elastic_p
        if deform:
            d = elastic_displacement(height, width, rng, self.elastic_grid, self.elastic_std)
        # The image sampled at y + o - T(o) carries what the label traces to o from it again.
        fix = torch.tensor([self.label_offset[0] - dy, self.label_offset[1] - dx]).view(2, 1, 1)
        if deform or fix.any():
            planes[0] = warp(planes[0], d + fix, "bicubic")
        if deform:
            planes[1:] = [
                warp(planes[1].float(), d, "nearest").round().long(),
                warp(planes[2], d, "nearest"),
            ]
        image, label, weight = planes[0], planes[1][0], planes[2][0]
        if self.intensity:
            scale, shift = rng.uniform(-self.intensity, self.intensity, size=2)
            image = image * (1 + float(scale)) + float(shift)
        return image.contiguous(), label.contiguous(), weight.contiguous()
