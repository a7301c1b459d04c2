"""What a network does to sizes: Geometry and the U-Net's (training imports this too).

A valid-padding U-Net with 4 poolings maps an input of size s to s - 184 (572 ->
388): 92 px are lost per side, and accepted sizes are 16k + 12 (every 2x2
pooling sees an even size). A same-padding one keeps sizes; they must be
multiples of 2^depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Geometry:
    """How a network's output relates to its input, per axis (both axes alike).

    padding: ``"valid"`` (output = input - 2 * halo) or ``"same"`` (output = input).
    halo: pixels lost per side by a valid network (92 for the paper's 4 levels), 0 for same.
    size_multiple, size_offset, min_size: accepted input sizes per axis are
        ``size_multiple * k + size_offset >= min_size`` (16, 12, 188 for the paper's net).
    """

    padding: Literal["valid", "same"]
    halo: int
    size_multiple: int
    size_offset: int
    min_size: int

    def __post_init__(self) -> None:
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {self.padding!r}")
        if self.size_multiple < 1:
            raise ValueError(f"size_multiple must be >= 1, got {self.size_multiple}")
        if not 0 <= self.size_offset < self.size_multiple:
            raise ValueError(
                f"size_offset must be in [0, size_multiple={self.size_multiple}), "
                f"got {self.size_offset}"
            )
        if self.padding == "same" and self.halo != 0:
            raise ValueError(f"a same-padding network has halo 0, got {self.halo}")
        if self.padding == "valid" and self.halo < 1:
            raise ValueError(f"a valid-padding network has halo >= 1, got {self.halo}")
        if self.min_size < 1 or self.min_size <= 2 * self.halo:
            raise ValueError(
                f"min_size must exceed 2 * halo = {2 * self.halo} (the output would be empty), "
                f"got {self.min_size}"
            )

    def is_valid_size(self, size: int) -> bool:
        return size >= self.min_size and size % self.size_multiple == self.size_offset

    def valid_size_at_least(self, size: int) -> int:
        """Smallest accepted input size >= ``size``."""
        size = max(size, self.min_size)
        return size + (self.size_offset - size) % self.size_multiple

    def valid_size_at_most(self, size: int) -> int | None:
        """Largest accepted input size <= ``size``, or None when there is none."""
        best = size - (size - self.size_offset) % self.size_multiple
        return best if best >= self.min_size else None

    def nearest_valid_sizes(self, size: int) -> tuple[int | None, int]:
        """The accepted sizes just below and just above ``size`` (for error messages)."""
        return self.valid_size_at_most(size), self.valid_size_at_least(size)

    def output_size(self, input_size: int) -> int:
        return input_size - 2 * self.halo


def unet_geometry(depth: int, padding: Literal["valid", "same"]) -> Geometry:
    """The geometry of a U-Net with two 3x3 convolutions per level and ``depth`` 2x2 poolings.

    Valid: each level loses 4 px and every pooling must see an even size, so
    halo = 2 (3 * 2^depth - 2) and sizes are 2^depth k + (-4 mod 2^depth), the
    smallest one whose output is >= 1 px (depth 4, the paper's: halo 92, 16k + 12,
    min 188). Same: halo 0, sizes multiples of 2^depth.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    m = 2**depth
    if padding == "same":
        return Geometry("same", 0, m, 0, m)
    halo = 2 * (3 * m - 2)
    offset = -4 % m
    smallest = 2 * halo + (offset - 2 * halo) % m
    min_size = smallest if smallest > 2 * halo else smallest + m
    return Geometry("valid", halo, m, offset, min_size)
