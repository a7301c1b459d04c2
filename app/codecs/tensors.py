"""Tensors of the Open Inference Protocol (KServe v2, REST): an inference request's JSON
header and binary tensor data in, a DecodedImage; predictions out, the response's JSON
and binary data. No HTTP: app/api/v2.py reads the body and sends what this makes.

The protocol: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
and Triton's binary tensor data extension (``Inference-Header-Content-Length``: the
JSON header's length; each tensor's bytes follow it in order, row-major, little endian,
``parameters.binary_data_size`` giving their length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.codecs.errors import CodecError, CorruptImageError
from app.codecs.frames import DecodedImage, Limits

DTYPES: dict[str, np.dtype[Any]] = {
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "FP32": np.dtype("<f4"),
}
OUTPUTS = {"mask": "UINT8", "probability": "FP32"}


class TensorRequestError(CodecError):
    """The inference request is not one this model can run (400)."""


class _Protocol(BaseModel):
    """Strict types (no "1" for 1); other fields of the protocol are allowed and ignored."""

    model_config = ConfigDict(strict=True, extra="allow")


class InputParameters(_Protocol):
    binary_data_size: int | None = Field(None, ge=0, description="its bytes after the JSON")


class InputTensor(_Protocol):
    name: str
    shape: list[Annotated[int, Field(ge=1)]] = Field(
        min_length=2,
        max_length=4,
        description="[H, W], [H, W, C] or [N, H, W(, C)]; C 1 to 4 (alpha dropped)",
    )
    datatype: Literal["UINT8", "UINT16"]
    data: list[Any] | None = Field(
        None, description="row-major, as many as the shape says: 0-255 or 0-65535"
    )
    parameters: InputParameters | None = None


class OutputParameters(_Protocol):
    binary_data: bool | None = None


class RequestedOutput(_Protocol):
    name: Literal["mask", "probability"]
    parameters: OutputParameters | None = None


class RequestParameters(_Protocol):
    threshold: float | None = Field(None, gt=0, lt=1, description="as on /segment")
    tta: bool = Field(False, description="as on /segment")
    binary_data_output: bool = Field(False, description="every output as binary data")


class InferenceRequest(_Protocol):
    """The protocol's inference request (its JSON, or the JSON header of a binary one)."""

    id: str | None = None
    inputs: list[InputTensor] = Field(min_length=1, max_length=1, description="the image")
    outputs: list[RequestedOutput] | None = Field(None, description="default: every output")
    parameters: RequestParameters = RequestParameters()


def request_schema() -> dict[str, Any]:
    """InferenceRequest's JSON schema, its definitions inlined (for an OpenAPI body)."""
    schema = InferenceRequest.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return dict(inline(schema))


@dataclass
class TensorRequest:
    """What an inference request asks: the image, the outputs (name -> binary or not) and
    the request's id."""

    image: DecodedImage
    outputs: dict[str, bool]
    id: str | None = None


def read_header(body: bytes, header_length: int | None) -> tuple[InferenceRequest, memoryview]:
    """The request's JSON header, validated whole (400 naming each field that is wrong),
    and the binary tensor data after it."""
    size = len(body) if header_length is None else header_length
    if not 0 < size <= len(body):
        raise TensorRequestError(
            f"Inference-Header-Content-Length {header_length} does not fit a body of "
            f"{len(body)} bytes"
        )
    try:
        header = orjson.loads(body[:size])
    except orjson.JSONDecodeError as exc:
        raise TensorRequestError(f"the inference request is not JSON: {exc}") from None
    try:
        return InferenceRequest.model_validate(header), memoryview(body)[size:]
    except ValidationError as exc:
        problems = [
            f"'{'.'.join(map(str, e['loc'])) or 'request'}': {e['msg']}" for e in exc.errors()[:5]
        ]
        raise TensorRequestError(f"the inference request: {'; '.join(problems)}") from None


