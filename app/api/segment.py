"""``POST /segment``: an image in (multipart field ``file`` or raw body), a mask out.

The body is read here, on the event loop, with the size limit enforced chunk
by chunk (chunked uploads included); everything CPU-bound happens in the
inference thread (app/api/pipeline.py via Admission).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import Message, Scope

from app.api.deps import Authorized, Service, ServiceDep
from app.api.pipeline import Job, Outcome, run_job
from app.api.schemas import OutputFormat, RLEResponse
from app.errors import BadParameterError, BadUploadError, BodyTooLargeError, ErrorBody

router = APIRouter(tags=["segmentation"])

_IMAGE_TYPES = ("image/png", "image/jpeg", "image/tiff", "application/dicom")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": "The image, as multipart field `file` or as the raw body. The format is "
    "recognised from the bytes (PNG, JPEG, TIFF, DICOM), not from Content-Type.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
        "application/octet-stream": _BINARY,
        **dict.fromkeys(_IMAGE_TYPES, _BINARY),
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "empty body, not an image, truncated or corrupt image, bad multipart body",
        401: "API keys are configured and the request has none or a wrong one",
        413: "body above UNET_MAX_UPLOAD_BYTES, or image above UNET_MAX_IMAGE_PIXELS",
        415: "recognised but unsupported image format, or dicom-seg for a non-DICOM input",
        422: "bad query parameter, or a multi-frame input with a single-frame format",
        503: "not ready, or overloaded (see Retry-After)",
    }.items()
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": RLEResponse,
        "description": "png: 8-bit class-index PNG; probability: 16-bit PNG, round(p * 65535); "
        "rle: JSON (COCO RLE per class); dicom-seg: DICOM Segmentation",
        "content": {"image/png": _BINARY, "application/dicom": _BINARY},
        "headers": {
            "X-Request-ID": {"description": "echoed from the request, else generated"},
            "Server-Timing": {"description": "decode, inference and encode durations, ms"},
        },
    },
    **_ERRORS,
}


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(
            f"the body is {declared} bytes, the limit is {limit} (UNET_MAX_UPLOAD_BYTES)"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(
                f"the body passed {limit} bytes, the limit (UNET_MAX_UPLOAD_BYTES)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def multipart_file(scope: Scope, body: bytes) -> bytes:
    """The bytes of the multipart field ``file`` of an already-read body."""

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(scope, replay).form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadUploadError(
                    "the multipart body has no file field 'file': send it as "
                    "`curl -F file=@image.png`, or send the image as the raw body"
                )
            return await upload.read()
    except (MultiPartException, StarletteHTTPException) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", str(exc))
        raise BadUploadError(f"malformed multipart body: {detail}") from None


def _check_class(service: Service, class_index: int) -> None:
    classes = service.model.card.classes
    if class_index >= len(classes):
        names = ", ".join(f"{i} = {name}" for i, name in enumerate(classes) if i)
        raise BadParameterError(
            f"query parameter 'class' must be in 1..{len(classes) - 1} ({names}), got {class_index}"
        )


def _record(request: Request, service: Service, outcome: Outcome) -> None:
    metrics = service.metrics
    metrics.images.inc()
    metrics.tiles.inc(outcome.tiles)
    metrics.pixels.inc(outcome.width * outcome.height * outcome.frames)
    metrics.inference_duration.observe(outcome.seconds["inference"])
    card = service.model.card
    request.state.log = {
        "model_version": f"{card.name}:{card.version}",
        "input_format": outcome.input_format,
        "image": f"{outcome.width}x{outcome.height}x{outcome.frames}",
        "tiles": outcome.tiles,
        **{f"{stage}_ms": round(s * 1000, 1) for stage, s in outcome.seconds.items()},
    }


@router.post(
    "/segment",
    summary="Segment an image",
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra={"requestBody": _REQUEST_BODY},
    dependencies=[Authorized],
)
async def segment(
    request: Request,
    service: ServiceDep,
    output: Annotated[
        OutputFormat, Query(alias="format", description="what comes back (see responses)")
    ] = OutputFormat.png,
    threshold: Annotated[
        float,
        Query(
            gt=0,
            lt=1,
            description="binary models (sigmoid K = 1, softmax K = 2): foreground where "
            "p >= threshold; ignored (argmax) for K >= 3",
        ),
    ] = 0.5,
    class_index: Annotated[
        int,
        Query(
            alias="class",
            ge=1,
            description="which class's probability format=probability returns, "
            "1 .. len(classes) - 1",
        ),
    ] = 1,
    tta: Annotated[
        bool,
        Query(description="test-time augmentation: mean over identity and the three flips"),
    ] = False,
) -> Response:
    """Segment the image in the body; see the `format` parameter for what comes back."""
    _check_class(service, class_index)
    job = Job(output, threshold, class_index, tta)
    with service.admission.reserve() as ticket:  # 503 before reading a body we cannot serve
        body = await read_body(request, service.settings.max_upload_bytes)
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            body = await multipart_file(request.scope, body)
        outcome = await ticket.run(lambda: run_job(body, job, service))
    _record(request, service, outcome)
    timing = ", ".join(f"{stage};dur={s * 1000:.1f}" for stage, s in outcome.seconds.items())
    return Response(outcome.body, media_type=outcome.media_type, headers={"Server-Timing": timing})
