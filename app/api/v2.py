"""The Open Inference Protocol (KServe v2, REST) for KServe, Triton clients
(``tritonclient.http``) and gateways that speak it: server and model metadata, health,
and inference with JSON or binary tensor data. The same repository, limits, auth,
admission and tiler as POST /segment; errors are the protocol's ``{"error": "..."}``
(app/api/errors.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.auth import Authorized
from app.api.deps import AdmissionDep, ModelsDep
from app.api.upload import body_chunks, watching_disconnect
from app.codecs.tensors import OUTPUTS, request_schema
from app.errors import BadParameterError, ModelNotFoundError, RequestCancelledError
from app.models import Repository
from app.pipeline.tensors import answer_request
from app.service import LARGE_WORK, Service

HEADER_LENGTH = "Inference-Header-Content-Length"


class V2Error(BaseModel):
    """The protocol's error body."""

    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[Tensor]
    outputs: list[Tensor]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": V2Error, "description": "the protocol's error"} for status in statuses
    }


router = APIRouter(prefix="/v2", tags=["open inference protocol"])
SERVER = ServerMetadata(
    name="unet-segmentation", version="0.1.0", extensions=["binary_tensor_data"]
)
NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": Ready, "description": "not ready"}}


def _named(models: Repository, name: str) -> Service:
    """The model's ready Service: 404 for a name the repository has not, 503 while loading."""
    if name not in models.names():
        raise ModelNotFoundError(f"unknown model {name[:100]!r}; the models: {models.names()}")
    return models.get(name)


def _ready(ok: bool) -> JSONResponse:
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("", summary="Server metadata", response_model=ServerMetadata)
def server_metadata() -> ServerMetadata:
    return SERVER


@router.get("/health/live", summary="Server live", response_model=Live)
def server_live() -> Live:
    return Live(live=True)


@router.get(
    "/health/ready",
    summary="Server ready: the default model answers",
    response_model=Ready,
    responses=NOT_READY,
)
def server_ready(request: Request) -> JSONResponse:
    models: Repository | None = getattr(request.app.state, "models", None)
    return _ready(models is not None and models.primary() is not None)


@router.get(
    "/models/{name}",
    summary="Model metadata",
    dependencies=[Authorized],
    response_model=ModelMetadata,
    responses=_errors(401, 404, 422, 503),
)
def model_metadata(name: str, models: ModelsDep) -> dict[str, Any]:
    card = _named(models, name).model.card
    channels = [] if card.in_channels == 1 else [card.in_channels]
    return {
        "name": name,
        "versions": [card.version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, -1, *channels]}],
        "outputs": [
            {"name": "mask", "datatype": OUTPUTS["mask"], "shape": [-1, -1, -1]},
            {
                "name": "probability",
                "datatype": OUTPUTS["probability"],
                "shape": [-1, card.out_channels, -1, -1],
            },
        ],
    }


@router.get(
    "/models/{name}/ready",
    summary="Model ready",
    dependencies=[Authorized],
    response_model=Ready,
    responses={**_errors(401, 404, 422), **NOT_READY},
)
def model_ready(name: str, models: ModelsDep) -> JSONResponse:
    if name not in models.names():
        raise ModelNotFoundError(f"unknown model {name[:100]!r}; the models: {models.names()}")
    return _ready(models.find(name) is not None)


async def _body(request: Request, service: Service) -> bytes:
    settings = service.settings
    limit = f"UNET_MAX_UPLOAD_BYTES; {LARGE_WORK}"
    chunks = body_chunks(
        request, settings.max_upload_bytes, limit, settings.body_timeout, service.stopping
    )
    return b"".join([chunk async for chunk in chunks])


_OUTPUT = {"type": "object", "description": "the protocol's inference response"}
INFER_BODY: dict[str, Any] = {
    "required": True,
    "description": "the protocol's inference request: JSON, or its JSON header of "
    f"{HEADER_LENGTH} bytes followed by the tensors' binary data",
    "content": {
        "application/json": {"schema": request_schema()},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the outputs: JSON, or (binary_data) a JSON header of "
        f"{HEADER_LENGTH} bytes followed by the tensors' bytes",
        "content": {
            "application/json": {"schema": _OUTPUT},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **_errors(400, 401, 404, 408, 413, 422, 503),
}


@router.post(
    "/models/{name}/infer",
    summary="Inference",
    dependencies=[Authorized],
    response_class=Response,
    responses=INFER_RESPONSES,
    openapi_extra={"requestBody": INFER_BODY},
)
async def infer(
    name: str, request: Request, models: ModelsDep, admission: AdmissionDep
) -> Response:
    """One image as the input tensor (UINT8 or UINT16; [H, W], [H, W, C] or [N, H, W(, C)]);
    outputs ``mask`` (UINT8 [N, H, W]) and ``probability`` (FP32 [N, P, H, W])."""
    service = _named(models, name)
    declared = request.headers.get(HEADER_LENGTH)
    if declared is not None and not (declared.isascii() and declared.isdigit()):
        raise BadParameterError(f"header {HEADER_LENGTH} must be a byte count: {declared[:40]!r}")
    with admission.reserve() as ticket:
        body = await _body(request, service)
        length = int(declared) if declared else None
        async with watching_disconnect(request) as cancelled:

            def check(done: int = 0, total: int = 0) -> None:
                if cancelled.is_set():
                    raise RequestCancelledError("the client closed the connection", done, total)

            answer = await ticket.run(lambda: answer_request(body, length, name, service, check))
    tally = answer.tally
    pixels = answer.width * answer.height * tally.frames
    service.metrics.segmented(name, pixels, tally.tiles, tally.inference)
    request.state.log = {"model": name, "image": f"{answer.width}x{answer.height}x{tally.frames}"}
    content, header_length = answer.content, answer.header_length
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(header_length)},
    )
