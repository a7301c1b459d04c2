"""The training loop: ``python -m training train --data DIR --out RUN_DIR [options]``.

Reads top to bottom: 1. devices and seeds, 2. data, 3. model and optimiser
(or resume), 4. epochs (train tiles, then validate whole images through
app.inference's tiler -- what we measure is what we serve), 5. records.

Multi-GPU: ``torchrun --nproc_per_node=4 -m training train ...`` -- PyTorch's
DistributedDataParallel, set up from the WORLD_SIZE/RANK/LOCAL_RANK variables
torchrun exports; rank 0 validates and writes the run folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from app.inference import Predictor
from app.inference.card import parse_card
from training.augment import Augment
from training.checkpoint import model_card, read_record, save_checkpoint
from training.config import TrainConfig
from training.data import TileDataset, load_samples, normalization_stats, split_names
from training.evaluate import evaluate_masks, predictor_masks, torch_runner
from training.losses import SegmentationLoss
from training.records import flatten, plot_curves, write_metrics
from training.unet import UNet


@dataclasses.dataclass(frozen=True)
class Dist:
    """Where this process stands: rank 0 of 1 without torchrun."""

    rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_devices(cfg: TrainConfig) -> Dist:
    """DDP when torchrun set WORLD_SIZE > 1 (NCCL on GPUs, Gloo on CPUs), else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        return Dist(dist.get_rank(), world, device)
    if cfg.device == "auto":
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r} asked for, but torch sees no CUDA device")
    return Dist(device=torch.device(cfg.device))


def tiles_to_cover(shapes: list[tuple[int, int]], out: int) -> int:
    """Output tiles of side ``out`` that cover the images once (ISBI 512^2, 388: 4 each)."""
    return sum(math.ceil(h / out) * math.ceil(w / out) for h, w in shapes)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":  # the paper: SGD, momentum 0.99, batches of one large tile
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The rate of ``epoch`` (1-based), a function of the epoch alone, so ``--resume`` goes on
    along the same schedule: ``cfg.lr`` up to ``decay_from``, then (cosine) a half cosine that
    reaches ``min_lr`` at the last epoch."""
    if cfg.schedule == "constant" or epoch <= cfg.decay_from:
        return cfg.lr
    progress = min(1.0, (epoch - cfg.decay_from) / (cfg.epochs - cfg.decay_from))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_hyperparameters(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> None:
    """The config's lr (and decay, momentum) over what a restored optimiser state says, so
    ``--resume --lr 1e-4`` really lowers the rate (load_state_dict restores the old one)."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr
        group["weight_decay"] = cfg.weight_decay
        if "momentum" in group:
            group["momentum"] = cfg.momentum


def validate(
    model: UNet, card: dict[str, Any], samples: list[Any], cfg: TrainConfig, device: torch.device
) -> dict[str, Any]:
    """Whole validation images through app.inference's Predictor (the service's tiler)."""
    model.eval()
    predictor = Predictor(
        torch_runner(model, device),
        parse_card(card, "training card"),
        tile_size=cfg.val_tile_size,
        batch_size=cfg.val_batch_size,
    )
    return evaluate_masks(predictor_masks(predictor), samples, list(cfg.classes), cfg.objects)


def honest_split(
    cfg: TrainConfig, train_names: list[str], val_names: list[str], val_samples: list[Any]
) -> tuple[dict[str, list[str]], list[Any], list[Any]]:
    """(the split the card records, the validation samples that choose, those that only
    report). With ``select_images`` N > 0 the first N validation images choose the best
    epoch (and, later, the threshold and seed) and the others are only measured."""
    split = {"train": train_names, "val": val_names}
    if not cfg.select_images:
        return split, val_samples, []
    if cfg.select_images >= len(val_names):
        raise ValueError(
            f"select_images {cfg.select_images} leaves none of the {len(val_names)} "
            "validation images to report on"
        )
    select, report = val_names[: cfg.select_images], val_names[cfg.select_images :]
    chosen = [s for s in val_samples if s.name in set(select)]
    measured = [s for s in val_samples if s.name in set(report)]
    return {**split, "select": select, "report": report}, chosen, measured


