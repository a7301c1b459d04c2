"""The forwarder's request and settings logic against a real HTTP server on 127.0.0.1.

The forwarder inside a real Orthanc: test_orthanc_e2e.py.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SEG = b"\x00" * 128 + b"DICM" + b"fake SEG 1.2.840.10008.5.1.4.1.1.66.4"
CT = b"\x00" * 128 + b"DICM" + b"fake CT 1.2.840.10008.5.1.4.1.1.2"


def load_forwarder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "unet_forwarder", ROOT / "deploy" / "orthanc" / "unet_forwarder.py"
    )
    if spec is None or spec.loader is None:
        pytest.fail("deploy/orthanc/unet_forwarder.py is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # imports without Orthanc
    return module


fwd = load_forwarder()


class FakeService(BaseHTTPRequestHandler):
    """Answers /segment like the service: scripted statuses, records what it got."""

    script: ClassVar[list[tuple[int, dict[str, str], bytes]]] = []
    seen: ClassVar[list[dict[str, object]]] = []
    delay: ClassVar[float] = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(FakeService.delay)
        FakeService.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        self._answer()

    def do_GET(self) -> None:
        FakeService.seen.append({"path": self.path, "headers": dict(self.headers)})
        self._answer()

    def _answer(self) -> None:
        """The next scripted answer."""
        status, headers, answer = FakeService.script.pop(0)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def service() -> Iterator[str]:
    FakeService.script, FakeService.seen, FakeService.delay = [], [], 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        FakeService.delay = 0.0
        server.shutdown()
        server.server_close()
        thread.join()


def test_posts_the_instance_and_returns_the_seg(service: str) -> None:
    FakeService.script = [(200, {"Content-Type": "application/dicom"}, SEG)]
    answer = fwd.post_instance(CT, service, api_key="k1")
    assert (answer.kind, answer.seg) == ("seg", SEG)
    (request,) = FakeService.seen
    assert request["path"] == "/segment?format=dicom-seg"
    assert request["body"] == CT
    headers = request["headers"]
    assert isinstance(headers, dict)
    assert headers["Content-Type"] == "application/dicom"
    assert headers["Authorization"] == "Bearer k1"


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_what_the_service_refuses_is_final_with_its_detail(service: str, status: int) -> None:
    FakeService.script = [(status, {}, b'{"detail": "no  image\\nhere"}')]
    answer = fwd.post_instance(CT, service)
    assert (answer.kind, answer.detail) == ("refused", f"HTTP {status}: no image here")


@pytest.mark.parametrize(
    ("status", "retry_after", "wait"),
    [(503, "7", 7.0), (503, "900", 60.0), (502, None, None), (401, None, None)],
)
def test_an_unavailable_service_is_tried_again(
    service: str, status: int, retry_after: str | None, wait: float | None
) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    FakeService.script = [(status, headers, b"{}")]
    answer = fwd.post_instance(CT, service)
    assert (answer.kind, answer.retry_after) == ("unavailable", wait)


def test_a_server_error_is_a_failure(service: str) -> None:
    FakeService.script = [(500, {}, b"{}")]
    assert fwd.post_instance(CT, service) == fwd.Answer("failed", "HTTP 500")


def test_unreachable_is_unavailable() -> None:
    port = free_port()  # nothing listens there
    answer = fwd.post_instance(CT, f"http://127.0.0.1:{port}")
    assert answer.kind == "unavailable"
    assert "ConnectionRefusedError" in answer.detail


def test_no_answer_in_time_is_a_failure(service: str) -> None:
    FakeService.script = [(200, {}, SEG)]
    FakeService.delay = 1.0
    answer = fwd.post_instance(CT, service, timeout=0.2)
    assert answer.kind == "failed"
    assert "0.2 s" in answer.detail


@pytest.mark.parametrize(
    ("status", "body", "kind", "detail"),
    [
        (200, b'{"chosen": "ct", "reason": "ct: its card lists the modality"}', "chosen", "ct"),
        (200, b'{"chosen": null, "reason": "no model is meant"}', "refused", "no model is meant"),
        (404, b"{}", "chosen", ""),  # a service before the model repository: its default
        (422, b"{}", "chosen", ""),  # a modality it will not take: the default's answer decides
        (501, b"{}", "chosen", ""),  # a server without GET at all: no choice to make
        (500, b"{}", "unavailable", "HTTP 500"),  # never the default for a failure
        (429, b"{}", "unavailable", "HTTP 429"),
        (503, b"{}", "unavailable", "HTTP 503"),
        (200, b"[]", "unavailable", "not a model listing"),
    ],
)
def test_the_model_for_a_modality(
    service: str, status: int, body: bytes, kind: str, detail: str
) -> None:
    FakeService.script = [(status, {}, body)]
    answer = fwd.choose_model("MR", service)
    assert answer.kind == kind
    assert detail in answer.detail
    assert FakeService.seen[0]["path"] == "/models?modality=MR"


CONFIG = {"UserMetadata": {"UnetSegmentation": 4201}}


def test_settings_from_the_configuration_and_the_environment() -> None:
    config = {
        **CONFIG,
        "UnetForwarder": {"ServiceUrl": "http://unet:8000", "Timeout": 30, "Backfill": True},
    }
    settings = fwd.read_settings(config, {"UNET_API_KEY": "k", "UNET_FORWARD_TIMEOUT": "12.5"})
    assert settings == fwd.Settings(
        service_url="http://unet:8000", api_key="k", timeout=12.5, backfill=True
    )


@pytest.mark.parametrize(
    ("config", "environ", "message"),
    [
        (CONFIG, {}, "no service URL"),
        ({"UnetForwarder": {"ServiceUrl": "http://u"}}, {}, "not declared"),
        ({**CONFIG, "UnetForwarder": {"ServiceUrl": "http://u", "Retries": 0}}, {}, "Retries"),
        ({**CONFIG, "UnetForwarder": {"ServiceUrl": "http://u", "Timeot": 1}}, {}, "unknown"),
        ({**CONFIG, "UnetForwarder": []}, {}, "must be an object"),
        (CONFIG, {"UNET_SERVICE_URL": "http://u", "UNET_BACKFILL": "maybe"}, "true or false"),
        (CONFIG, {"UNET_SERVICE_URL": "http://u", "UNET_STATE_PROPERTY": "7"}, "1024..65535"),
        # values that passed, then failed every request for ever or were silently changed
        (CONFIG, {"UNET_SERVICE_URL": "http://u", "UNET_FORWARD_TIMEOUT": "nan"}, "Timeout"),
        (CONFIG, {"UNET_SERVICE_URL": "http://u", "UNET_FORWARD_TIMEOUT": "inf"}, "Timeout"),
        (CONFIG, {"UNET_SERVICE_URL": "http://u", "UNET_FORWARD_TIMEOUT": "1e300"}, "Timeout"),
        ({**CONFIG, "UnetForwarder": {"ServiceUrl": "http://u", "Retries": 2.9}}, {},
         "Retries .* must be a int"),
        ({**CONFIG, "UnetForwarder": {"ServiceUrl": "http://u", "Timeout": True}}, {},
         "Timeout .* must be a float"),
        ({**CONFIG, "UnetForwarder": {"ServiceUrl": "http://u", "ApiKey": ["a", "b"]}}, {},
         "ApiKey .* must be a str"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_problem(
    config: dict[str, object], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(fwd.SettingsError, match=message):
        fwd.read_settings(config, environ)


def test_results_are_seg_then_sr_and_never_an_sr_alone() -> None:
    base = {**CONFIG, "UnetForwarder": {"ServiceUrl": "http://u"}}
    assert fwd.read_settings(base, {}).results == ("seg", "sr")
    assert fwd.read_settings(base, {"UNET_FORWARD_RESULTS": "SR,seg"}).results == ("seg", "sr")
    listed = {**CONFIG, "UnetForwarder": {"ServiceUrl": "http://u", "Results": ["seg"]}}
    assert fwd.read_settings(listed, {}).results == ("seg",)
    for bad in ("sr", "seg,pdf"):
        with pytest.raises(fwd.SettingsError, match="Results must list seg"):
            fwd.read_settings(base, {"UNET_FORWARD_RESULTS": bad})


def test_destinations_are_a_list_or_a_comma_list() -> None:
    listed = {**CONFIG, "UnetForwarder": {"ServiceUrl": "http://u", "Destinations": ["A", "b"]}}
    assert fwd.read_settings(listed, {}).destinations == ("A", "b")
    environ = {"UNET_FORWARD_DESTINATIONS": "PACS, archive,"}
    assert fwd.read_settings(listed, environ).destinations == ("PACS", "archive")


class FakeOrthanc:
    """Orthanc's REST API as the sending-on sees it: modalities, and POSTs that fail a
    scripted number of times per URI."""

    def __init__(self, failures: dict[str, int]) -> None:
        self.failures, self.posts = failures, list[str]()

    def RestApiGet(self, uri: str) -> bytes:  # noqa: N802
        assert uri == "/modalities"
        return b'["PACS"]'

    def RestApiGetAfterPlugins(self, uri: str) -> bytes:  # noqa: N802 -- a plugin's route
        assert uri == "/dicom-web/servers"
        return b'["archive"]'

    def RestApiPostAfterPlugins(self, uri: str, body: bytes) -> bytes:  # noqa: N802
        assert body == b'{"Resources": ["seg-1"], "Synchronous": true}'
        self.posts.append(uri)
        if self.failures.get(uri, 0) > 0:
            self.failures[uri] -= 1
            raise RuntimeError(9, "Error in the network protocol")
        return b"{}"


def test_each_destination_is_retried_on_its_own_until_it_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fwd, "MAX_BACKOFF_S", 0.01)
    api = FakeOrthanc({"/dicom-web/servers/archive/stow": 2})
    settings = fwd.Settings(service_url="http://u", destinations=("PACS", "archive"))
    forwarder = fwd.Forwarder(api, settings)
    forwarder.stopping.wait = lambda seconds: False  # type: ignore[method-assign]
    assert forwarder._send_on("series s", ["seg-1"]) is True
    assert api.posts == [
        "/modalities/PACS/store",  # C-STORE: accepted at once, never sent again
        "/dicom-web/servers/archive/stow",
        "/dicom-web/servers/archive/stow",
        "/dicom-web/servers/archive/stow",
    ]


@pytest.mark.parametrize(
    ("destinations", "known"),
    [(("PACS", "archive"), True), (("PACS", "PCAS"), False), (("archiv",), False)],
)
def test_a_destination_orthanc_does_not_know_stops_the_forwarder_at_once(
    destinations: tuple[str, ...], known: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A misspelled name would be retried for ever, holding every series after the first."""
    settings = fwd.Settings(service_url="http://u", destinations=destinations)
    forwarder = fwd.Forwarder(FakeOrthanc({}), settings)
    assert forwarder.destinations_known() is known
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert bool(said) is not known
    if not known:
        assert "name neither a DicomModalities entry nor a DICOMweb server" in said[0]
        assert "'PACS', 'archive'" in said[0]  # what it knows, to spot the typo


