"""Golden HTTP responses: fixed inputs and models -> the exact answers of /segment.

Recorded before the core was restructured (issue 10) and kept byte-identical since
(tests/app/test_golden.py; probability maps to within one 16-bit level, the last bit of
a float32, which depends on the CPU's kernels), but once: on 2026-12-04 the PNG answers
were recorded again when libpng (imagecodecs) replaced Pillow as their encoder; every
one decodes, in Pillow and in OpenCV, to the pixels recorded before. To record again, on
purpose, and say so:

    .venv/bin/python -m tests.app.golden        # writes tests/app/golden/

Models are made by tests.nets from fixed seeds; inputs from fixed seeds. DICOM SEG
answers are compared without the attributes that are fresh in every SEG (UIDs,
content date and time), which are not the service's to fix (see issue 18).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from app.main import create_app
from tests.conftest import settings
from tests.nets import BINARY, SOFTMAX3, default_card, save_model
from tests.samples import dicom_without_pixels, encode, jpeg, noise, png, png_bomb, tiff

FOLDER = Path(__file__).with_name("golden")
MODELS = {
    "binary": BINARY,
    "softmax3": SOFTMAX3,
}
# What is new in every SEG: UIDs made by highdicom's or pydicom's generate_uid (their
# roots), and the moment it was made.
FRESH_UID_ROOTS = ("1.2.826.0.1.3680043.10.511.", "1.2.826.0.1.3680043.8.498.")
FRESH_TIMES = {"ContentDate", "ContentTime", "SeriesDate", "SeriesTime"}
FRESH_TIMES |= {"InstanceCreationDate", "InstanceCreationTime", "ContributionDateTime"}


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    query: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "POST"
    path: str = "/segment"


def _ct() -> bytes:
    path = get_testdata_file("CT_small.dcm", download=False)
    if not isinstance(path, str):
        raise FileNotFoundError("pydicom's bundled CT_small.dcm is missing")
    return Path(path).read_bytes()


def cases() -> list[Case]:
    gray, rgb = noise(64, 80, seed=11), noise(48, 40, 3, seed=12)
    deep = noise(40, 56, dtype=np.uint16, seed=13)
    pages = tiff(noise(32, 32, seed=14), noise(32, 32, seed=15))
    multipart = (("Content-Type", "multipart/form-data; boundary=XyZ"),)
    no_file = b'--XyZ\r\nContent-Disposition: form-data; name="other"\r\n\r\nhello\r\n--XyZ--\r\n'
    return [
        Case("png", "binary", "", png(gray)),
        Case("png-threshold", "binary", "?threshold=0.7", png(gray)),
        Case("rle", "binary", "?format=rle", png(gray)),
        Case("probability", "binary", "?format=probability", png(gray)),
        Case("probability-tta", "binary", "?format=probability&tta=true", png(gray)),
        Case("jpeg-rgb", "binary", "", jpeg(rgb)),
        Case("tiff-16bit-rle", "binary", "?format=rle", tiff(deep)),
        Case("tiff-pages-rle", "binary", "?format=rle", pages),
        Case("softmax-png", "softmax3", "", png(gray)),
        Case("softmax-rle", "softmax3", "?format=rle", png(gray)),
        Case("softmax-probability-2", "softmax3", "?format=probability&class=2", png(gray)),
        Case("dicom-rle", "binary", "?format=rle", _ct()),
        Case("dicom-seg", "softmax3", "?format=dicom-seg", _ct()),
        # The error table of docs/http-api.md.
        Case("error-empty", "binary", "", b""),
        Case("error-random", "binary", "", np.random.default_rng(1).bytes(512)),
        Case("error-truncated-png", "binary", "", png(gray)[:200]),
        Case("error-gif", "binary", "", encode(gray, "GIF")),
        Case("error-no-file-field", "binary", "", no_file, multipart),
        Case("error-bomb", "binary", "", png_bomb()),
        Case("error-threshold", "binary", "?threshold=1.5", png(gray)),
        Case("error-class", "softmax3", "?format=probability&class=3", png(gray)),
        Case("error-format", "binary", "?format=jpeg", png(gray)),
        Case("error-multi-frame-png", "binary", "", pages),
        Case("error-seg-for-png", "binary", "?format=dicom-seg", png(gray)),
        Case("error-rt-plan", "binary", "", dicom_without_pixels()),
        Case("error-unknown-route", "binary", "", b"", method="GET", path="/nowhere"),
        Case("error-method", "binary", "", b"", method="GET"),
    ]


def models(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, spec in MODELS.items():
        paths[name] = folder / f"{name}.onnx"
        save_model(paths[name], spec, seed=3, card=default_card(spec, name=name))
    return paths


def comparable(content_type: str, body: bytes) -> bytes:
    """The body as compared: DICOM SEG without its fresh UIDs and times."""
    if content_type != "application/dicom":
        return body
    ds = pydicom.dcmread(io.BytesIO(body))

    def settle(dataset: pydicom.Dataset, element: pydicom.DataElement) -> None:
        if element.VR == "UI" and str(element.value).startswith(FRESH_UID_ROOTS):
            element.value = "1.2.3"
        elif element.keyword in FRESH_TIMES:
            element.value = ""

    ds.walk(settle)
    ds.file_meta.walk(settle)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def answers(model_folder: Path) -> Iterator[tuple[Case, int, str, bytes]]:
    """(case, status, content type, comparable body) for every case, in order."""
    paths = models(model_folder)
    with ExitStack() as stack:
        clients = {
            name: stack.enter_context(
                TestClient(create_app(settings(path, providers="cpu")))
            )  # recorded on ONNX Runtime
            for name, path in paths.items()
        }
        for case in cases():
            answer = clients[case.model].request(
                case.method, case.path + case.query, content=case.body, headers=dict(case.headers)
            )
            content_type = answer.headers.get("content-type", "")
            yield case, answer.status_code, content_type, comparable(content_type, answer.content)


def record(model_folder: Path) -> None:
    FOLDER.mkdir(exist_ok=True)
    manifest: dict[str, Any] = {}
    for case, status, content_type, body in answers(model_folder):
        (FOLDER / f"{case.name}.bin").write_bytes(body)
        manifest[case.name] = {
            "status": status,
            "content_type": content_type,
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    (FOLDER / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
    print(f"recorded {len(cases())} answers in {FOLDER}", file=sys.stderr)
