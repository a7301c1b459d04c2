"""Predictor: image frame -> class probabilities -> class-index mask.

A frame is H x W or H x W x C, uint8 or uint16, C in {1, 2, 3, 4} (gray,
gray + alpha, RGB, RGBA). Alpha is dropped; an RGB frame given to a 1-channel
model becomes BT.601 luma, a gray frame given to a 3-channel model is
replicated; 16-bit values are divided by 257 (to the 0-255 scale) and then
normalised as the card says. All of it happens per tile, as tiles are cut:
the only whole-image float array is the probability map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.inference.blocks import Block, BlockGrid, Flipped, Window
from app.inference.card import ModelCard
from app.inference.errors import ImageShapeError
from app.inference.plan import DEFAULT_MARGIN, TilePlan, plan_tiles
from app.inference.sinks import ArraySink, BlockSink, FlipMean
from app.inference.tiler import ProgressFn, Region, RunFn, run_plan, run_tiles

# BT.601 luma weights (R, G, B).
LUMA = (0.299, 0.587, 0.114)
# CPU: measured with `python -m bench.inference` (docs/performance.md; 2-core Xeon,
# base-32 valid net, 2048 px): tiles up to 764 px (run as 700) with batch 1 took
# 7.3 s at 86 % of sgemm, against 10.3 s for 572 (run as 540) and 7.4-27.7 s for
# the other sizes; larger batches only added memory. GPU: NOT measured (no GPU was
# available); a batch of large tiles is the usual way to keep a GPU busy.
CPU_TILE_SIZE, CPU_BATCH_SIZE = 764, 1
GPU_TILE_SIZE, GPU_BATCH_SIZE = 1084, 4
FLIPS = ((1, 1), (1, -1), (-1, 1), (-1, -1))  # identity, horizontal, vertical, both


class Normalizer:
    """Maps a raw h x w x C_in tile into the network's C x h x w float32 input."""

    def __init__(self, card: ModelCard, frame_channels: int, dtype: np.dtype[np.generic]):
        to_255 = 1 / 257 if dtype == np.uint16 else 1.0
        scale, offset = card.normalization.per_channel(card.in_channels)
        self.scale = [s * to_255 for s in scale]
        self.offset = offset
        self.luma = card.in_channels == 1 and frame_channels == 3
        self.replicate = card.in_channels == 3 and frame_channels == 1

    def __call__(self, raw: np.ndarray, dest: npt.NDArray[np.float32]) -> None:
        if self.luma:
            np.multiply(raw[..., 0], LUMA[0] * self.scale[0], out=dest[0])
            dest[0] += raw[..., 1] * np.float32(LUMA[1] * self.scale[0])
            dest[0] += raw[..., 2] * np.float32(LUMA[2] * self.scale[0])
            dest[0] += self.offset[0]
            return
        for c in range(dest.shape[0]):
            source = raw[..., 0] if self.replicate else raw[..., c]
            np.multiply(source, np.float32(self.scale[c]), out=dest[c])
            dest[c] += np.float32(self.offset[c])


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1
    np.reciprocal(x, out=x)
    return x


def _softmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def check_frame(frame: np.ndarray) -> np.ndarray:
    """The frame as H x W x C (C = 1 or 3, alpha dropped, a view), or ImageShapeError."""
    if frame.dtype not in (np.uint8, np.uint16):
        raise ImageShapeError(f"pixels must be uint8 or uint16, got {frame.dtype}")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 2, 3, 4):
        raise ImageShapeError(
            f"a frame is H x W with 1-4 channels (gray, gray+alpha, RGB, RGBA), got {frame.shape}"
        )
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ImageShapeError(f"the image is empty: {frame.shape[1]} x {frame.shape[0]} px")
    return frame[:, :, : 1 if frame.shape[2] <= 2 else 3]


@dataclass(frozen=True)
class Prediction:
    """probabilities: P x H x W float32 (P = 1 for sigmoid: p(foreground); K for softmax)."""

    probabilities: npt.NDArray[np.float32]
    mask: npt.NDArray[np.uint8]
    tiles: int