def _shape(shape: list[int]) -> tuple[int, int, int, int]:
    """(frames, height, width, channels) of [H, W], [H, W, C] or [N, H, W(, C)]."""
    if len(shape) == 2:
        return 1, shape[0], shape[1], 1
    if len(shape) == 3:  # [H, W, C] with C 1 to 4 (alpha dropped, as /segment does), else
        if shape[2] <= 4:  # [N, H, W]: a gray image 1-4 px wide goes as [1, H, W, 1]
            return 1, shape[0], shape[1], shape[2]
        return shape[0], shape[1], shape[2], 1
    return shape[0], shape[1], shape[2], shape[3]


def _pixels(tensor: InputTensor, binary: memoryview, count: int) -> np.ndarray:
    """The tensor's values: its binary data (``binary_data_size`` bytes) or its JSON
    ``data``, ``count`` of them."""
    dtype = DTYPES[tensor.datatype]
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is not None:
        if size != count * dtype.itemsize or size > len(binary):
            raise CorruptImageError(
                f"binary_data_size {size} is not the {count * dtype.itemsize} bytes the input's "
                f"shape and datatype take, or passes the body's end ({len(binary)} bytes left)"
            )
        return np.frombuffer(binary[:size], dtype=dtype).copy()
    if tensor.data is None:
        raise TensorRequestError("the input has neither 'data' nor binary_data_size")
    try:
        values = np.asarray(tensor.data).ravel()
    except (TypeError, ValueError, OverflowError):  # ragged
        values = None
    if values is None or (values.size and values.dtype.kind not in "iu"):  # 1.7, true: no
        raise TensorRequestError("input 'data' must be a (nested) list of integers")
    if values.size != count:
        raise TensorRequestError(f"input 'data' has {values.size} values, its shape {count}")
    top = np.iinfo(dtype).max
    if values.size and (values.min() < 0 or values.max() > top):
        raise TensorRequestError(f"input 'data' has values outside 0..{top}")
    return values.astype(dtype)


def parse_request(request: InferenceRequest, binary: memoryview, limits: Limits) -> TensorRequest:
    """The request's image and what it asks for (``read_header``'s parts); 400/413 errors
    for what is wrong, the limits checked from the shape before any value is read."""
    (tensor,) = request.inputs
    frames, height, width, channels = _shape(tensor.shape)
    if not 1 <= channels <= 4:
        raise TensorRequestError(
            f"the image must have 1 to 4 channels (gray, RGB, with alpha), got {channels}"
        )
    limits.check(width, height, frames, "the input tensor's")
    values = _pixels(tensor, binary, frames * height * width * channels)
    shape = (height, width) if channels == 1 else (height, width, channels)
    stack = values.reshape((frames, *shape))
    image = DecodedImage("tensor", list(stack), width, height)
    return TensorRequest(image, _outputs(request), request.id)


def _outputs(request: InferenceRequest) -> dict[str, bool]:
    """Output name -> binary: the requested ones, else every output (binary when the
    request's ``binary_data_output`` parameter says so)."""
    binary_all = request.parameters.binary_data_output
    if not request.outputs:  # none asked (absent or []): every output
        return dict.fromkeys(OUTPUTS, binary_all)
    wanted: dict[str, bool] = {}
    for output in request.outputs:
        given = output.parameters.binary_data if output.parameters else None
        wanted[output.name] = binary_all if given is None else given
    return wanted


def response(
    model: str, version: str, request_id: str | None, tensors: dict[str, np.ndarray],
    binary: dict[str, bool],
) -> tuple[bytes, int | None]:  # fmt: skip
    """The response body and, when a tensor goes as binary data, the JSON header's length."""
    outputs, blobs = [], []
    for name, array in tensors.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": OUTPUTS[name],
            "shape": list(array.shape),
        }
        data = np.ascontiguousarray(array, dtype=DTYPES[OUTPUTS[name]])
        if binary[name]:
            entry["parameters"] = {"binary_data_size": data.nbytes}
            blobs.append(data.tobytes())
        else:
            entry["data"] = data.ravel()
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request_id is not None:
        document["id"] = request_id
    head = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
