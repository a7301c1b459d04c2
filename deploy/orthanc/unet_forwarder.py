"""Orthanc Python plugin: each stable series (or instance) -> /segment -> a SEG and its SR.

Standard library only: Orthanc's embedded Python has no third-party packages.
Set-up (docs/dicom.md, "Behind Orthanc"): Orthanc's Python plugin loads this file
(``PythonScript``), the configuration declares the metadata it keeps per
series (instance), and names the service::

    "UserMetadata": {"UnetSegmentation": 4201},
    "UnetForwarder": {"ServiceUrl": "http://unet:8000"}

Settings: the ``UnetForwarder`` section of Orthanc's configuration, each
overridden by an environment variable of Orthanc's process:

    ServiceUrl       UNET_SERVICE_URL       the service, e.g. http://unet:8000 (required)
    ApiKey           UNET_API_KEY           sent as "Authorization: Bearer ..." when set
    Timeout          UNET_FORWARD_TIMEOUT   seconds for one request (default 300)
    Retries          UNET_FORWARD_RETRIES   attempts for an instance the service fails on
                                            (HTTP 500, time-out) before it is given up (default 5)
    MetadataName     UNET_METADATA_NAME     the user metadata kept on each source instance
                                            (default UnetSegmentation; must be in UserMetadata)
    StateProperty    UNET_STATE_PROPERTY    the Orthanc global property (>= 1024) holding the
                                            last change processed (default 4201)
    Backfill         UNET_BACKFILL          on the very first start, also segment the instances
                                            Orthanc already has (default false)
    Trigger          UNET_FORWARD_TRIGGER   ``series`` (default): once a series is stable (Orthanc's
                                            StableSeries, StableAge seconds after its last
                                            instance), all its instances in one request and ONE
                                            SEG for the series; ``instance``: a SEG per instance
    Destinations     UNET_FORWARD_DESTINATIONS  where each SEG is sent on once stored: names of
                                            Orthanc's DicomModalities (C-STORE) or of its
                                            DICOMweb plugin's Servers (STOW-RS), a list or a
                                            comma list (default: none, the SEG stays in Orthanc)
    Results          UNET_FORWARD_RESULTS   what each series gives: ``seg`` (format=dicom-seg)
                                            and ``sr`` (format=dicom-sr, the TID 1500 report of
                                            the SEG's volumes), a list or a comma list with seg
                                            in it (default: seg,sr)

Why it cannot stall the PACS: it calls no Orthanc API from inside an Orthanc
callback. The change callback only wakes the worker thread; the worker reads
Orthanc's ``/changes`` feed, fetches each new instance, posts it to the
service and stores the SEG, all from its own thread. (The stored-instance
callback runs while Orthanc holds its own locks: a REST call made meanwhile
from another Python thread, which holds the GIL while it waits for those locks,
deadlocks the two.)

Why nothing is lost or done twice: the worker advances through ``/changes`` in
order and records the last sequence number it finished in a global property of
Orthanc's own database, so series (instances) stored while the service (or
Orthanc) was down are segmented once both are back. Each source series
(instance) gets the metadata ``UnetSegmentation`` = ``seg <SEG id>``,
``refused <status>`` or ``failed <reason>`` when its outcome is final; one that
has it is never sent again (with an SR: ``seg <SEG id> sr <SR id>``). A series goes as
one DICOMweb STOW-RS style ``multipart/related`` body; the service derives the SEG's
(and SR's) UIDs from the source series and the model, so a series segmented again
replaces them in a PACS that overwrites (``OverwriteInstances``) instead of adding them.

With ``sr`` in ``Results``, the same series (instance) is then posted with format=dicom-sr:
the SR is stored beside the SEG and goes wherever the SEG goes. An SR the service
refuses (e.g. no pixel spacing: 422) or fails on ``Retries`` times leaves the SEG alone,
logged; SRs and SEGs stored in Orthanc are never themselves segmented.

The model: before a series (instance) is posted, the service is asked which of its models
is meant for the series' modality (``GET /models?modality=``, by the model cards'
``modalities``; else its default model); ``model=`` names it in the posts. When none is,
the series is recorded ``skipped <reason>`` and never posted.

A SEG (and its SR) is sent on to every one of ``Destinations`` before its source is marked:
each destination is retried on its own (1 s doubling to 10 s) until it accepts, so
a destination that is down delays the feed, and a restart meanwhile segments and
sends the series again (the same SEG: its UIDs are deterministic).

The service being unreachable, answering 503, 502, 504 or 401/403 is not final:
the worker waits (its Retry-After, else 1 s doubling to 10 s) and tries the same
series (instance) again, keeping the order. 400/413/415/422 (not an image, unsupported, ...) is
final and logged as a warning; 500 or a time-out is retried ``Retries`` times,
then recorded as failed and logged as an error.

Logs go through Orthanc's log (orthanc.LogInfo/LogWarning/LogError) and name
Orthanc instance ids and HTTP statuses only: never DICOM attribute values.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from email.message import Message
from typing import Any, Protocol

log = logging.getLogger("unet_forwarder")

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SR_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # every structured report (ours included)
RESULTS = {"seg": "dicom-seg", "sr": "dicom-sr"}  # what a series may give -> its format
# Answers that mean "this instance cannot be segmented": final, no retry.
NOT_SEGMENTABLE = frozenset({400, 413, 415, 422})
# Answers that mean "the service is not there right now": wait and try the same instance again.
UNAVAILABLE = frozenset({401, 403, 502, 503, 504})
# Answers to GET /models?modality= that mean "no choice to make here": the default model.
NO_CHOICE = frozenset({404, 405, 422, 501})  # no such route (an older service), or modality
MAX_TIMEOUT_S = 86400.0  # a request may wait a day at most (a value above is a mistake)
MAX_BACKOFF_S = 10.0  # waits double from 1 s up to this while the service is away
MAX_RETRY_AFTER_S = 60.0  # the longest Retry-After of the service that is honoured
UNKNOWN_RESOURCE = 17  # Orthanc's error code for a resource that does not exist
CHANGES_PAGE = 100
LEVEL = {"instances": "instance", "series": "series"}  # REST level -> what logs call it


# -- one request to the service -------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the service made of one instance.

    kind: ``seg`` (``seg`` holds the SEG bytes), ``chosen`` (the model for a series:
    its name in ``detail``), ``refused`` (final: not an image, or no model for it,
    unsupported...), ``unavailable`` (try again later, ``retry_after`` seconds or
    None), ``failed`` (the service failed on it: retry a few times).
    """

    kind: str
    detail: str
    seg: bytes = b""
    retry_after: float | None = None


