"""``POST /segment``: an image in (multipart field ``file`` or raw body), a mask out.

The body is read on the event loop under its limits (app/api/upload.py);
everything CPU-bound happens in the inference thread (app/pipeline/small.py via
Admission).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.api.auth import Authorized
from app.api.deps import AdmissionDep, ModelServiceDep
from app.api.errors import ErrorBody
from app.api.schemas import ObjectsResponse, RLEResponse
from app.api.upload import received_images, watching_disconnect
from app.codecs.images import BASE_FORMATS
from app.codecs.outputs.base import either
from app.errors import BadParameterError, RequestCancelledError, quote
from app.pipeline.context import options_for
from app.pipeline.small import Outcome, segment_request
from app.service import Service

router = APIRouter(tags=["segmentation"])

_IMAGE_TYPES = [f.media_type for f in BASE_FORMATS if f.media_type]  # the inputs registry's
_BINARY = {"schema": {"type": "string", "format": "binary"}}
IMAGE_BODY: dict[str, Any] = {
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
        408: "the body stalled for UNET_BODY_TIMEOUT seconds",
        413: "body above UNET_MAX_UPLOAD_BYTES; image above UNET_MAX_IMAGE_PIXELS or "
        "UNET_MAX_FRAMES, or costing more work than an image of that many pixels",
        415: "recognised but unsupported image format, or dicom-seg or dicom-sr for a "
        "non-DICOM input",
        422: "bad query parameter, or a multi-frame input with a single-frame format",
        503: "not ready, overloaded or shutting down (see Retry-After)",
    }.items()
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": RLEResponse | ObjectsResponse,
        "description": "what `format` asks for (docs/http-api.md): PNG images (class indices, "
        "probability, overlay, instance ids), JSON (rle, objects), GeoJSON, DICOM SEG",
        "content": {
            "image/png": _BINARY,
            "image/tiff": _BINARY,
            "application/dicom": _BINARY,
            "application/geo+json": {"schema": {"type": "object"}},
        },
        "headers": {
            "X-Request-ID": {"description": "echoed from the request, else generated"},
            "Server-Timing": {"description": "decode, inference and encode durations, ms"},
            "X-Object-Count": {"description": "format=instances: the number of objects"},
        },
    },
    **_ERRORS,
}


# The query parameters of /segment (API.md); the OpenAPI schema is made from these.
FormatQuery = Annotated[
    str,
    Query(
        alias="format",
        description="what comes back (see responses); the formats of this installation",
    ),
]
ThresholdQuery = Annotated[
    float | None,
    Query(
        gt=0,
        lt=1,
        description="binary models (sigmoid K = 1, softmax K = 2): foreground where "
        "p >= threshold; ignored (argmax) for K >= 3. Default: the model card's "
        "calibrated threshold, else 0.5",
    ),
]
ClassQuery = Annotated[
    int,
    Query(
        alias="class",
        ge=1,
        description="which class's probability format=probability returns, 1 .. len(classes) - 1",
    ),
]
TtaQuery = Annotated[
    bool, Query(description="test-time augmentation: mean over identity and the three flips")
]
MinAreaQuery = Annotated[
    int | None,
    Query(
        ge=0,
        description="object formats: drop objects below this many pixels (default: the card's)",
    ),
]
ObjectsQuery = Annotated[
    bool, Query(description="format=overlay: outline each object instead of filling each class")
]


def check_format(output: str, names: list[str]) -> None:
    """422 for a ``format`` not among ``names`` (a registry's), listing them."""
    if output not in names:
        listed = either([repr(name) for name in names])
        raise BadParameterError(
            f"query parameter 'format': Input should be {listed} (got {quote(output)})"
        )


def _record(request: Request, service: Service, outcome: Outcome) -> None:
    model, pixels = service.name, outcome.width * outcome.height * outcome.frames
    service.metrics.segmented(model, pixels, outcome.tiles, outcome.seconds["inference"])
    card = service.model.card
    request.state.log = {
        "model": model,
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
    openapi_extra={"requestBody": IMAGE_BODY},
    dependencies=[Authorized],
)
async def segment(
    request: Request,
    service: ModelServiceDep,
    admission: AdmissionDep,
    output: FormatQuery = "png",
    threshold: ThresholdQuery = None,
    class_index: ClassQuery = 1,
    tta: TtaQuery = False,
    min_area: MinAreaQuery = None,
    objects: ObjectsQuery = False,
) -> Response:
    """Segment the image in the body; see the `format` parameter for what comes back."""
    check_format(output, service.outputs.names())
    options = options_for(service.model.card, threshold, class_index, tta, min_area, objects)
    with admission.reserve() as ticket:  # 503 before reading a body we cannot serve
        async with (
            received_images(request, service.settings, service.stopping) as images,
            watching_disconnect(request) as cancelled,
        ):
            try:
                outcome = await ticket.run(
                    lambda: segment_request(images, output, options, service, cancelled)
                )
            except RequestCancelledError as exc:  # the log line says how far it had come
                request.state.log = {"tiles_done": exc.tiles_done, "tiles_total": exc.tiles_total}
                raise
    _record(request, service, outcome)
    timing = ", ".join(f"{stage};dur={s * 1000:.1f}" for stage, s in outcome.seconds.items())
    headers = {**outcome.headers, "Server-Timing": timing}
    return Response(outcome.body, media_type=outcome.media_type, headers=headers)
