"""The DICOM listener: C-ECHO and C-STORE SCP (pynetdicom) for every storage SOP class and
the common transfer syntaxes, the calling AE allow-list checked at association, at most
UNET_DICOM_MAX_ASSOCIATIONS at once, and a success status only once the instance is on
disk (GatewayStore.add_instance: fsync, rename, commit).

Statuses (PS3.4 Annex B): 0x0000 stored; 0xA700 out of resources (the disk is full:
nothing half-written stays); 0xC210 cannot understand (a corrupt or truncated dataset, or
one without its UIDs: nothing queued). Non-image objects (SR, RT, presentation states,
our own SEGs coming back) are acknowledged and skipped, logged once per SOP class.
Log lines carry AE titles, hosts, statuses and UID hashes: never an attribute's value.
"""

from __future__ import annotations

import errno
import logging
import socket
import sqlite3
import threading
from typing import Any, BinaryIO, cast

from pydicom import Dataset, uid
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app.gateway import reactor, responses
from app.gateway.hosts import HostNames
from app.gateway.metrics import Metrics
from app.gateway.settings import GatewaySettings
from app.gateway.store import GatewayStore, key
from app.privacy import quiet_value_warnings

log = logging.getLogger("app.gateway")

TRANSFER_SYNTAXES = [
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
]
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC210
# SOP classes with pixel data that are results, not images to segment.
NOT_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage (ours, coming back)
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
}
PIXELS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float and Double Float


def incomplete(dataset: Dataset, syntax: UID, sop_class: str, has_pixels: bool) -> str | None:
    """Why a dataset cannot be a whole instance, or None: an image SOP class without its
    pixels, or native pixel data shorter than its rows, columns, samples and frames say
    (a truncated transfer); pydicom itself raises for a broken encapsulated sequence."""
    if not has_pixels:
        is_image = "Image" in UID(sop_class).name
        return "unreadable dataset (an image without its pixel data)" if is_image else None
    if "PixelData" not in dataset or syntax.is_compressed:
        return None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    bits = int(dataset.BitsAllocated)
    samples = int(dataset.get("SamplesPerPixel", 1))
    expected = -(-int(dataset.Rows) * int(dataset.Columns) * samples * frames * bits // 8)
    got = len(dataset.PixelData)
    return None if got >= expected else f"unreadable dataset (pixel data {got} of {expected} bytes)"


class Receiver:
    """The SCP; ``start()`` listens, ``stop()`` closes every association."""

    def __init__(self, settings: GatewaySettings, store: GatewayStore, metrics: Metrics) -> None:
        self.settings, self.store, self.metrics = settings, store, metrics
        reactor.install()  # pynetdicom's polling threads, woken (app/gateway/reactor.py)
        responses.install()  # its C-STORE responses encoded without pydicom (responses.py)
        # pynetdicom's own event log off: it formats lines for every requested context and
        # DIMSE message (a copy of each dataset to see that it is there), UIDs among them;
        # the gateway logs what it does itself, with UID hashes only
        _config.LOG_HANDLER_LEVEL = "none"
        quiet_value_warnings()  # pydicom would quote an invalid UID it reads, to stderr too
        self.ae = AE(ae_title=settings.dicom_ae_title)
        self.ae.maximum_associations = settings.dicom_max_associations
        self.ae.maximum_pdu_size = 0  # no limit: what the sender proposes
        self.ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(str(context.abstract_syntax), TRANSFER_SYNTAXES)
        self.hosts = HostNames(settings.allowed_host_names())
        self._server: Any = None
        self._skipped: set[str] = set()
        self._lock = threading.Lock()
        self.port = settings.dicom_port

    def start(self, ssl_context: Any = None) -> None:
        self.hosts.start()  # the allow-list's host names, looked up before anyone calls
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_C_STORE, self._on_store),
        ]
        self._server = self.ae.start_server(
            (self.settings.dicom_host, self.settings.dicom_port),
            block=False,
            evt_handlers=handlers,
            ssl_context=ssl_context,
            contexts=reactor.Contexts(self.ae.supported_contexts),  # cheap to copy
        )
        if ssl_context is not None:
            self._server.get_request = self._accept_tls
        self.port = int(self._server.server_address[1])
        log.info("listening: AE %s, port %d", self.settings.dicom_ae_title, self.port)

    def _accept_tls(self) -> tuple[socket.socket, tuple[str, int]]:
        """The server's accept, with the TLS handshake left to the association's own thread
        (OpenSSL runs it on the first read): pynetdicom's would run it here, in the one
        thread that accepts, where a client that connects and never says hello stops every
        association after it."""
        server = self._server
        client, address = server.socket.accept()
        wrapped = server.ssl_context.wrap_socket(
            client, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, address

    def stop(self) -> None:
        self.hosts.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_requested(self, event: Event) -> None:
        """The allow-list, at association: a caller not on it gets an A-ASSOCIATE-RJ
        (permanent, calling AE title not recognised)."""
        request = cast(A_ASSOCIATE, event.assoc.requestor.primitive)
        calling = str(request.calling_ae_title).strip()
        host = str(event.assoc.requestor.address)
        if self.settings.admits(calling, host, self.hosts):
            return
        log.warning("association rejected: calling AE %s from %s is not allowed", calling, host)
        event.assoc.acse.send_reject(0x01, 0x01, 0x03)
        event.assoc.kill()  # as pynetdicom does for its own rejections: the RJ is sent first

    def _on_store(self, event: Event) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            dataset: Dataset = event.dataset
            series, sop, sop_class = (
                str(dataset.SeriesInstanceUID),
                str(dataset.SOPInstanceUID),
                str(dataset.SOPClassUID),
            )
            has_pixels = any(tag in dataset for tag in PIXELS)
            syntax = UID(event.context.transfer_syntax)
            problem = incomplete(dataset, syntax, sop_class, has_pixels)
            if not (UID(series).is_valid and UID(sop).is_valid and UID(sop_class).is_valid):
                problem = "a Series, SOP Instance or SOP Class UID is empty or invalid (PS3.5 9.1)"
        except Exception as exc:  # pydicom raises many kinds for a corrupt dataset
            problem = f"unreadable dataset ({type(exc).__name__})"
        if problem is not None:
            log.warning("C-STORE from %s refused (0x%04X): %s", calling, CANNOT_UNDERSTAND, problem)
            return CANNOT_UNDERSTAND
        if not has_pixels or sop_class in NOT_IMAGES:
            with self._lock:  # a few dozen storage classes exist: the set stays small
                first = sop_class not in self._skipped and len(self._skipped) < 1000
                self._skipped.add(sop_class)
            if first:
                log.info("skipped: SOP class %s is not an image to segment", sop_class)
            return SUCCESS
        raw, meta = cast(C_STORE, event.request).DataSet.getvalue(), event.file_meta  # type: ignore[union-attr]

        def write(f: BinaryIO) -> None:
            f.write(b"\0" * 128 + b"DICM")
            write_file_meta_info(f, meta, enforce_standard=True)  # type: ignore[arg-type]
            f.write(raw)

        try:
            self.store.add_instance(series, sop, write)
        except (OSError, sqlite3.Error) as exc:  # SQLite says "database or disk is full"
            status = OUT_OF_RESOURCES
            full = getattr(exc, "errno", None) == errno.ENOSPC or "full" in str(exc)
            why = "the disk is full" if full else type(exc).__name__
            log.error("C-STORE from %s failed (0x%04X): %s", calling, status, why)
            return status
        self.metrics.instances.inc()
        log.debug("stored: series %s instance %s from %s", key(series), key(sop), calling)
        return SUCCESS