BOUNDARY = "unet-forwarder-series"


def series_body(instances: list[bytes]) -> tuple[bytes, str]:
    """A DICOMweb STOW-RS style multipart/related body of the instances, and its type."""
    parts = [
        b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
        for data in instances
    ]
    body = b"".join(parts) + b"--" + BOUNDARY.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def post_instance(
    instance: bytes,
    service_url: str,
    *,
    api_key: str | None = None,
    timeout: float = 300.0,
    content_type: str = "application/dicom",
    result: str = "seg",
    model: str = "",
) -> Answer:
    """POST one DICOM instance (or a series' multipart/related body, with its
    ``content_type``) to ``/segment?format=dicom-seg`` (``result`` "seg") or dicom-sr
    ("sr"), and classify the answer (its ``seg`` holds the SEG or the SR)."""
    url = service_url.rstrip("/") + f"/segment?format={RESULTS[result]}"
    url += f"&model={urllib.parse.quote(model)}" if model else ""
    headers = {"Content-Type": content_type, "Accept": "application/dicom"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=instance, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer("seg", "HTTP 200", seg=response.read())
    except urllib.error.HTTPError as exc:
        status, answer_headers, body = exc.code, exc.headers, exc.read()
    except TimeoutError:
        return Answer("failed", f"no answer within {timeout:g} s")
    except OSError as exc:  # refused, reset, DNS, a time-out while connecting
        reason = getattr(exc, "reason", exc)
        return Answer("unavailable", f"{url} unreachable ({type(reason).__name__})")
    if status in NOT_SEGMENTABLE:
        return Answer("refused", f"HTTP {status}: {_service_detail(body)}")
    if status in UNAVAILABLE:
        return Answer("unavailable", f"HTTP {status}", retry_after=_retry_after(answer_headers))
    return Answer("failed", f"HTTP {status}")


def choose_model(
    modality: str, service_url: str, *, api_key: str | None = None, timeout: float = 30.0
) -> Answer:
    """The service's model for a series of ``modality`` (GET /models?modality=, by the
    model cards' ``modalities``): kind ``chosen`` with its name in ``detail`` ("": the
    default, when the service makes no choice), ``refused`` when no model is meant for it
    (the reason in ``detail``), ``unavailable`` while the service cannot answer."""
    url = service_url.rstrip("/") + "/models"  # logged without its query: no DICOM value
    query = urllib.parse.urlencode({"modality": modality})
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(f"{url}?{query}", headers=headers), timeout=timeout
        ) as response:
            listing = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code in NO_CHOICE:
            # no choice to make (404, 405, 501: a service without GET /models, before the
            # model repository; 422: a modality it will not take): the default model,
            # whose answer then decides
            return Answer("chosen", "")
        # 5xx, 429, a proxy's error: asked again later, never taken for the default
        # model's answer (an MR series segmented by a CT model would stay done for good)
        return Answer("unavailable", f"{url}: HTTP {exc.code}")
    except OSError as exc:  # refused, reset, DNS, a time-out
        reason = getattr(exc, "reason", exc)
        return Answer("unavailable", f"{url} unreachable ({type(reason).__name__})")
    except ValueError:
        return Answer("unavailable", f"{url}: the answer is not JSON")
    if not isinstance(listing, dict):
        return Answer("unavailable", f"{url}: the answer is not a model listing")
    chosen = listing.get("chosen")
    if chosen is None:
        return Answer("refused", str(listing.get("reason", "no model for this modality"))[:300])
    return Answer("chosen", str(chosen))


