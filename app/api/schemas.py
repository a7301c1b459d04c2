"""Response bodies of ../shared/API.md as pydantic models (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.inference.card import ModelCard


class ModelRef(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="SHA-256 of the ONNX file, hex")


class RLE(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE string (column-major)")


class Segment(BaseModel):
    class_index: int = Field(description="1 .. len(classes) - 1")
    label: str = Field(description="the class name from the model card")
    area: int = Field(description="pixels of the class")
    bbox: list[int] = Field(description="[x, y, w, h] in px; [0, 0, 0, 0] when area is 0")
    rle: RLE
    frame: int | None = Field(None, description="0-based frame index (multi-frame inputs only)")


class RLEResponse(BaseModel):
    """``format=rle``: one segment per non-background class (per frame for multi-frame input)."""

    height: int
    width: int
    model: ModelRef
    segments: list[Segment]


class ObjectRow(BaseModel):
    id: int = Field(description="1 .. N (over all frames for multi-frame input)")
    class_index: int
    label: str
    area: int = Field(description="pixels")
    bbox: list[int] = Field(description="[x, y, w, h] in px")
    centroid: list[float] = Field(description="[x, y], pixel-corner coordinates")
    score: float = Field(description="the object's mean probability of its class")
    rle: RLE
    frame: int | None = Field(None, description="0-based frame index (multi-frame inputs only)")


class ObjectsResponse(BaseModel):
    """``format=objects``: one row per object."""

    height: int
    width: int
    model: ModelRef
    objects: list[ObjectRow]


class Status(BaseModel):
    status: Literal["live", "ready", "not ready"]


class ModelName(BaseModel):
    name: str
    version: str


class HealthResponse(BaseModel):
    status: Literal["ready", "not ready"]
    model: ModelName | None = None
    provider: str | None = Field(None, description="the execution provider in use")
    precision: Literal["fp32", "bf16", "fp16"] | None = Field(
        None, description="the precision the network runs in (UNET_PRECISION, resolved)"
    )


class Tiling(BaseModel):
    tile_size: int = Field(description="largest input tile side, px")
    batch_size: int = Field(description="tiles per network run")
    fixed_shape: bool = Field(description="one input shape for every image (GPU providers)")


class ModelInfo(ModelCard):
    """``GET /model``: the model card's fields, where the card came from, the file's hash,
    the providers, the precision and the tiling."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # the card's own extras stay out

    card: Literal["sidecar", "embedded", "inferred"] = Field(
        description="where the card came from: a sidecar JSON beside the model, the model's "
        "own metadata, or inferred by probing the network (every field then an assumption)"
    )
    model: str = Field(description="the model's name in the repository (model=, GET /models)")
    sha256: str
    providers: list[str]
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        description="the precision the network runs in (UNET_PRECISION, resolved)"
    )
    tiling: Tiling


class JobInput(BaseModel):
    name: str = Field(description="the uploaded file's name, or the source's; 'image' if none")
    width: int
    height: int
    frames: int


class JobProgress(BaseModel):
    tiles_done: int = Field(description="network tiles run so far (rises to tiles_total)")
    tiles_total: int


class JobView(BaseModel):
    """A job, as ``POST /jobs``, ``GET /jobs`` and ``GET /jobs/{id}`` show it."""

    id: str = Field(description="UUID4")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    format: str
    input: JobInput
    progress: JobProgress
    stage: str | None = Field(
        description="while running: tiles, then for large images objects, outlines, levels"
    )
    eta_seconds: float | None = Field(description="seconds left of the tiles, at their pace")
    created: str = Field(description="ISO 8601, UTC")
    started: str | None
    finished: str | None
    error: str | None = Field(description="why it failed")
    result: str | None = Field(description="the result's URL once the job has succeeded")
    background_skipped: float | None = Field(
        None,
        description="skip_background=true: the fraction of the image's area not predicted, "
        "once the job has succeeded",
    )


class JobList(BaseModel):
    jobs: list[JobView] = Field(description="newest first")


class ModelListing(BaseModel):
    name: str = Field(description="the name requests use (model=): the file's stem")
    version: str | None = Field(None, description="the card's version of the one that answers")
    ready: bool = Field(description="loaded and warm: it answers")
    default: bool = Field(description="the model of requests that name none")
    card: dict[str, Any] | None = Field(None, description="the model card of the one that answers")
    error: str | None = Field(None, description="why the file last seen could not be loaded")


class ModelsResponse(BaseModel):
    """``GET /models``."""

    models: list[ModelListing]
    default: str | None = Field(None, description="UNET_DEFAULT_MODEL, else the only model")
    chosen: str | None = Field(
        None, description="with ?modality=: the model for a series of it (null: none fits)"
    )
    reason: str | None = Field(None, description="with ?modality=: why that model, or none")
