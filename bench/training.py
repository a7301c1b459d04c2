"""Training throughput: tiles per second (forward + loss + backward + Adam step).

    python -m bench.training                       # CPU, bases 16/32/64, a short run (< 2 min)
    python -m bench.training --device cuda --amp   # the GPU with mixed precision
    python -m bench.training --bases 32 64 --steps 5 --tile 572 --batch 1

The paper's network (valid padding, depth 4) on 572 x 572 input tiles with
random data: the loop of ``training.train`` without the data loader, so the
figure is the network's cost. The epoch estimate is for the ISBI 2012 slices:
25 slices of 512 x 512, 4 output tiles of 388 px each to cover one, so 100
tiles per epoch (80 with the default 20 % held out for validation).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch

from training.config import UNetConfig
from training.losses import SegmentationLoss
from training.unet import UNet

ISBI_SLICES, ISBI_SIDE = 25, 512


def measure(
    base: int, *, tile: int, batch: int, steps: int, device: str, amp: bool
) -> dict[str, Any]:
    """Seconds per step and tiles/s after one warm-up step."""
    torch.manual_seed(0)
    config = UNetConfig(base_channels=base)
    model = UNet(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = SegmentationLoss()
    out = tile - 2 * config.halo
    image = torch.randn(batch, 1, tile, tile, device=device)
    label = torch.randint(0, 2, (batch, out, out), device=device)
    weight = torch.ones(batch, out, out, device=device)

    def step() -> None:
        with torch.autocast(torch.device(device).type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(model(image), label, weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    step()  # warm-up: allocator, kernel selection
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    tiles_per_s = batch / seconds
    per_slice = math.ceil(ISBI_SIDE / out) ** 2
    epoch_tiles = ISBI_SLICES * per_slice
    return {
        "base": base,
        "tile": tile,
        "batch": batch,
        "device": device,
        "amp": amp,
        "threads": torch.get_num_threads(),
        "seconds_per_step": round(seconds, 4),
        "tiles_per_s": round(tiles_per_s, 3),
        "isbi_epoch_tiles": epoch_tiles,
        "isbi_epoch_seconds": round(epoch_tiles / tiles_per_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--tile", type=int, default=572)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="float16 autocast (CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for base in args.bases:
        result = measure(
            base,
            tile=args.tile,
            batch=args.batch,
            steps=args.steps,
            device=args.device,
            amp=args.amp and args.device.startswith("cuda"),
        )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