def _service_detail(body: bytes) -> str:
    """The service's ``detail`` (its messages carry no DICOM values), cut to one short line."""
    try:
        detail = str(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        detail = body.decode("utf-8", "replace")
    return " ".join(detail.split())[:200]


def _retry_after(headers: Message[str, str] | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(MAX_RETRY_AFTER_S, max(1.0, float(value))) if value is not None else None
    except ValueError:
        return None


# -- settings --------------------------------------------------------------------------------


class SettingsError(ValueError):
    """A missing or bad setting: the forwarder does not start, Orthanc does."""


@dataclass(frozen=True)
class Settings:
    service_url: str
    api_key: str | None = None
    timeout: float = 300.0
    retries: int = 5
    metadata_name: str = "UnetSegmentation"
    state_property: int = 4201
    backfill: bool = False
    trigger: str = "series"
    destinations: tuple[str, ...] = ()
    results: tuple[str, ...] = ("seg", "sr")


# setting -> (environment variable, type)
_SETTINGS: dict[str, tuple[str, str, type]] = {
    "ServiceUrl": ("service_url", "UNET_SERVICE_URL", str),
    "ApiKey": ("api_key", "UNET_API_KEY", str),
    "Timeout": ("timeout", "UNET_FORWARD_TIMEOUT", float),
    "Retries": ("retries", "UNET_FORWARD_RETRIES", int),
    "MetadataName": ("metadata_name", "UNET_METADATA_NAME", str),
    "StateProperty": ("state_property", "UNET_STATE_PROPERTY", int),
    "Backfill": ("backfill", "UNET_BACKFILL", bool),
    "Trigger": ("trigger", "UNET_FORWARD_TRIGGER", str),
    "Destinations": ("destinations", "UNET_FORWARD_DESTINATIONS", tuple),
    "Results": ("results", "UNET_FORWARD_RESULTS", tuple),
}


def read_settings(configuration: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Settings from Orthanc's configuration (section ``UnetForwarder``) and the environment.

    Raises SettingsError naming the setting and what is wrong.
    """
    section = configuration.get("UnetForwarder", {})
    if not isinstance(section, dict):
        raise SettingsError('"UnetForwarder" in the Orthanc configuration must be an object')
    unknown = sorted(set(section) - set(_SETTINGS))
    if unknown:
        raise SettingsError(
            f'unknown "UnetForwarder" setting(s) {unknown}; known: {list(_SETTINGS)}'
        )
    values: dict[str, Any] = {}
    for key, (field, variable, kind) in _SETTINGS.items():
        raw = environ.get(variable) or section.get(key)
        if raw is None or raw == "":
            continue
        values[field] = _convert(raw, kind, f"{key} ({variable})")
    if "service_url" not in values:
        raise SettingsError(
            'no service URL: set "ServiceUrl" in the "UnetForwarder" section of the Orthanc '
            "configuration, or UNET_SERVICE_URL in Orthanc's environment"
        )
    settings = Settings(**values)
    if not settings.service_url.startswith(("http://", "https://")):
        raise SettingsError(
            f"ServiceUrl must start with http:// or https://, got {settings.service_url[:100]!r}"
        )
    if settings.trigger not in ("series", "instance"):
        raise SettingsError(f"Trigger must be series or instance, got {settings.trigger[:100]!r}")
    results = tuple(r.lower() for r in settings.results)
    if "seg" not in results or not set(results) <= set(RESULTS):
        raise SettingsError(
            f"Results must list seg, and optionally sr (the SR measures the SEG), got "
            f"{','.join(results)[:100]!r}"
        )
    settings = replace(settings, results=tuple(r for r in RESULTS if r in results))
    if not 0 < settings.timeout <= MAX_TIMEOUT_S or settings.retries < 1:  # nan fails too
        raise SettingsError(
            f"Timeout must be in (0, {MAX_TIMEOUT_S:g}] seconds and Retries >= 1, got "
            f"{settings.timeout:g} and {settings.retries}"
        )
    if not 1024 <= settings.state_property <= 65535:
        raise SettingsError(f"StateProperty must be in 1024..65535, got {settings.state_property}")
    declared = configuration.get("UserMetadata", {})
    if not isinstance(declared, dict) or settings.metadata_name not in declared:
        raise SettingsError(
            f'the metadata "{settings.metadata_name}" is not declared: add '
            f'"UserMetadata": {{"{settings.metadata_name}": 4201}} to the Orthanc configuration '
            "(any free index from 1024 to 65535)"
        )
    return settings


def _convert(raw: object, kind: type, name: str) -> object:
    if kind is tuple:  # a JSON list of names, or a comma list
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in {"true", "1", "yes"}:
            return True
        if str(raw).lower() in {"false", "0", "no"}:
            return False
        raise SettingsError(f"{name} must be true or false, got {str(raw)[:100]!r}")
    wrong = isinstance(raw, (bool, list, dict)) or (  # JSON true is no 1, 2.9 no 2
        kind is int and isinstance(raw, float) and not raw.is_integer()
    )
    try:
        if wrong:
            raise TypeError
        return kind(raw)
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(f"{name} must be a {kind.__name__}, got {str(raw)[:100]!r}") from None


# -- the worker ------------------------------------------------------------------------------


class OrthancApi(Protocol):
    """The part of Orthanc's Python API the worker uses (the ``orthanc`` module)."""

    def RestApiGet(self, uri: str) -> bytes: ...  # noqa: N802 -- Orthanc's names
    def RestApiGetAfterPlugins(self, uri: str) -> bytes: ...  # noqa: N802
    def RestApiPost(self, uri: str, body: bytes) -> bytes: ...  # noqa: N802
    def RestApiPostAfterPlugins(self, uri: str, body: bytes) -> bytes: ...  # noqa: N802
    def RestApiPut(self, uri: str, body: bytes) -> bytes: ...  # noqa: N802
    def GetGlobalProperty(self, key: int, default: str) -> str: ...  # noqa: N802
    def SetGlobalProperty(self, key: int, value: str) -> None: ...  # noqa: N802


class Forwarder:
    """Follows Orthanc's /changes feed from its own thread; one instance at a time, in order."""

    def __init__(
        self,
        api: OrthancApi,
        settings: Settings,
        post: Callable[[bytes, str, str], Answer] | None = None,
        choose: Callable[[str], Answer] | None = None,
    ) -> None:
        self.api = api
        self.settings = settings
        self.model = ""  # the model of the series (instance) being segmented
        self.post = post or (
            lambda body, content_type, result: post_instance(
                body,
                settings.service_url,
                api_key=settings.api_key,
                timeout=settings.timeout,
                content_type=content_type,
                result=result,
                model=self.model,
            )
        )
        self.choose = choose or (
            lambda modality: choose_model(modality, settings.service_url, api_key=settings.api_key)
        )
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="unet-forwarder", daemon=True)

    # Orthanc's change callback: never calls Orthanc, never blocks.
    def on_change(self, change_type: object, level: object, resource: str) -> None:
        self.wake.set()

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _run(self) -> None:
        if self.settings.destinations and not self.destinations_known():
            return
        log.info("forwarding new instances to %s", self.settings.service_url)
        while not self.stopping.is_set():
            try:
                if not self.process_changes():
                    self.wake.wait(5.0)  # the change callback wakes it sooner
                    self.wake.clear()
            except Exception as exc:  # keep the worker alive whatever happens
                log.error("forwarder: %s, continuing in 5 s", _describe(exc))
                self.stopping.wait(5.0)

    def destinations_known(self) -> bool:
        """Whether every Destination is a DicomModalities entry or a DICOMweb server of this
        Orthanc; else one error line and no forwarding: a misspelled name would hold every
        series after the first, retried for ever."""
        try:
            known = set(json.loads(self.api.RestApiGet("/modalities")))
        except Exception as exc:  # said in the log; the forwarder stays off
            log.error("not started: the destinations cannot be listed (%s)", _describe(exc))
            return False
        with contextlib.suppress(Exception):  # no DICOMweb plugin: no servers
            # "AfterPlugins": the DICOMweb plugin's routes are a plugin's, not the core's
            known |= set(json.loads(self.api.RestApiGetAfterPlugins("/dicom-web/servers")))
        unknown = [name for name in self.settings.destinations if name not in known]
        if unknown:
            log.error(
                "not started: Destinations %s name neither a DicomModalities entry nor a "
                "DICOMweb server of this Orthanc (known: %s)", unknown, sorted(known),
            )  # fmt: skip
        return not unknown

    def process_changes(self) -> bool:
        """Handle one page of changes; True when there may be more right away."""
        since = self._last_done()
        page = self._get_json(f"/changes?since={since}&limit={CHANGES_PAGE}")
        wanted = "StableSeries" if self.settings.trigger == "series" else "NewInstance"
        process = self.process_series if wanted == "StableSeries" else self.process_instance
        for change in page.get("Changes", []):
            mine = change.get("ChangeType") == wanted
            if mine and not process(str(change["ID"])):
                return False  # stopping: the change stays for the next start
            self.api.SetGlobalProperty(self.settings.state_property, str(int(change["Seq"])))
        return not page.get("Done", True)

    def _last_done(self) -> int:
        value = self.api.GetGlobalProperty(self.settings.state_property, "")
        if value:
            return int(value)
        # First start: from now on, or from the beginning with Backfill.
        start = 0 if self.settings.backfill else int(self._get_json("/changes?last").get("Last", 0))
        self.api.SetGlobalProperty(self.settings.state_property, str(start))
        log.info("first start: following changes after sequence %d", start)
        return start

    def process_instance(self, instance_id: str) -> bool:
        """Segment one instance until its outcome is final; False if stopped first."""
        metadata = self._metadata("instances", instance_id)
        if metadata is None or self.settings.metadata_name in metadata:
            return True  # deleted meanwhile, or already done (a re-sent instance)
        sop_class = metadata.get("SopClassUid", "")
        if sop_class == SEGMENTATION_STORAGE or sop_class.startswith(SR_STORAGE_PREFIX):
            return True  # a SEG or an SR (ours included): nothing to segment, no loop
        modality = self._get_json(f"/instances/{instance_id}/series")
        picked = self._pick("instances", instance_id, modality)
        if picked is not True:
            return picked is False  # none fits (recorded), or stopping
        data = self.api.RestApiGet(f"/instances/{instance_id}/file")
        return self._segment("instances", instance_id, data, "application/dicom")

    def process_series(self, series_id: str) -> bool:
        """Segment a stable series in one request, one SEG for it; False if stopped first."""
        metadata = self._metadata("series", series_id)
        if metadata is None or self.settings.metadata_name in metadata:
            return True  # deleted meanwhile, or already done (a re-sent series)
        series = self._get_json(f"/series/{series_id}")
        if series.get("MainDicomTags", {}).get("Modality") in ("SEG", "SR"):
            return True  # SEGs and SRs (ours included): nothing to segment, no loop
        picked = self._pick("series", series_id, series)
        if picked is not True:
            return picked is False  # none fits (recorded), or stopping
        files = [self.api.RestApiGet(f"/instances/{i}/file") for i in series.get("Instances", [])]
        body, content_type = series_body(files)
        return self._segment("series", series_id, body, content_type)

    def _pick(self, level: str, resource: str, series: dict[str, Any]) -> bool | None:
        """The model for the resource by its series' modality (``self.model``): True; False
        when no model is meant for it (recorded as skipped, with the reason; the reason
        names no DICOM value); None if stopped first."""
        modality = str(series.get("MainDicomTags", {}).get("Modality", ""))
        answer = self._final(level, resource, lambda: self.choose(modality), "model")
        if answer is None:
            return None
        if answer.kind == "chosen":
            self.model = answer.detail
            return True
        outcome = "skipped" if answer.kind == "refused" else "failed"
        self._record(level, resource, f"{outcome} {answer.detail}")
        log.warning("%s %s: not segmented, %s", LEVEL[level], resource, answer.detail)
        return False

    def _segment(self, level: str, resource: str, body: bytes, content_type: str) -> bool:
        """The SEG, then (Results) the SR, each posted until its outcome is final; stored,
        sent on and recorded. False if stopped first."""
        answer = self._final(level, resource, lambda: self.post(body, content_type, "seg"), "seg")
        if answer is None:
            return False
        reports = []
        if answer.kind == "seg" and "sr" in self.settings.results:
            report = self._final(level, resource, lambda: self.post(body, content_type, "sr"), "sr")
            if report is None:
                return False
            if report.kind == "seg":
                reports.append(report.seg)
            else:  # the SEG stands alone: say why there is no SR
                log.warning("%s %s: no SR, %s", LEVEL[level], resource, report.detail)
        return self._finish(level, resource, answer, reports)

    def _final(
        self, level: str, resource: str, ask: Callable[[], Answer], result: str
    ) -> Answer | None:
        """Ask until the outcome is final (retries as the module says); None if stopped."""
        failures, wait = 0, 1.0
        for attempt, answer in enumerate(self._attempts(ask), start=1):
            if answer.kind == "failed":
                failures += 1
            if answer.kind in ("seg", "chosen", "refused") or failures >= self.settings.retries:
                if answer.kind == "failed":
                    log.error(
                        "%s %s: %s given up after %d attempts: %s",
                        LEVEL[level], resource, result.upper(), attempt, answer.detail,
                    )  # fmt: skip
                return answer
            delay = answer.retry_after or wait
            # A warning on the first and every 10th try; the others at info (--verbose).
            severity = logging.WARNING if attempt % 10 == 1 else logging.INFO
            log.log(
                severity,
                "%s %s: %s; try %d, again in %.0f s",
                LEVEL[level],
                resource,
                answer.detail,
                attempt,
                delay,
            )
            if self.stopping.wait(delay):
                return None
            wait = min(MAX_BACKOFF_S, wait * 2)
        return None

    def _finish(self, level: str, resource: str, answer: Answer, reports: list[bytes]) -> bool:
        """Store the SEG (and its SR) and send them on, or record why there is none; the
        outcome goes on the resource. False when stopped before every destination took them."""
        what = f"{LEVEL[level]} {resource}"
        if answer.kind == "seg":
            ids = [self._store(data) for data in (answer.seg, *reports)]
            log.info("%s: %s stored", what, " and ".join(f"{k} {i}" for k, i in self._named(ids)))
            if not self._send_on(what, ids):
                return False  # stopping: not marked, so segmented and sent again at restart
            self._record(level, resource, " ".join(f"{k.lower()} {i}" for k, i in self._named(ids)))
        elif answer.kind == "refused":
            self._record(level, resource, f"refused {answer.detail}")
            log.warning("%s: not segmented, the service answered %s", what, answer.detail)
        else:  # given up, logged as such
            self._record(level, resource, f"failed {answer.detail}")
        return True

    @staticmethod
    def _named(ids: list[str]) -> list[tuple[str, str]]:
        return list(zip(("SEG", "SR")[: len(ids)], ids, strict=True))

    def _store(self, data: bytes) -> str:
        return str(json.loads(self.api.RestApiPost("/instances", data)).get("ID", ""))

    def _send_on(self, what: str, ids: list[str]) -> bool:
        """The SEG (and SR) to every destination, each retried on its own until it accepts
        them; False if stopped first."""
        pending, wait = list(self.settings.destinations), 1.0
        body = json.dumps({"Resources": ids, "Synchronous": True}).encode()
        while pending:
            for name in list(pending):
                try:
                    # "AfterPlugins": the DICOMweb plugin's routes are a plugin's, not the core's
                    self.api.RestApiPostAfterPlugins(self._store_uri(name), body)
                except Exception as exc:  # orthanc.OrthancException: refused, unreachable
                    log.warning(
                        "%s: results to %s: %s; again in %.0f s", what, name, _describe(exc), wait
                    )
                    continue
                pending.remove(name)
                log.info("%s: %s sent to %s", what, " and ".join(ids), name)
            if pending and self.stopping.wait(wait):
                return False
            wait = min(MAX_BACKOFF_S, wait * 2)
        return True

    def _store_uri(self, name: str) -> str:
        """A DicomModalities entry is sent to by C-STORE, any other name is a DICOMweb server."""
        modalities = json.loads(self.api.RestApiGet("/modalities"))
        if name in modalities:
            return f"/modalities/{name}/store"
        return f"/dicom-web/servers/{name}/stow"

    def _attempts(self, ask: Callable[[], Answer]) -> Iterator[Answer]:
        while not self.stopping.is_set():
            yield ask()

    def _metadata(self, level: str, resource: str) -> dict[str, str] | None:
        try:
            return dict(self._get_json(f"/{level}/{resource}/metadata?expand"))
        except Exception as exc:  # orthanc.OrthancException(17, "Unknown resource"): deleted
            if exc.args[:1] == (UNKNOWN_RESOURCE,):
                return None
            raise

    def _record(self, level: str, resource: str, outcome: str) -> None:
        name = self.settings.metadata_name
        self.api.RestApiPut(f"/{level}/{resource}/metadata/{name}", outcome.encode())

    def _get_json(self, uri: str) -> dict[str, Any]:
        value = json.loads(self.api.RestApiGet(uri))
        if not isinstance(value, dict):
            raise ValueError(f"GET {uri.split('?')[0]} did not answer a JSON object")
        return value


def _describe(exc: BaseException) -> str:
    """An exception without its arguments' values beyond the first short line."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- inside Orthanc --------------------------------------------------------------------------


class OrthancLogHandler(logging.Handler):
    """Python logging into Orthanc's own log (and so its log file, timestamps, verbosity)."""

    def __init__(self, orthanc: Any) -> None:
        super().__init__()
        self.orthanc = orthanc

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = f"unet-forwarder: {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self.orthanc.LogError(message)
            elif record.levelno >= logging.WARNING:
                self.orthanc.LogWarning(message)
            else:
                self.orthanc.LogInfo(message)
        except Exception:  # a log line must never break the forwarder
            self.handleError(record)


def install(orthanc: Any) -> Forwarder | None:
    """Wire the forwarder into Orthanc; on a bad setting, one error line and no forwarder."""
    log.handlers[:] = [OrthancLogHandler(orthanc)]
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        settings = read_settings(json.loads(orthanc.GetConfiguration()), os.environ)
    except SettingsError as exc:
        log.error("not started: %s", exc)
        return None
    forwarder = Forwarder(orthanc, settings)

    def on_change(change_type: object, level: object, resource: str) -> None:
        if change_type == orthanc.ChangeType.ORTHANC_STARTED:
            forwarder.start()
        elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
            forwarder.stop()
        elif change_type in (orthanc.ChangeType.NEW_INSTANCE, orthanc.ChangeType.STABLE_SERIES):
            forwarder.on_change(change_type, level, resource)

    orthanc.RegisterOnChangeCallback(on_change)
    return forwarder


# Inside Orthanc the module exists; anywhere else (tests) this file imports as plain Python.
if importlib.util.find_spec("orthanc") is not None:
    import orthanc as _orthanc  # Orthanc's Python plugin (a built-in module there)

    install(_orthanc)
