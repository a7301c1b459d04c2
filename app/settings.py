"""Settings: every knob of the service, from ``UNET_*`` environment variables.

Built in the app's lifespan (never at import), validated at once: a bad value
stops start-up with one log line naming the variable and what it accepts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.inference.predictor import CPU_BATCH_SIZE, CPU_TILE_SIZE, GPU_BATCH_SIZE, GPU_TILE_SIZE
from app.inference.providers import AUTO, CHOICES, PRECISIONS, AlgoSearch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / "model" / "unet.onnx"
MiB = 1 << 20
GiB = 1 << 30


class Settings(BaseSettings):
    """The service's configuration; each field ``foo`` is read from ``UNET_FOO``."""

    model_config = SettingsConfigDict(env_prefix="UNET_", extra="ignore", frozen=True)

    model_path: Path = Field(DEFAULT_MODEL, description="ONNX model file to serve")
    model_repository: Path | None = Field(
        None,
        description="a folder of models, each DIR/<name>.onnx served as <name>; replaces "
        "model_path",
    )
    default_model: str | None = Field(
        None, description="with a repository: the model of requests that name none"
    )
    repository_poll: float = Field(
        10.0, ge=0, description="seconds between looks at the repository (0: never again)"
    )
    providers: str = Field(
        AUTO, description=f"execution providers, one of {', '.join(CHOICES)} (engine.PROVIDERS)"
    )
    precision: str = Field(
        AUTO,
        description=f"one of {', '.join(PRECISIONS)}: auto = bf16 on CPUs with AVX512-BF16 or "
        "AMX (OpenVINO), fp16 on TensorRT, else fp32",
    )
    threads: int = Field(0, ge=0, description="intra-op threads; 0 = one per physical core")
    tile_size: int | None = Field(
        None,
        ge=1,
        description=f"largest tile side, px (default {CPU_TILE_SIZE} CPU, {GPU_TILE_SIZE} GPU)",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description=f"tiles per run (default {CPU_BATCH_SIZE} CPU, {GPU_BATCH_SIZE} GPU)",
    )
    max_upload_bytes: int = Field(64 * MiB, ge=1, description="largest request body, bytes")
    max_image_pixels: int = Field(
        64 * MiB, ge=1, description="largest image, width x height x frames (inclusive)"
    )
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated API keys; empty = open"
    )
    log_format: Literal["text", "json"] = Field("text", description="log lines as text or JSON")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_queue: int = Field(
        8, ge=0, description="requests that may wait for the model; beyond: 503 + Retry-After"
    )
    max_frames: int = Field(1000, ge=1, description="largest number of pages/frames per request")
    device_id: int = Field(0, ge=0, description="GPU providers: the device's index")
    cudnn_conv_algo_search: AlgoSearch = Field(
        "EXHAUSTIVE", description="CUDA: cuDNN's algorithm search (once, at warm-up: fixed shapes)"
    )
    trt_cache_dir: Path | None = Field(
        None, description="TensorRT: engine and timing caches (a volume); unset: no cache"
    )
    trt_fp16: bool = Field(True, description="TensorRT: build fp16 engines")
    body_timeout: float = Field(
        30.0, gt=0, description="seconds a request body may stall (no byte) before 408"
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated origins allowed by CORS; empty = no CORS"
    )
    jobs_dir: Path = Field(
        Path(tempfile.gettempdir()) / "unet-jobs",
        description="where jobs, their inputs and results live (a volume in Docker)",
    )
    job_max_bytes: int = Field(20 * GiB, ge=1, description="largest job upload, bytes")
    job_source_root: Path | None = Field(
        None, description="the folder whose files jobs may name as source; unset: uploads only"
    )
    job_source_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated DICOMweb URL prefixes whose series jobs may name as "
        "source (https://pacs/dicom-web/); unset: none",
    )
    dicomweb_token: str | None = Field(
        None, description="a Bearer token sent with DICOMweb requests for job sources"
    )
    dask_scheduler: str | None = Field(
        None,
        description="a Dask scheduler (tcp://scheduler:8786) whose workers run the jobs' "
        "tiles; unset: the service runs them",
    )
    job_ttl: float = Field(
        86400.0, gt=0, description="seconds a finished job and its result are kept"
    )
    job_max_queue: int = Field(
        32, ge=1, description="jobs queued, running or being submitted at once; beyond: 503"
    )
    job_min_free_bytes: int = Field(
        GiB, ge=0, description="new jobs and uploads stop (507) below this much free space"
    )

    @field_validator("api_keys", "cors_origins", "job_source_urls", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("model_repository", "default_model", mode="before")
    @classmethod
    def _unset(cls, value: object) -> object:
        """An empty value (compose's ``${VAR:-}``) is no value, not the current folder."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_format", "log_level", "providers", "precision", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("cudnn_conv_algo_search", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("providers", "precision")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        known = CHOICES if info.field_name == "providers" else PRECISIONS
        if value not in known:
            raise ValueError(f"Input should be {', '.join(map(repr, known))}")
        return value

    def tiling(self, on_gpu: bool) -> tuple[int, int]:
        """(tile_size, batch_size): the configured ones, else the defaults for the device."""
        tile, batch = (GPU_TILE_SIZE, GPU_BATCH_SIZE) if on_gpu else (CPU_TILE_SIZE, CPU_BATCH_SIZE)
        return self.tile_size or tile, self.batch_size or batch


def describe(exc: ValidationError) -> str:
    """One line naming every bad ``UNET_*`` variable and what it accepts."""
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        secret = field in ("api_keys", "dicomweb_token")
        shown = "<redacted>" if secret else repr(err.get("input"))
        problems.append(f"UNET_{field.upper()}={shown}: {err['msg']}")
    return "invalid configuration: " + "; ".join(problems)
