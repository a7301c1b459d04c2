"""The gateway's two kinds of peer: the segmentation service (a STOW-RS style request per
series and result -- the SEG, then the SR -- as the Orthanc plugin sends it) and the
destinations (C-STORE SCU with pynetdicom, or DICOMweb STOW-RS), which get a round's
results together. Each call answers with an Outcome; none raises for what a peer does."""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app.gateway.settings import RESULTS, Destination, GatewaySettings

log = logging.getLogger("app.gateway")

# Answers of /segment that no retry changes: the series is refused, with the reason.
REFUSED = {400, 413, 415, 422}
NO_STUDY = "2.25.0"  # a valid UID no study has: what --check searches a DICOMweb server for


@dataclass(frozen=True)
class Outcome:
    kind: Literal["ok", "refused", "retry"]
    detail: str
    body: bytes = b""
    retry_after: float | None = None


def multipart_related(parts: list[bytes]) -> tuple[bytes, str]:
    """A STOW-RS body of DICOM instances, and its Content-Type."""
    boundary = f"unet-gateway-{uuid.uuid4().hex}"
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body = b"".join(head + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def auth(settings: GatewaySettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}


def choose_model(settings: GatewaySettings, modality: str) -> Outcome:
    """The service's model for a series of ``modality`` (GET /models?modality=, the cards'
    ``modalities``): ok with its name in ``detail`` ("" for a service of one model that
    does not list them), refused when no model is meant for it, retry when unreachable."""
    url = settings.service_url.rstrip("/") + "/models"
    try:
        answer = httpx.get(url, params={"modality": modality}, headers=auth(settings), timeout=30)
    except httpx.HTTPError as exc:
        return Outcome("retry", f"the service is unreachable ({type(exc).__name__})")
    if answer.status_code in (401, 403):  # kept, not refused: a key fixed, and on it goes
        return Outcome("retry", f"GET /models: HTTP {answer.status_code}: the service refuses "
                       "the gateway's API key (UNET_API_KEY)")  # fmt: skip
    if answer.status_code in (408, 429) or answer.status_code >= 500:
        return Outcome("retry", f"GET /models: HTTP {answer.status_code}")
    if answer.status_code != 200:  # no choice to make (404: a service before the model
        return Outcome("ok", "")  # repository): the default, whose answer then decides
    listing = answer.json()
    chosen = listing.get("chosen")
    if chosen is None:
        return Outcome("refused", str(listing.get("reason", "no model for this modality")))
    return Outcome("ok", str(chosen))


def segment(
    settings: GatewaySettings, series: tuple[bytes, str], result: str, model: str = ""
) -> Outcome:
    """POST a series (a ``multipart_related`` body and its type) to
    /segment?format=dicom-seg (``result`` "seg") or dicom-sr ("sr") of ``model`` (""
    the service's default); the result, or why not."""
    body, content_type = series
    headers = {"Content-Type": content_type, "Accept": "application/dicom", **auth(settings)}
    url = settings.service_url.rstrip("/") + "/segment"
    query = {"format": RESULTS[result], **({"model": model} if model else {})}
    try:
        answer = httpx.post(
            url,
            params=query,
            content=body,
            headers=headers,
            timeout=settings.dicom_service_timeout,
        )
    except httpx.HTTPError as exc:
        return Outcome("retry", f"the service is unreachable ({type(exc).__name__})")
    if answer.status_code == 200:
        return Outcome("ok", "HTTP 200", answer.content)
    detail = f"HTTP {answer.status_code}: {_detail(answer)}"
    if answer.status_code in REFUSED:
        return Outcome("refused", detail)
    retry = answer.headers.get("Retry-After", "")
    return Outcome("retry", detail, retry_after=float(retry) if retry.isdigit() else None)


def _detail(answer: httpx.Response) -> str:
    """The service's one-line ``detail`` (its messages carry no DICOM values)."""
    try:
        return " ".join(str(answer.json()["detail"]).split())[:200]
    except (ValueError, KeyError, TypeError):
        return answer.reason_phrase


def send(
    settings: GatewaySettings, destination: Destination, paths: list[Path], tls: Any
) -> Outcome:
    """Store a round's results (its SEG, and SR) at one destination: ok once it took all."""
    if destination.is_dicomweb:
        return _stow(settings, destination, paths)
    return _c_store(settings, destination, paths, tls)


def _stow(settings: GatewaySettings, destination: Destination, paths: list[Path]) -> Outcome:
    body, content_type = multipart_related([path.read_bytes() for path in paths])
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    try:
        answer = httpx.post(destination.url, content=body, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        return Outcome("retry", f"unreachable ({type(exc).__name__})")
    if answer.status_code not in (200, 202):
        return Outcome("retry", f"HTTP {answer.status_code}")
    sent = [str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in paths]
    lost = _not_stored(answer, sent)
    if lost is None:  # 202 is "stored some, with warnings or failures": which, unsaid
        return Outcome("retry", "HTTP 202 without the list of what was stored")
    if lost:
        return Outcome("retry", f"HTTP {answer.status_code}: {len(lost)} of {len(sent)} not "
                       f"stored (failure reason {', '.join(sorted(set(lost)))})")  # fmt: skip
    return Outcome("ok", f"HTTP {answer.status_code}")


def _not_stored(answer: httpx.Response, sent: list[str]) -> list[str] | None:
    """The failure reasons (hex, or "none given") of the instances a STOW-RS answer did not
    store: those in its Failed SOP Sequence (0008,1198), and those ``sent`` missing from
    its Referenced SOP Sequence (0008,1199) when it has one -- Orthanc's DICOMweb plugin
    answers 200 with an instance its storage failed left out of both. None when a 202 has
    neither list; a 200 without them stored all."""
    try:
        document = answer.json()
        lists = {"00081198", "00081199"} & set(document)
        failed = document.get("00081198", {}).get("Value", [])
        reasons = [item.get("00081197", {}).get("Value", [None])[0] for item in failed]
        stored = document.get("00081199", {}).get("Value", [])
        listed = {str(item.get("00081155", {}).get("Value", [""])[0]) for item in stored}
    except (ValueError, AttributeError, IndexError, TypeError):
        lists, reasons, listed = set(), [], set()
    if not lists:
        return [] if answer.status_code == 200 else None
    if "00081199" in lists:
        unlisted = len([uid for uid in sent if uid not in listed]) - len(reasons)
        reasons += [None] * max(unlisted, 0)
    return [f"0x{r:04X}" if isinstance(r, int) else "none given" for r in reasons]


def _scu(settings: GatewaySettings) -> AE:
    ae = AE(ae_title=settings.dicom_ae_title)
    ae.connection_timeout = 30  # a destination that drops packets: a failed try, not a hang
    return ae


def _associate(
    settings: GatewaySettings, destination: Destination, tls: Any, *contexts: tuple[str, ...]
) -> Any:
    """An association to a C-STORE destination proposing ``contexts`` (each an abstract syntax
    and its transfer syntax); over TLS, its certificate checked against the destination's host."""
    ae = _scu(settings)
    for context in dict.fromkeys(contexts):  # once each: a SEG and an SR share no context
        ae.add_requested_context(*context)
    return ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        tls_args=None if tls is None else (tls, destination.host),
        evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)],
    )


