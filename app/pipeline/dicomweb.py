"""A DICOMweb series as an input: ``https://host/dicom-web/studies/<study>/series/<series>``.

Its instances are listed first (QIDO-RS): a series that is not all VL Whole Slide
Microscopy is refused before anything is downloaded. Then each instance is fetched as it
is stored (WADO-RS, ``transfer-syntax=*``: no transcoding by the server) and streamed to
a file of its own (python-multipart's parser: memory stays flat whatever its size), in a
folder the DICOM WSI reader then opens (app/codecs/dicom_wsi.py) like any other.

Credentials: ``user:password@`` in the URL (HTTP basic) or a Bearer token. Messages show
the URL without them. Needs ``httpx`` (``pip install .[dicom-wsi]``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from python_multipart.multipart import MultipartParser, parse_options_header

from app.codecs.dicom_wsi import WSM
from app.codecs.errors import ImageTooLargeError, NotAnImageError, UnsupportedFormatError
from app.errors import SourceFetchError, SourceUrlError

UID = r"[0-9]+(?:\.[0-9]+)*"
SERIES_URL = re.compile(
    rf"^(?P<root>https?://[^?#\s]+?)/studies/(?P<study>{UID})/series/(?P<series>{UID})/?$"
)
INSTANCE = 'multipart/related; type="application/dicom"; transfer-syntax=*'
SOP_CLASS, SOP_INSTANCE = "00080016", "00080018"
TIMEOUT_S = 60.0  # without a byte from the server


@dataclass(frozen=True)
class SeriesUrl:
    """root: the DICOMweb base (``.../dicom-web``, credentials included); the UIDs."""

    root: str
    study: str
    series: str

    @classmethod
    def parse(cls, text: str) -> SeriesUrl | None:
        """The series ``text`` names, else None (not a DICOMweb series URL)."""
        found = SERIES_URL.match(text)
        if not found:
            return None
        try:  # urllib checks the port and an IPv6 host only when they are read
            parts = urlsplit(found["root"])
            if parts.port == 0 or not parts.hostname:
                raise ValueError("no host, or port 0")
        except ValueError as exc:
            raise SourceUrlError(f"the DICOMweb series URL is not valid: {exc}") from None
        return cls(found["root"], found["study"], found["series"])

    @property
    def url(self) -> str:
        return f"{self.root}/studies/{self.study}/series/{self.series}"

    @property
    def shown(self) -> str:
        """The URL without its credentials, for messages and summaries."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=netloc))


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise SourceFetchError("a DICOMweb series needs httpx: pip install .[dicom-wsi]") from None
    return httpx


def _instances(client: Any, series: SeriesUrl) -> list[str]:
    """The SOP Instance UIDs of the series (QIDO-RS); a codec error unless all are VL WSM."""
    answer = client.get(f"{series.url}/instances", headers={"Accept": "application/dicom+json"})
    _check(answer)
    try:
        listed = answer.json() if answer.content else []
        if not listed:
            raise NotAnImageError("the DICOMweb server has no instances of this series")
        classes = {str(i.get(SOP_CLASS, {}).get("Value", ["?"])[0]) for i in listed}
        uids = [str(i[SOP_INSTANCE]["Value"][0]) for i in listed]
    except (ValueError, TypeError, LookupError, AttributeError):  # not DICOM JSON
        raise SourceFetchError("the DICOMweb server's list of instances is no DICOM JSON") from None
    if classes != {WSM}:
        raise UnsupportedFormatError(
            "the series is not a DICOM whole-slide image (VL Whole Slide Microscopy); "
            f"its SOP classes are {', '.join(sorted(classes))}"
        )
    return uids


def _check(answer: Any) -> None:
    if answer.status_code != 200:
        raise SourceFetchError(f"the DICOMweb server answered {answer.status_code}")


def _stream_part(chunks: Iterator[bytes], content_type: str, out: IO[bytes]) -> int:
    """Write the one part of a multipart/related body to ``out``; its bytes."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise SourceFetchError(
            f"the server sent {content_type.split(';')[0]}, not multipart/related"
        )
    parts, written = [0], [0]

    def data(buffer: bytes, start: int, end: int) -> None:
        if parts[0] == 1:
            written[0] += out.write(buffer[start:end])

    def begin() -> None:
        parts[0] += 1

    parser = MultipartParser(boundary, {"on_part_begin": begin, "on_part_data": data})
    for chunk in chunks:
        parser.write(chunk)
    parser.finalize()
    if parts[0] != 1:
        raise SourceFetchError(f"the server sent {parts[0]} parts for one instance")
    return written[0]


def _fetch_one(client: Any, series: SeriesUrl, uid: str, file: Path, room: int | None) -> int:
    url = f"{series.url}/instances/{uid}"
    with client.stream("GET", url, headers={"Accept": INSTANCE}) as answer:
        _check(answer)
        part = file.with_name(file.name + ".part")
        chunks = _bounded(answer.iter_bytes(), room)
        with part.open("wb") as out:
            written = _stream_part(chunks, answer.headers.get("content-type", ""), out)
        part.rename(file)
    return written


def _bounded(chunks: Iterator[bytes], room: int | None) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if room is not None and total > room:
            raise ImageTooLargeError("the series is larger than this server's limit")
        yield chunk


def fetch(
    series: SeriesUrl,
    into: Path,
    token: str | None = None,
    max_bytes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write the series' instances into the folder ``into`` (made), one file each, removed
    again on failure. progress(instances done, instances); max_bytes: the most its
    instances may hold together. SourceFetchError for a series that cannot be fetched;
    the codec errors for one that is no whole-slide image, or past max_bytes."""
    httpx = _httpx()
    into.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    spent = 0
    try:
        with httpx.Client(headers=headers, timeout=TIMEOUT_S, follow_redirects=False) as client:
            uids = _instances(client, series)
            for done, uid in enumerate(uids):
                room = None if max_bytes is None else max_bytes - spent
                spent += _fetch_one(client, series, uid, into / f"{done:05d}.dcm", room)
                if progress is not None:
                    progress(done + 1, len(uids))
    except httpx.HTTPError as exc:
        shutil.rmtree(into, ignore_errors=True)
        reason = str(exc).replace(series.url, series.shown)
        raise SourceFetchError(f"the DICOMweb server: {type(exc).__name__} ({reason})") from None
    except BaseException:
        shutil.rmtree(into, ignore_errors=True)
        raise


@contextmanager
def fetched(series: SeriesUrl, into: Path, **options: Any) -> Iterator[Path]:
    """``fetch``; the folder, removed afterwards."""
    fetch(series, into, **options)
    try:
        yield into
    finally:
        shutil.rmtree(into, ignore_errors=True)