def test_stopping_while_a_destination_refuses_leaves_the_series_unmarked() -> None:
    api = FakeOrthanc({"/modalities/PACS/store": 99})
    settings = fwd.Settings(service_url="http://u", destinations=("PACS",))
    forwarder = fwd.Forwarder(api, settings)
    forwarder.stopping.set()
    assert forwarder._send_on("series s", ["seg-1"]) is False


class RecordingOrthanc:
    """Orthanc's REST API as a stored series sees it: what is stored, sent and recorded."""

    def __init__(self) -> None:
        self.stored: list[bytes] = []
        self.sent: list[tuple[str, bytes]] = []
        self.metadata: dict[str, bytes] = {}

    def RestApiPost(self, uri: str, body: bytes) -> bytes:  # noqa: N802
        assert uri == "/instances"
        self.stored.append(body)
        return f'{{"ID": "id-{len(self.stored)}"}}'.encode()

    def RestApiGet(self, uri: str) -> bytes:  # noqa: N802
        assert uri == "/modalities"
        return b'["PACS"]'

    def RestApiGetAfterPlugins(self, uri: str) -> bytes:  # noqa: N802 -- a plugin's route
        assert uri == "/dicom-web/servers"
        return b'["archive"]'

    def RestApiPostAfterPlugins(self, uri: str, body: bytes) -> bytes:  # noqa: N802
        self.sent.append((uri, body))
        return b"{}"

    def RestApiPut(self, uri: str, body: bytes) -> bytes:  # noqa: N802
        self.metadata[uri] = body
        return b""