def _no_delay(event: evt.Event) -> None:
    """Nagle's algorithm off, once connected: a C-STORE is two writes (its command, then
    its dataset), and the second would wait for the peer's delayed ACK (~40 ms on Linux)."""
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _c_store(
    settings: GatewaySettings, destination: Destination, paths: list[Path], tls: Any
) -> Outcome:
    """Every result over one association; ok only when each was stored."""
    datasets = [dcmread(path) for path in paths]
    contexts = [(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets]
    assoc = _associate(settings, destination, tls, *contexts)
    if not assoc.is_established:
        return Outcome("retry", "association not established")
    accepted = {c.abstract_syntax for c in assoc.accepted_contexts}
    refused = [
        kind
        for kind, (uid, _) in zip(_kinds(datasets), contexts, strict=True)
        if uid not in accepted
    ]
    codes = []
    try:
        if refused:  # e.g. a PACS that stores no SR: say so, never a bare exception
            return Outcome("retry", f"the destination accepts no {' or '.join(refused)} storage")
        for dataset in datasets:
            code = getattr(assoc.send_c_store(dataset), "Status", None)
            codes.append("none" if code is None else f"0x{code:04X}")
            # success, or stored with a warning; anything else: the round is tried again
            if code is None or not (code == 0x0000 or 0xB000 <= code <= 0xBFFF):
                return Outcome("retry", f"C-STORE {', '.join(codes)}")
    finally:
        assoc.release()
    return Outcome("ok", f"C-STORE {', '.join(codes)}")


def _kinds(datasets: list[Any]) -> list[str]:
    return ["SEG" if getattr(d, "Modality", "") == "SEG" else "SR" for d in datasets]


def echo(settings: GatewaySettings, destination: Destination, tls: Any) -> Outcome:
    """C-ECHO a C-STORE destination (``--check``); a DICOMweb one answers an HTTP GET."""
    if destination.is_dicomweb:  # a QIDO-RS search that finds nothing: cheap on any PACS
        query = {"StudyInstanceUID": NO_STUDY, "limit": "1"}
        try:
            answer = httpx.get(destination.url, params=query, timeout=10)
        except httpx.HTTPError as exc:
            return Outcome("retry", f"unreachable ({type(exc).__name__})")
        # 405: a STOW-RS endpoint that offers no search; 404 or 401: wrong URL or no access
        found = answer.status_code in (200, 204, 405)
        return Outcome("ok" if found else "retry", f"QIDO-RS HTTP {answer.status_code}")
    assoc = _associate(settings, destination, tls, (Verification,))
    if not assoc.is_established:
        return Outcome("retry", "association not established")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    return Outcome("ok" if code == 0 else "retry", f"C-ECHO {code}")