def train(cfg: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) training; returns {"best": ..., "last_epoch": ..., "run_dir": ...}."""
    if not cfg.data or not cfg.out:
        raise ValueError("give --data DIR (image/ and label/) and --out RUN_DIR")
    run_dir = Path(cfg.out)
    record = read_record(run_dir / "last.pt") if resume else None

    # 1. Devices and seeds -------------------------------------------------------------
    env = setup_devices(cfg)
    amp = cfg.amp and env.device.type == "cuda"
    torch.manual_seed(cfg.seed)

    # 2. Data: a deterministic split, normalisation from the training images ------------
    samples = load_samples(
        cfg.data,
        label_mode=cfg.label_mode,
        foreground_value=cfg.foreground_value,
        num_classes=cfg.model.num_classes,
    )
    train_names, val_names = split_names([s.name for s in samples], cfg.val_fraction, cfg.seed)
    train_samples = [s for s in samples if s.name in set(train_names)]
    val_samples = [s for s in samples if s.name in set(val_names)]
    normalization = normalization_stats(train_samples)
    halo, out = cfg.model.halo, cfg.tile_size - 2 * cfg.model.halo
    length = cfg.tiles_per_epoch or tiles_to_cover([s.label.shape for s in train_samples], out)
    length = max(length, cfg.batch_size * env.world)
    dataset = TileDataset(
        train_samples,
        tile_size=cfg.tile_size,
        halo=halo,
        length=length,
        num_classes=cfg.model.num_classes,
        normalization=normalization,
        augment=Augment(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Augment)}),
        weight_map=cfg.weight_map,
        objects=cfg.objects,
        w0=cfg.w0,
        sigma=cfg.sigma,
        seed=cfg.seed,
    )
    sampler: DistributedSampler[dict[str, torch.Tensor]] | None = (
        DistributedSampler(dataset, env.world, env.rank, shuffle=False) if env.world > 1 else None
    )
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=env.device.type == "cuda",
        drop_last=True,
    )

    # 3. Model, loss, optimiser, AMP scaler (restored on --resume) ---------------------
    model = UNet(cfg.model).to(env.device)
    optimizer = make_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "metrics": None}
    first_epoch = 1
    if record is not None:
        model.load_state_dict(record["model"])
        optimizer.load_state_dict(record["optimizer"])
        set_hyperparameters(cfg, optimizer)  # the state dict holds the old run's lr
        scaler.load_state_dict(record["scaler"])
        history, best, first_epoch = record["history"], record["best"], record["epoch"] + 1
    net: torch.nn.Module = model
    if env.world > 1:
        if env.device.type == "cuda" and cfg.model.batch_norm:
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(
            net, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    loss_fn = SegmentationLoss(cfg.dice_weight, cfg.ce_weight, cfg.side_weight, cfg.image_weight)
    split, select_samples, report_samples = honest_split(cfg, train_names, val_names, val_samples)
    if env.main:
        run_dir.mkdir(parents=True, exist_ok=True)

    # 4. Epochs ----------------------------------------------------------------------
    for epoch in range(first_epoch, cfg.epochs + 1):
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout: reproducible after --resume
        dataset.set_epoch(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        net.train()
        started, total, steps = time.perf_counter(), 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{cfg.epochs}",
            disable=not (cfg.progress and env.main),
            leave=True,
        )
        for batch in bar:
            image = batch["image"].to(env.device, non_blocking=True)  # N x C x T x T
            label = batch["label"].to(env.device, non_blocking=True)  # N x T' x T'
            weight = batch["weight"].to(env.device, non_blocking=True)  # N x T' x T'
            present = batch["present"].to(env.device, non_blocking=True)  # N x (classes - 1)
            with torch.autocast(env.device.type, dtype=torch.float16, enabled=amp):
                output = net(image)  # logits N x K x T' x T'
                loss = loss_fn(output, label, weight, present)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total, steps = total + float(loss.detach()), steps + 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": total / max(steps, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 3),
            "tiles": steps * cfg.batch_size * env.world,
        }
        metrics = None
        if env.main and (epoch % cfg.val_every == 0 or epoch == cfg.epochs):
            card = model_card(cfg, normalization, split=split, epoch=epoch)
            metrics = validate(model, card, select_samples, cfg, env.device)
            row.update(flatten(metrics))
            if report_samples:  # measured, never chosen on
                row.update(
                    flatten(validate(model, card, report_samples, cfg, env.device), "report_")
                )
            bar.set_postfix(
                loss=f"{row['train_loss']:.4f}",
                val_dice=f"{metrics['mean_dice']:.4f}",
                val_iou=f"{metrics['mean_iou']:.4f}",
            )
        bar.close()
        if env.main:
            history.append(row)
            improved = metrics is not None and (
                best["metrics"] is None or metrics["mean_dice"] > best["metrics"]["mean_dice"]
            )
            if improved:
                best = {"epoch": epoch, "metrics": metrics}
            state = {
                "config": cfg.to_dict(),
                "model": model.state_dict(),
                "normalization": list(normalization),
                "split": split,
                "epoch": epoch,
                "metrics": metrics,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "history": history,
                "best": best,
            }
            save_checkpoint(run_dir / "last.pt", state)
            if improved:
                save_checkpoint(run_dir / "best.pt", state)
            write_metrics(run_dir, history, best)
        if env.world > 1:
            dist.barrier()  # the other ranks wait for rank 0's validation and checkpoint

    # 5. Records ------------------------------------------------------------------------
    if env.main and history:
        plot_curves(run_dir, history)
    if env.world > 1:
        dist.destroy_process_group()
    return {"run_dir": str(run_dir), "best": best, "last_epoch": cfg.epochs}