@pytest.mark.parametrize(
    ("sr_answer", "stored", "resources", "outcome"),
    [
        (
            fwd.Answer("seg", "HTTP 200", seg=b"SR"),
            [SEG, b"SR"],
            ["id-1", "id-2"],
            "seg id-1 sr id-2",
        ),
        (fwd.Answer("refused", "HTTP 422: no spacing"), [SEG], ["id-1"], "seg id-1"),
        (fwd.Answer("failed", "HTTP 500"), [SEG], ["id-1"], "seg id-1"),
    ],
)
def test_the_sr_is_stored_and_sent_with_the_seg_or_the_seg_goes_alone(
    sr_answer: object, stored: list[bytes], resources: list[str], outcome: str
) -> None:
    api = RecordingOrthanc()
    asked: list[str] = []

    def post(body: bytes, content_type: str, result: str) -> object:
        asked.append(result)
        return fwd.Answer("seg", "HTTP 200", seg=SEG) if result == "seg" else sr_answer

    settings = fwd.Settings(service_url="http://u", destinations=("PACS",), retries=1)
    forwarder = fwd.Forwarder(api, settings, post=post)
    assert forwarder._segment("series", "s1", CT, "application/dicom") is True
    assert asked == ["seg", "sr"]
    assert api.stored == stored
    ((uri, body),) = api.sent  # one store request, the SEG and SR together
    assert uri == "/modalities/PACS/store"
    assert body == fwd.json.dumps({"Resources": resources, "Synchronous": True}).encode()
    assert api.metadata == {"/series/s1/metadata/UnetSegmentation": outcome.encode()}


def test_with_results_seg_no_sr_is_asked() -> None:
    api, asked = RecordingOrthanc(), []

    def post(body: bytes, content_type: str, result: str) -> object:
        asked.append(result)
        return fwd.Answer("seg", "HTTP 200", seg=SEG)

    settings = fwd.Settings(service_url="http://u", results=("seg",))
    assert fwd.Forwarder(api, settings, post=post)._segment("instances", "i1", CT, "x") is True
    assert (asked, api.stored, api.sent) == (["seg"], [SEG], [])
