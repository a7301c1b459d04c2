"""Shared by the training tests: few threads (the machine is shared), synthetic data
(bright discs and boxes on a noisy background, exact 0/255 masks) written per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def shapes_image(rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 H x W, mask uint8 H x W with 255 = shape)."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(2, 5))):
        cy, cx = rng.integers(8, size - 8, size=2)
        r = int(rng.integers(5, 12))
        if rng.random() < 0.5:
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        else:
            mask |= (abs(yy - cy) <= r) & (abs(xx - cx) <= int(rng.integers(4, 12)))
    image = np.where(mask, 160.0, 80.0) + rng.normal(0, 25, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def write_shapes(
    root: Path, count: int, seed: int = 0, size: int = 96, suffix: str = ".png"
) -> Path:
    """root/image/i.png and root/label/i.png for i < count; returns root."""
    rng = np.random.default_rng(seed)
    (root / "image").mkdir(parents=True, exist_ok=True)
    (root / "label").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = shapes_image(rng, size)
        Image.fromarray(image).save(root / "image" / f"{i}{suffix}")
        Image.fromarray(mask).save(root / "label" / f"{i}{suffix}")
    return root


@pytest.fixture(scope="session")
def shapes() -> Callable[..., Path]:
    """write_shapes(root, count, seed=0, size=96, suffix=".png") -> root."""
    return write_shapes
