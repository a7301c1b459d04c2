"""The one body and multipart reader (app/api/upload.py), for /segment and /jobs: each field
``file`` written whole and in order however the body is cut into chunks, other fields
skipped; the 400s of a bad form; UNET_MAX_FRAMES fields for /segment, one for a job."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.upload import receive_files
from app.errors import BadUploadError
from app.main import create_app
from tests import conftest
from tests.jobs.helpers import leftovers
from tests.samples import noise, png

BOUNDARY = "XyZ"
FORM = f"multipart/form-data; boundary={BOUNDARY}"


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body of (field name, file name, bytes) parts."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def receive(
    body: bytes, content_type: str = FORM, cuts: list[int] | None = None
) -> list[tuple[str | None, bytes]]:
    """What ``receive_files`` writes, field by field, from ``body`` cut at ``cuts``."""
    written: list[tuple[str | None, io.BytesIO]] = []

    def open_file(filename: str | None) -> io.BytesIO:
        written.append((filename, io.BytesIO()))
        return written[-1][1]

    async def chunks() -> AsyncIterator[bytes]:
        edges = [0, *sorted(c for c in cuts or [] if 0 < c < len(body)), len(body)]
        for start, end in pairwise(edges):
            if end > start:
                yield body[start:end]

    asyncio.run(receive_files(content_type, chunks(), open_file, "image.tif"))
    return [(filename, out.getvalue()) for filename, out in written]


def lookalikes(image: bytes) -> bytes:
    """``image`` with bytes that start like the boundary inside it and at its end: the parser
    holds them back until it knows they are not one."""
    return image + b"\r\n--XyQ" + image + b"\r\n--X"


def fields(images: list[bytes]) -> tuple[bytes, list[tuple[str | None, bytes]]]:
    """A form of ``images`` (the first named) between fields that are no file, and what
    the reader must write of it."""
    parts = [("note", None, b"not an image"), ("file", "a.dcm", images[0])]
    parts += [("file", None, image) for image in images[1:]]
    body = form(*parts, ("other", "b.png", b"skipped"))
    return body, [("a.dcm", images[0]), *[(None, image) for image in images[1:]]]


@settings(max_examples=60, deadline=None)
@given(
    images=st.lists(st.binary(max_size=300).map(lookalikes), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 1600), max_size=40),
)
def test_each_file_field_is_written_whole_however_the_body_is_cut(
    images: list[bytes], cuts: list[int]
) -> None:
    body, expected = fields(images)
    assert receive(body, cuts=cuts) == expected


def test_a_body_sent_one_byte_at_a_time_gives_the_same_bytes() -> None:
    body, expected = fields([lookalikes(png(noise(8, 8))), lookalikes(b"\0\r\n" * 20)])
    assert receive(body, cuts=list(range(len(body)))) == expected


def test_a_raw_body_is_written_whole_without_a_name() -> None:
    body = png(noise(20, 20))
    assert receive(body, "image/png", cuts=[1, 5, 100]) == [(None, body)]
    assert receive(body, "multipart/related; boundary=x") == [(None, body)]  # STOW-RS: later


@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        (form(("file", "a.png", b"x")), "multipart/form-data", "no boundary in its Content-Type"),
        (form(("file", "a.png", b"x"))[:-12], FORM, "ends before its closing boundary"),
        (b"--XyZ\r\n" + b"X" * 40_000, FORM, "malformed multipart body: "),
        (b"no boundary here", FORM, "malformed multipart body: "),
        (form(("image", "a.png", b"x")), FORM, "`curl -F file=@image.tif`"),
    ],
)
def test_a_bad_form_is_a_bad_upload(body: bytes, content_type: str, said: str) -> None:
    with pytest.raises(BadUploadError, match=said.replace("`", ".")) as raised:
        receive(body, content_type)
    assert said in str(raised.value)


@pytest.fixture(scope="module")
def two_frames(binary_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(conftest.settings(binary_model, max_frames=2))) as client:
        yield client


def test_segment_takes_at_most_max_frames_file_fields(two_frames: TestClient) -> None:
    image = ("file", ("a.png", png(noise(30, 30)), "image/png"))
    two = two_frames.post("/segment", files=[image] * 2)
    assert two.status_code == 422  # read, then refused: two PNGs are no series
    three = two_frames.post("/segment", files=[image] * 3)
    assert three.status_code == 400
    assert "more than 2 fields 'file'" in three.json()["detail"]
    assert "UNET_MAX_FRAMES" in three.json()["detail"]


def test_a_job_takes_one_file_field_and_keeps_nothing_else(client: TestClient) -> None:
    jobs = Path(client.app.state.jobs.store.root)  # type: ignore[attr-defined]
    before = client.get("/jobs").json()
    image = ("file", ("a.png", png(noise(30, 30)), "image/png"))
    two = client.post("/jobs", files=[image, image])
    assert two.status_code == 400
    assert two.json()["detail"] == "a job takes one image: one multipart field 'file'"
    none = client.post("/jobs", files={"image": ("a.png", png(noise(30, 30)))})
    assert none.status_code == 400
    assert "`curl -F file=@image.tif`" in none.json()["detail"]
    assert client.get("/jobs").json() == before
    assert leftovers(jobs) == []
