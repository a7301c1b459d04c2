"""Losses: soft Dice + pixel-weighted cross-entropy, and the paper's border weight map.

The weight map (Ronneberger et al. 2015, Eq. 2) is computed once per mask in
numpy/scipy; the losses are torch. Binary models (K = 1 logit) use the sigmoid
and binary cross-entropy, multi-class models the softmax and cross-entropy.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage

from training.unet import UNetOutput

Objects = Literal["foreground", "background"]


def class_balance_weights(
    label: npt.NDArray[np.integer], num_classes: int
) -> npt.NDArray[np.float32]:
    """w_c(x): H x W, each pixel weighted by 1 / (K * frequency of its class), mean 1.

    Worked example: 3 foreground pixels out of 12 (K = 2) weigh 12 / (2 * 3) = 2,
    the 9 background pixels 12 / (2 * 9) = 2/3. Absent classes get no weight.
    """
    counts = np.bincount(label.ravel(), minlength=num_classes).astype(np.float64)
    per_class = np.zeros(num_classes)
    present = counts > 0
    per_class[present] = label.size / (present.sum() * counts[present])
    return per_class[label].astype(np.float32)


def object_labels(label: npt.NDArray[np.integer], objects: Objects) -> npt.NDArray[np.int32]:
    """Instances: connected components (4-connected) of the object region, 0 elsewhere.

    objects="foreground": each non-background class's components (paper: cells);
    "background": components of class 0 (e.g. ISBI, where the foreground class is
    the membrane and the cells are what it separates).
    """
    out = np.zeros(label.shape, dtype=np.int32)
    classes = [0] if objects == "background" else [c for c in np.unique(label) if c != 0]
    offset = 0
    for c in classes:
        components, n = ndimage.label(label == c)
        out[components > 0] = components[components > 0] + offset
        offset += n
    return out


def border_weight_map(
    label: npt.NDArray[np.integer],
    num_classes: int,
    *,
    objects: Objects = "foreground",
    w0: float = 10.0,
    sigma: float = 5.0,
) -> npt.NDArray[np.float32]:
    """The paper's w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2)): H x W float32.

    d1, d2: Euclidean distance (px) to the nearest and second nearest object.
    The border term is applied where the paper's Fig. 3d shows it, on pixels
    outside every object (the gaps that separate touching objects): inside an
    object d1 = 0 and the term would only blur into its interior. With fewer
    than two objects there is no border term.

    Cost: one distance transform per object, restricted to the object's
    bounding box grown by the distance beyond which the term is below 1e-3
    (about 21 px for w0 = 10, sigma = 5) -- pixels farther away get d = inf.
    """
    weights = class_balance_weights(label, num_classes)
    instances = object_labels(label, objects)
    if instances.max() < 2 or w0 == 0:
        return weights
    reach = math.ceil(sigma * math.sqrt(2 * math.log(max(w0, 1e-3) / 1e-3))) + 1
    d1 = np.full(label.shape, np.inf)
    d2 = np.full(label.shape, np.inf)
    for index, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(s.start - reach, 0), min(s.stop + reach, n))
            for s, n in zip(box, label.shape, strict=True)
        )
        distance = ndimage.distance_transform_edt(instances[window] != index)
        w1, w2 = d1[window], d2[window]  # views: updated in place
        np.minimum(w2, np.maximum(w1, distance), out=w2)
        np.minimum(w1, distance, out=w1)
    gaps = (instances == 0) & np.isfinite(d2)
    border = w0 * np.exp(-((d1[gaps] + d2[gaps]) ** 2) / (2 * sigma**2))
    weights[gaps] += border.astype(np.float32)
    return weights


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """N x K x H x W logits -> N x P x H x W: sigmoid (K = 1), softmax otherwise."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the non-background classes, pooled over the batch.

    logits: N x K x H x W; target: N x H x W class indices. eps smooths empty classes.
    """
    probs = probabilities(logits.float())
    if logits.shape[1] == 1:
        fg_probs, fg_target = probs, (target == 1).unsqueeze(1).float()
    else:
        one_hot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
        fg_probs, fg_target = probs[:, 1:], one_hot[:, 1:]
    dims = (0, 2, 3)
    intersection = (fg_probs * fg_target).sum(dims)
    total = fg_probs.sum(dims) + fg_target.sum(dims)
    return 1 - ((2 * intersection + eps) / (total + eps)).mean()


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Pixel-weighted (binary) cross-entropy, the weighted mean sum(w l) / sum(w).

    logits: N x K x H x W; target: N x H x W class indices; weight: N x H x W or None.
    """
    logits = logits.float()
    if logits.shape[1] == 1:
        pixel = F.binary_cross_entropy_with_logits(
            logits[:, 0], (target == 1).float(), reduction="none"
        )
    else:
        pixel = F.cross_entropy(logits, target.long(), reduction="none")
    if weight is None:
        return pixel.mean()
    return (pixel * weight).sum() / weight.sum().clamp_min(1e-12)


class SegmentationLoss(torch.nn.Module):
    """dice_weight * Dice + ce_weight * weighted CE on the fused logits, plus
    side_weight * the same on each deep-supervision side output, plus
    image_weight * BCE of the image-level scores (class present in the tile or not).
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        side_weight: float = 0.5,
        image_weight: float = 0.2,
    ) -> None:
        super().__init__()
        self.dice_weight, self.ce_weight = dice_weight, ce_weight
        self.side_weight, self.image_weight = side_weight, image_weight

    def pixel_loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        loss = self.ce_weight * weighted_cross_entropy(logits, target, weight)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target)
        return loss

    def forward(
        self,
        output: UNetOutput,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        present: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """target: N x H' x W' class indices; weight: N x H' x W'; present: N x (classes - 1)."""
        loss = self.pixel_loss(output.logits, target, weight)
        for side in output.sides:
            loss = loss + self.side_weight * self.pixel_loss(side, target, weight)
        if output.image_scores is not None and present is not None:
            loss = loss + self.image_weight * F.binary_cross_entropy_with_logits(
                output.image_scores.float(), present.float()
            )
        return loss
