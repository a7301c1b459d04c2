"""Orthanc Python plugin: every new image instance -> /segment?format=dicom-seg -> SEG stored back.

Install (see README, "DICOM and PACS (Orthanc)"): Orthanc with its Python plugin,
``"PythonScript": "/etc/orthanc/unet_forwarder.py"`` in orthanc.json, and the
environment variables below. Standard library only: Orthanc's embedded Python
has no third-party packages.

    UNET_SERVICE_URL       e.g. http://unet:8000 (required)
    UNET_API_KEY           sent as "Authorization: Bearer ..." when set
    UNET_FORWARD_TIMEOUT   seconds for one request (default 300: a large
                           multi-frame image on a CPU takes minutes)
    UNET_FORWARD_RETRIES   attempts while the service answers 503 (default 5)

The Orthanc callback only queues the instance ID; one worker thread does the HTTP
work, so that storing images into Orthanc never waits on inference. SEG objects
(including the ones this script stores) are never sent. Log lines name the Orthanc
instance ID and the HTTP status only: never DICOM attribute values.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

log = logging.getLogger("unet_forwarder")

# (url, body, headers, timeout seconds) -> (status, response headers, response body)
HttpPost = Callable[[str, bytes, Mapping[str, str], float], tuple[int, Mapping[str, str], bytes]]

SEGMENTATION_STORAGE = b"1.2.840.10008.5.1.4.1.1.66.4"
# Answers that mean "this instance cannot be segmented": log and move on, no retry.
NOT_SEGMENTABLE = {400, 413, 415, 422}
MAX_RETRY_AFTER_S = 60.0


class ForwardError(Exception):
    """The service could not be reached or failed (401, 5xx, network): worth an alert."""


def urllib_post(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> tuple[int, Mapping[str, str], bytes]:
    """The default HttpPost, on urllib; HTTP error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def is_segmentation(instance: bytes) -> bool:
    """A DICOM SEG (its SOP class UID is in the file meta, within the first bytes)."""
    return SEGMENTATION_STORAGE in instance[:4096]


def forward(
    instance_bytes: bytes,
    service_url: str,
    http_post: HttpPost = urllib_post,
    *,
    api_key: str | None = None,
    timeout: float = 300.0,
    retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes | None:
    """POST one DICOM instance to ``/segment?format=dicom-seg``; the SEG bytes, or None.

    None: the instance is a SEG itself or the service refused it (400/413/415/422:
    no image, unsupported syntax, multi-frame without plane positions). 503 is retried
    after its Retry-After (capped at 60 s) up to ``retries`` attempts in all. Raises
    ForwardError for anything else (401, 5xx, unreachable, timeout).
    """
    if is_segmentation(instance_bytes):
        return None
    url = service_url.rstrip("/") + "/segment?format=dicom-seg"
    headers = {"Content-Type": "application/dicom", "Accept": "application/dicom"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    for attempt in range(1, max(1, retries) + 1):
        try:
            status, answer_headers, body = http_post(url, instance_bytes, headers, timeout)
        except OSError as exc:  # refused, reset, DNS, timeout (socket.timeout is OSError)
            raise ForwardError(f"{url} unreachable: {type(exc).__name__}") from None
        if status == 200:
            return body
        if status in NOT_SEGMENTABLE:
            log.info("not segmented: HTTP %d %s", status, body[:300].decode("utf-8", "replace"))
            return None
        if status != 503:
            raise ForwardError(f"{url} answered HTTP {status}")
        if attempt < retries:
            wait = _retry_after(answer_headers)
            log.info("service busy (503), retrying in %.0f s", wait)
            sleep(wait)
    raise ForwardError(f"{url} still busy (503) after {retries} attempts")


def _retry_after(headers: Mapping[str, str]) -> float:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "1")
    try:
        return min(MAX_RETRY_AFTER_S, max(1.0, float(value)))
    except ValueError:
        return 1.0


def _install_orthanc_plugin() -> None:
    """Inside Orthanc: queue each stored instance, forward from one worker thread."""
    import orthanc  # type: ignore[import-not-found]  # provided by Orthanc's Python plugin

    service_url = os.environ["UNET_SERVICE_URL"]
    api_key = os.environ.get("UNET_API_KEY") or None
    timeout = float(os.environ.get("UNET_FORWARD_TIMEOUT", "300"))
    retries = int(os.environ.get("UNET_FORWARD_RETRIES", "5"))
    pending: queue.Queue[str] = queue.Queue()

    def on_stored(dicom: object, instance_id: str) -> None:
        pending.put(instance_id)  # never block Orthanc's storage on inference

    def worker() -> None:
        while True:
            instance_id = pending.get()
            try:
                data = orthanc.GetDicomForInstance(instance_id)
                seg = forward(data, service_url, api_key=api_key, timeout=timeout, retries=retries)
                if seg is not None:
                    orthanc.RestApiPost("/instances", seg)
                    log.info("instance %s: SEG stored", instance_id)
            except ForwardError as exc:
                log.error("instance %s: %s", instance_id, exc)
            except Exception as exc:  # keep the worker alive whatever one instance does
                log.error("instance %s: %s", instance_id, type(exc).__name__)

    threading.Thread(target=worker, name="unet-forwarder", daemon=True).start()
    orthanc.RegisterOnStoredInstanceCallback(on_stored)


# Inside Orthanc the module exists; anywhere else (tests) this file imports as plain Python.
if importlib.util.find_spec("orthanc") is not None:
    _install_orthanc_plugin()
