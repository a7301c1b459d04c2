"""ONNX export: ``python -m training export --checkpoint run/best.pt --out model.onnx [--fp16]``.

The file the service serves with no further configuration: input ``image``
N x C x H x W float32 with dynamic N, H, W; outputs ``logits`` N x K x H' x W'
(and ``image_scores`` N x (classes - 1) with the classification head); the
model card of API.md embedded as JSON in ``metadata_props["unet"]``. The export
is checked by ``onnx.checker`` and by a parity run against ONNX Runtime on
random inputs of several valid sizes; a max abs difference above the tolerance
(1e-4 for fp32) fails the export and deletes the file.

The legacy TorchScript exporter (``dynamo=False``) is used on purpose: it needs
no onnxscript, handles the dynamic H/W of a fully convolutional net, and its
graph is plain Conv/Relu/MaxPool/ConvTranspose/Slice/Concat/Resize.
"""

from __future__ import annotations

import argparse
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from training.checkpoint import Checkpoint, card_of, load_checkpoint
from training.unet import UNet

OPSET = 17
FP32_TOLERANCE = 1e-4
# fp16 weights and activations: ~3 significant digits, errors grow with depth.
FP16_TOLERANCE = 5e-2


class ExportParityError(RuntimeError):
    """ONNX Runtime's output differs from torch's beyond the tolerance."""


class _Exportable(nn.Module):
    """UNetOutput -> the tensors the file declares: logits (, image_scores).

    fp16: the graph takes and returns float32 (the service's contract) and casts
    to half inside, so only the weights and the arithmetic are fp16.
    """

    def __init__(self, model: UNet, fp16: bool = False) -> None:
        super().__init__()
        self.model, self.fp16 = model, fp16

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.model(image.half() if self.fp16 else image)
        logits = out.logits.float()
        if out.image_scores is None:
            return logits
        return logits, out.image_scores.float()


def output_names(model: UNet) -> list[str]:
    return ["logits", "image_scores"] if model.config.classification_head else ["logits"]


def to_onnx(model: UNet, card: dict[str, Any] | None = None, fp16: bool = False) -> onnx.ModelProto:
    """Trace ``model`` (eval mode, CPU) into an ONNX model with the card embedded."""
    model = model.eval().cpu()
    wrapper = _Exportable(model.half() if fp16 else model, fp16)
    size = model.config.min_size
    example = torch.zeros(1, model.config.in_channels, size, size)
    names = output_names(model)
    dynamic = {"image": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N", 2: "Ho", 3: "Wo"}}
    if "image_scores" in names:
        dynamic["image_scores"] = {0: "N"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter is chosen deliberately (module docstring): its notice
        # that a newer exporter exists, and the deprecations raised from its own
        # internals, are not actionable by the caller.
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        torch.onnx.export(
            wrapper,
            (example,),
            buffer,  # type: ignore[arg-type]  # a file object works; the stub says paths
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=names,
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    if fp16:
        model.float()  # .half() converted the caller's module in place
    proto = onnx.load_from_string(buffer.getvalue())
    if card is not None:
        onnx.helper.set_model_props(proto, {"unet": json.dumps(card)})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def parity_sizes(model: UNet) -> list[tuple[int, int, int]]:
    """(N, H, W) of the parity inputs: the smallest valid size, a larger rectangle, a batch."""
    c = model.config
    small = c.min_size if c.padding == "valid" else max(c.min_size, 32)
    return [(1, small, small), (2, small + c.size_multiple, small + 2 * c.size_multiple)]


def parity(model: UNet, proto: onnx.ModelProto, *, fp16: bool = False, seed: int = 0) -> float:
    """Max abs difference, over every output and parity size, of ORT vs the fp32 torch model."""
    model = model.eval().cpu()
    session = ort.InferenceSession(proto.SerializeToString(), providers=_providers(fp16))
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n, h, w in parity_sizes(model):
        x = rng.standard_normal((n, model.config.in_channels, h, w)).astype(np.float32)
        with torch.inference_mode():
            out = model(torch.from_numpy(x))
        expected = [out.logits.numpy()]
        if out.image_scores is not None:
            expected.append(out.image_scores.numpy())
        got = session.run(None, {"image": x})
        for e, g in zip(expected, got, strict=True):
            if e.shape != g.shape:
                raise ExportParityError(f"ONNX output shape {g.shape}, torch {e.shape}")
            worst = max(worst, float(np.abs(e - g).max()))
    return worst


def _providers(fp16: bool) -> list[str]:
    # An fp16 file is meant for GPUs: check it there when this ONNX Runtime can.
    if fp16 and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class ExportReport:
    path: str
    outputs: list[str]
    max_abs_diff: float
    tolerance: float
    fp16: bool


def export_checkpoint(
    checkpoint: Checkpoint | str | Path,
    out: str | Path,
    *,
    fp16: bool = False,
    tolerance: float | None = None,
) -> ExportReport:
    """Export, check and write ``out``; ExportParityError (and no file) past the tolerance."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    card = card_of(ckpt)
    card["precision"] = "fp16" if fp16 else "fp32"
    proto = to_onnx(ckpt.model, card, fp16=fp16)
    tolerance = tolerance if tolerance is not None else (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    diff = parity(ckpt.model, proto, fp16=fp16)
    if diff > tolerance:
        raise ExportParityError(
            f"ONNX Runtime differs from torch by {diff:.3g} (max abs, logits), above the "
            f"tolerance {tolerance:g}; the file was not written"
        )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return ExportReport(str(path), output_names(ckpt.model), diff, tolerance, fp16)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt or last.pt")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--fp16", action="store_true", help="half-precision weights (GPUs)")
    parser.add_argument("--tolerance", type=float, help="parity tolerance (max abs logits)")


def main(args: argparse.Namespace) -> ExportReport:
    report = export_checkpoint(args.checkpoint, args.out, fp16=args.fp16, tolerance=args.tolerance)
    print(
        f"wrote {report.path}: outputs {', '.join(report.outputs)}; ONNX Runtime vs torch "
        f"max abs diff {report.max_abs_diff:.3g} (tolerance {report.tolerance:g})"
    )
    return report