class Predictor:
    """Tiled, normalised, optionally flip-averaged prediction with one model.

    run: ``N x C x h x w float32 -> N x K x h' x w'`` logits (an Engine's ``run``).
    tile_size: largest input tile side (px); batch_size: tiles per ``run`` call.
    margin: same-padding models only, pixels discarded at inner tile borders.
    fixed_shape: one input shape (batch_size x C x tile x tile) for every image
        (GPU providers; see plan.plan_axis), else tiles shrink to fit (CPU).
    """

    def __init__(
        self,
        run: RunFn,
        card: ModelCard,
        *,
        tile_size: int = CPU_TILE_SIZE,
        batch_size: int = CPU_BATCH_SIZE,
        margin: int = DEFAULT_MARGIN,
        fixed_shape: bool = False,
    ):
        self.card = card
        self.geometry = card.geometry()
        self.margin, self.fixed_shape = margin, fixed_shape
        if self.geometry.valid_size_at_most(tile_size) is None:
            raise ValueError(
                f"tile_size {tile_size} is below the model's minimum input {card.min_size}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tile_size, self.batch_size = tile_size, batch_size
        self._run = run
        self._activate = _sigmoid if card.activation == "sigmoid" else _softmax

    def plan(self, height: int, width: int) -> TilePlan:
        """Where the tiles of a frame of this size go."""
        return plan_tiles(
            height, width, self.geometry, self.tile_size, self.margin, self.fixed_shape
        )

    def work(self, height: int, width: int, tta: bool = False) -> int:
        """Network input pixels a frame of this size costs: tiles x tile area (x 4 with TTA)."""
        plan = self.plan(height, width)
        th, tw = plan.tile_shape
        return len(plan) * th * tw * (len(FLIPS) if tta else 1)

    def _predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        logits = np.asarray(self._run(batch), dtype=np.float32)
        if logits.shape[1] != self.card.out_channels:
            raise ValueError(
                f"the model returned {logits.shape[1]} channels, its card promises "
                f"{self.card.out_channels}"
            )
        return self._activate(logits)

    def probabilities(
        self, frame: np.ndarray, *, tta: bool = False, progress: ProgressFn | None = None
    ) -> tuple[npt.NDArray[np.float32], int]:
        """P x H x W probabilities of a frame, and the number of tiles run."""
        image = check_frame(frame)
        prepare = Normalizer(self.card, image.shape[2], image.dtype)
        height, width = image.shape[:2]
        probs = np.zeros((self.card.out_channels, height, width), dtype=np.float32)
        flips = FLIPS if tta else FLIPS[:1]
        mean = FlipMean(probs, flips)
        finished = 0
        for fy, fx in flips:

            def count(done: int, total: int, before: int = finished) -> None:
                if progress is not None:
                    progress(before + done, total * len(flips))

            finished += run_tiles(
                image[::fy, ::fx],
                self._predict,
                self.geometry,
                mean.view(fy, fx) if tta else ArraySink(height, width, probs),
                channels=self.card.in_channels,
                tile_size=self.tile_size,
                batch_size=self.batch_size,
                prepare=prepare,
                progress=count,
                margin=self.margin,
                fixed_shape=self.fixed_shape,
            )
        return (mean.finish() if tta else probs), finished

    def mask(self, probs: npt.NDArray[np.float32], threshold: float = 0.5) -> npt.NDArray[np.uint8]:
        """H x W class indices: p >= threshold for binary models, argmax for K >= 3."""
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if self.card.out_channels <= 2:
            foreground = probs[0] if self.card.activation == "sigmoid" else probs[1]
            mask: npt.NDArray[np.uint8] = (foreground >= threshold).view(np.uint8)
        else:
            mask = probs.argmax(axis=0).astype(np.uint8)
        return mask

    def predict_block(
        self,
        image: Region,
        grid: BlockGrid,
        block: Block,
        *,
        threshold: float = 0.5,
        tta: bool = False,
        progress: ProgressFn | None = None,
    ) -> Prediction:
        """One block of a large H x W x C image (uint8/uint16, C = 1 or 3; a lazy reader or
        an array): equal, bit for bit, to that block of ``predict`` of the whole image.

        tta: the mean over the four flips, as ``predict`` makes it: for each flip, the
        block's mirror in the flipped image is predicted with the same plan and added
        back in place, in the same order, then divided by four.
        progress: ``(tiles done, tiles)`` after each batch, counted afresh for each flip.
        """
        if not tta:  # the block's own array: no copy
            probs, tiles = self._mirrored_block(image, grid, block, *FLIPS[0], progress)
            return Prediction(probs, self.mask(probs, threshold), tiles)
        shape = (self.card.out_channels, *block.shape)
        mean, tiles = FlipMean(np.zeros(shape, np.float32), FLIPS), 0
        for fy, fx in mean.flips:
            probs, more = self._mirrored_block(image, grid, block, fy, fx, progress)
            mean.add(fy, fx, probs)
            tiles += more
        total = mean.finish()
        return Prediction(total, self.mask(total, threshold), tiles)

    def _mirrored_block(
        self,
        image: Region,
        grid: BlockGrid,
        block: Block,
        fy: int,
        fx: int,
        progress: ProgressFn | None = None,
    ) -> tuple[npt.NDArray[np.float32], int]:
        """The probabilities of ``block``'s mirror in ``image[::fy, ::fx]``, and the tiles run."""
        view = Flipped(image, fy, fx)
        mirror = view.block(block)
        window = Window(view, grid.reads(mirror))
        sink = BlockSink(mirror.rows, mirror.cols, self.card.out_channels)
        tiles = run_plan(
            window,
            self._predict,
            self.geometry,
            sink,
            grid.plan,
            grid.tiles(mirror),
            channels=self.card.in_channels,
            batch_size=self.batch_size,
            prepare=Normalizer(self.card, image.shape[2], window.dtype),
            progress=progress,
            fixed_shape=self.fixed_shape,
        )
        return sink.array, tiles

    def predict(
        self,
        frame: np.ndarray,
        *,
        threshold: float = 0.5,
        tta: bool = False,
        progress: ProgressFn | None = None,
    ) -> Prediction:
        probs, tiles = self.probabilities(frame, tta=tta, progress=progress)
        return Prediction(probs, self.mask(probs, threshold), tiles)
