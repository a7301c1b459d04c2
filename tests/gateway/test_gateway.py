"""unet-dicom-gateway against real peers on 127.0.0.1: dcmtk's storescu and echoscu are the
modality, dcmtk's storescp the destination PACS, the service a real uvicorn, dciodvfy the
judge of every SEG that arrives. Debian's dcmtk and dicom3tools (``make system-deps``);
without them these tests skip saying so, except under CI=true, where they fail."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.conftest import REPO, Server, free_port, start_server, stop_server
from tests.deploy.pacs import (
    PYTHON_PLUGIN,
    Orthanc,
    ct_and_pt_series,
    ct_series,
    modality_models,
    require,
)
from tests.gateway import peers
from tests.gateway.peers import (
    COMPREHENSIVE_3D_SR,
    SEGMENTATION,
    TOOLS,
    Pacs,
    Process,
    dciodvfy_errors,
    queue_is_empty,
    sent,
    storescu,
    the_one_seg,
    until,
    wait_listening,
)
from tests.nets import BINARY, default_card, save_model

pytestmark = pytest.mark.slow

HINT = "make system-deps (Debian: dcmtk, dicom3tools, orthanc, orthanc-dicomweb)"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
STABLE_S = 2.0  # a series is complete this long after its last instance


def gateway(tmp_path: Path, service_url: str, port: int, **settings: Any) -> Process:
    return peers.gateway(tmp_path, service_url, port, **{"stable_s": STABLE_S, **settings})


@pytest.fixture(scope="module", autouse=True)
def _dcmtk() -> None:
    missing = [name for name, path in TOOLS.items() if path is None]
    require([*missing, *([] if DICOMWEB_PLUGIN.exists() else ["orthanc-dicomweb"])], HINT)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gateway-model") / "binary.onnx"
    save_model(path, BINARY, seed=3, card=default_card(BINARY, name="binary"))
    return path


def serve(model: Path, log: Path, port: int | None = None) -> Server:
    env = {"UNET_MODEL_PATH": str(model), "UNET_THREADS": "1"}
    return start_server(env, log, port=port)


@pytest.fixture(scope="module")
def service(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = serve(model, tmp_path_factory.mktemp("gateway-service") / "uvicorn.log")
    yield running
    stop_server(running)


@dataclass
class Routed:
    """A running gateway (DICOM port ``port``) whose one destination is ``pacs``."""

    node: Process
    port: int
    pacs: Pacs


@contextmanager
def routing(service: Server, tmp_path: Path, **settings: str) -> Iterator[Routed]:
    """A storescp and a gateway sending it the results, with ``settings``."""
    pacs = Pacs(tmp_path / "pacs", free_port())
    pacs.start()
    port = free_port()
    destination = f"PACS@127.0.0.1:{pacs.port}"
    node = gateway(tmp_path, service.url, port, UNET_DICOM_DESTINATIONS=destination, **settings)
    node.start()
    try:
        wait_listening(port, node)
        yield Routed(node, port, pacs)
    finally:
        assert node.stop() == 0  # SIGTERM: a clean stop
        pacs.stop()


@pytest.fixture
def routed(service: Server, tmp_path: Path) -> Iterator[Routed]:
    with routing(service, tmp_path) as running:
        yield running


def test_a_series_over_three_associations_gives_one_seg_at_the_pacs(
    routed: Routed, tmp_path: Path
) -> None:
    series = ct_series(tmp_path / "ct", 25, size=64)
    node, port, pacs = routed.node, routed.port, routed.pacs
    senders = [storescu(port, series[i::3]) for i in range(3)]  # three associations at once
    for sender in senders:
        sent(sender)
    until(lambda: len(pacs.received()) >= 1, "a SEG at the PACS")
    time.sleep(2 * STABLE_S)  # long enough for a second one, were one coming
    the_one_seg(pacs, series)
    until(lambda: queue_is_empty(tmp_path / "state"), "the queue emptied")
    log = node.text()
    assert "sent to PACS@127.0.0.1" in log
    assert str(pydicom.dcmread(series[0]).SeriesInstanceUID) not in log  # hashes only


def test_a_late_instance_gives_a_second_seg_for_it_alone(routed: Routed, tmp_path: Path) -> None:
    """An instance that comes after its series' SEG went out opens the series' next round:
    a second SEG, with a UID of its own, referencing that instance alone; the first stays."""
    series = ct_series(tmp_path / "ct", 6, size=64)
    first, late = series[:5], series[5]
    sent(storescu(routed.port, first))
    until(lambda: len(routed.pacs.received()) >= 1, "the first SEG at the PACS")
    the_one_seg(routed.pacs, first)
    sent(storescu(routed.port, [late]))
    until(lambda: len(routed.pacs.received()) >= 2, "a second SEG, for the late instance")
    time.sleep(2 * STABLE_S)  # long enough for a third one, were one coming
    paths = routed.pacs.received()
    assert len(paths) == 2
    segs = [pydicom.dcmread(p) for p in paths]
    referenced = sorted(
        (
            {i.ReferencedSOPInstanceUID for r in s.ReferencedSeriesSequence
             for i in r.ReferencedInstanceSequence}
            for s in segs
        ),
        key=len,
    )  # fmt: skip
    assert referenced == [
        {pydicom.dcmread(late).SOPInstanceUID},
        {pydicom.dcmread(f).SOPInstanceUID for f in first},
    ]
    assert segs[0].SOPInstanceUID != segs[1].SOPInstanceUID
    assert [dciodvfy_errors(p) for p in paths] == [[], []]


def test_a_caller_not_allowed_is_rejected_at_association(service: Server, tmp_path: Path) -> None:
    port = free_port()
    allowed = "PROBE,MODALITY@127.0.0.1,CT1@localhost,MR2@10.9.9.9"
    node = gateway(tmp_path, service.url, port, UNET_DICOM_ALLOWED=allowed)
    node.start()
    try:
        wait_listening(port, node)
        echo = [TOOLS["echoscu"] or "", "-aec", "UNET", "127.0.0.1", str(port)]
        stranger = subprocess.run([*echo, "-aet", "STRANGER"], capture_output=True, check=False)
        assert stranger.returncode != 0
        assert b"Rejected" in stranger.stderr + stranger.stdout
        for calling in ("MODALITY", "CT1"):  # CT1's host a name that resolves to 127.0.0.1
            admitted = subprocess.run([*echo, "-aet", calling], capture_output=True, check=False)
            assert admitted.returncode == 0, admitted.stderr
        elsewhere = subprocess.run([*echo, "-aet", "MR2"], capture_output=True, check=False)
        assert elsewhere.returncode != 0  # MR2, but not from its host
        assert "calling AE STRANGER from 127.0.0.1 is not allowed" in node.text()
        assert "calling AE MR2 from 127.0.0.1 is not allowed" in node.text()
    finally:
        node.stop()


def store_as_it_is(port: int, path: Path, syntax: str) -> int:
    """One C-STORE of a CT file's bytes as they are (pynetdicom does not decode a path it
    sends), by a modality over an association of its own: the gateway's status."""
    scu = AE(ae_title="MODALITY")
    scu.add_requested_context(CTImageStorage, syntax)
    assoc = scu.associate("127.0.0.1", port, ae_title="UNET")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def test_a_truncated_instance_is_refused_and_nothing_is_queued(
    service: Server, tmp_path: Path
) -> None:
    (good,) = ct_series(tmp_path / "ct", 1, size=64)
    data = good.read_bytes()
    cuts = {"in the header": len(data) // 3, "in the pixels": len(data) - 1000}
    port = free_port()
    node = gateway(tmp_path, service.url, port)
    node.start()
    try:
        wait_listening(port, node)
        syntax = pydicom.dcmread(good).file_meta.TransferSyntaxUID
        for where, cut in cuts.items():
            broken = tmp_path / "broken.dcm"
            broken.write_bytes(data[:cut])
            assert store_as_it_is(port, broken, syntax) == 0xC210, where
        assert queue_is_empty(tmp_path / "state")
        assert node.text().count("refused (0xC210): unreadable dataset") == 2
    finally:
        node.stop()


def test_an_invalid_uid_is_refused_and_never_quoted(service: Server, tmp_path: Path) -> None:
    """pydicom's reading validation quotes a value it finds invalid, as a warning and in
    its logger (printed to stderr by Python's last-resort handler): the gateway refuses an
    instance whose UID breaks PS3.5 9.1 (0xC210) and its log, stderr included, never has
    the UID."""
    (path,) = ct_series(tmp_path / "ct", 1, size=64)
    invalid = "1.2.840.0123.4567"  # a component with a leading zero
    dataset = pydicom.dcmread(path)
    with pydicom.config.disable_value_validation():  # to write it at all
        dataset.SeriesInstanceUID = invalid
        dataset.save_as(path)
    port = free_port()
    node = gateway(tmp_path, service.url, port)
    node.start()
    try:
        wait_listening(port, node)
        assert store_as_it_is(port, path, dataset.file_meta.TransferSyntaxUID) == 0xC210
        assert queue_is_empty(tmp_path / "state")
        refusal = "refused (0xC210): a Series, SOP Instance or SOP Class UID is empty or invalid"
        until(lambda: refusal in node.text(), "the refusal's line")
    finally:
        node.stop()
    assert invalid not in node.text()


def test_a_series_the_service_refuses_is_recorded_and_never_retried(
    routed: Routed, tmp_path: Path
) -> None:
    # One series whose slices have two sizes: the service answers 422, for good.
    folder, series_uid = tmp_path / "mixed", generate_uid()
    files = []
    for size, number in ((64, 1), (80, 2)):
        (path,) = ct_series(folder / str(size), 1, size=size)
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.InstanceNumber = series_uid, number
        ds.save_as(path)
        files.append(path)
    node, port, pacs = routed.node, routed.port, routed.pacs
    sent(storescu(port, files))
    until(lambda: "refused by the service: HTTP 4" in node.text(), "the refusal logged")
    time.sleep(2 * STABLE_S)
    assert node.text().count("refused by the service") == 1
    assert pacs.received() == []
    assert queue_is_empty(tmp_path / "state")


def test_kill_9_mid_series_then_outages_lose_nothing_and_send_one_seg(
    model: Path, tmp_path: Path
) -> None:
    """Half a series, kill -9 of the gateway, the rest after a restart while the service is
    down; then the destination is down while the service is back; then both are up."""
    series = ct_series(tmp_path / "ct", 12, size=64)
    service_port, pacs_port, port = free_port(), free_port(), free_port()
    pacs = Pacs(tmp_path / "pacs", pacs_port)
    destination = {"UNET_DICOM_DESTINATIONS": f"PACS@127.0.0.1:{pacs_port}"}
    url = f"http://127.0.0.1:{service_port}"
    # Stable after 4 s: on a busy machine a restart alone may take longer than 1.5 s.
    node = gateway(tmp_path, url, port, stable_s=4, **destination)
    node.start()
    service: Server | None = None
    try:
        wait_listening(port, node)
        sent(storescu(port, series[:6]))
        assert node.stop(signal.SIGKILL) == -signal.SIGKILL
        node.start()
        wait_listening(port, node)
        sent(storescu(port, series[6:]))
        until(lambda: "the service is unreachable" in node.text(), "a try at the down service")
        service = serve(model, tmp_path / "service.log", port=service_port)
        until(lambda: "again in" in node.text().split("segmented")[-1], "a try at the PACS")
        pacs.start()
        until(lambda: len(pacs.received()) >= 1, "the SEG at the PACS once both are up")
        time.sleep(2 * STABLE_S)
        the_one_seg(pacs, series)
        until(lambda: queue_is_empty(tmp_path / "state"), "the queue emptied")
    finally:
        node.stop()
        if pacs.process is not None:
            pacs.stop()
        if service is not None:
            stop_server(service)


def test_check_reports_the_service_and_each_destination(service: Server, tmp_path: Path) -> None:
    pacs = Pacs(tmp_path / "pacs", free_port())
    pacs.start()
    try:
        wrong_url = f"{service.url}/no-dicomweb/studies"  # answers 404: not a DICOMweb server
        destinations = f"PACS@127.0.0.1:{pacs.port},GONE@127.0.0.1:{free_port()},{wrong_url}"
        done = check(service.url, UNET_DICOM_DESTINATIONS=destinations)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "ok   service" in done.stdout
        assert f"ok   PACS@127.0.0.1:{pacs.port}" in done.stdout
        assert "FAIL GONE@127.0.0.1" in done.stdout
        assert f"FAIL {wrong_url}: QIDO-RS HTTP 404" in done.stdout
        # a certificate that is not there: said in one line, no traceback
        missing = {"UNET_DICOM_TLS_CERT": "/nowhere.pem", "UNET_DICOM_TLS_KEY": "/nowhere.key"}
        done = check(service.url, **missing)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "FAIL tls: FileNotFoundError" in done.stdout
        assert "Traceback" not in done.stdout + done.stderr
    finally:
        pacs.stop()


def check(service_url: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UNET_SERVICE_URL": service_url, **settings}
    command = [sys.executable, "-m", "app.gateway", "--check"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_a_service_with_api_keys(model: Path, tmp_path: Path) -> None:
    """The gateway's key opens the service; a wrong or missing one is a failed --check and
    a gateway that is not ready (its series wait, queued), never a healthy-looking one."""
    service = start_server(
        {"UNET_MODEL_PATH": str(model), "UNET_THREADS": "1", "UNET_API_KEYS": "the-key"},
        tmp_path / "uvicorn.log",
    )
    port, http_port = free_port(), free_port()
    node = gateway(tmp_path, service.url, port, UNET_API_KEY="not-the-key",
                   UNET_DICOM_HTTP_PORT=str(http_port))  # fmt: skip
    try:
        for key, said in (("", "refuses an API key (UNET_API_KEY unset)"),
                          ("not-the-key", "refuses its API key")):  # fmt: skip
            done = check(service.url, UNET_API_KEY=key)
            assert done.returncode == 1, done.stdout + done.stderr
            assert f"FAIL service: {service.url}: ready, but {said}: HTTP 401" in done.stdout
        assert check(service.url, UNET_API_KEY="the-key").returncode == 0
        node.start()
        wait_listening(port, node)
        sent(storescu(port, ct_series(tmp_path / "ct", 1, size=64)))
        until(lambda: "refuses the gateway's API key" in node.text(), "the key refused, logged")
        ready = httpx.get(f"http://127.0.0.1:{http_port}/health/ready")
        assert ready.status_code == 503, ready.text
        assert node.stop() == 0
        keyed = gateway(tmp_path, service.url, port, UNET_API_KEY="the-key")
        keyed.start()  # the same state dir: the series that waited is segmented now
        until(lambda: "segmented" in keyed.text(), "the series segmented with the key")
        assert keyed.stop() == 0
    finally:
        if node.process is not None:
            node.stop()
        stop_server(service)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"UNET_DICOM_DESTINATIONS": "not-a-destination"}, "UNET_DICOM_DESTINATIONS"),
        # half a TLS set-up would listen on plain TCP while the operator believes it secure
        ({"UNET_DICOM_TLS_CERT": "gateway.pem"}, "UNET_DICOM_TLS_KEY"),
        ({"UNET_DICOM_TLS_KEY": "gateway.key"}, "UNET_DICOM_TLS_CERT"),
        ({"UNET_DICOM_TLS_CA": "ca.pem"}, "UNET_DICOM_TLS_CERT"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_3(
    tmp_path: Path, setting: dict[str, str], named: str
) -> None:
    env = {**os.environ, **setting}
    command = [sys.executable, "-m", "app.gateway"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_health_and_metrics(service: Server, tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    node = gateway(tmp_path, service.url, port, UNET_DICOM_HTTP_PORT=str(http_port))
    node.start()
    try:
        wait_listening(port, node)
        base = f"http://127.0.0.1:{http_port}"
        assert httpx.get(f"{base}/health/live").json() == {"status": "live"}
        assert httpx.get(f"{base}/health/ready").status_code == 200
        (instance,) = ct_series(tmp_path / "ct", 1, size=64)
        sent(storescu(port, [instance]))
        until(lambda: "segmented" in node.text(), "the series segmented")
        text = httpx.get(f"{base}/metrics").text
        assert "unet_gateway_instances_total 1.0" in text
        assert 'unet_gateway_series_total{outcome="segmented"} 1.0' in text
        assert 'unet_gateway_queue{state="kept"} 1.0' in text  # no destination: kept
    finally:
        node.stop()


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and two certificates it signs (gateway, modality), made by the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is missing (Debian: openssl)")
    folder.mkdir()

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=unet-test-ca")  # fmt: skip
    (folder / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("gateway", "modality"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "ext")  # fmt: skip
    return {p.name: p for p in folder.iterdir()}


def test_dicom_tls_with_client_certificates(service: Server, tmp_path: Path) -> None:
    """In: storescu over TLS with a certificate the CA signed; out: to a storescp over TLS
    whose certificate the gateway checks against the CA and the destination's host."""
    pem = make_certificates(tmp_path / "pki")
    tls = ["+tls", str(pem["modality.key"]), str(pem["modality.pem"]), "+cf", str(pem["ca.pem"])]
    pacs = Pacs(tmp_path / "pacs", free_port(), *tls)
    pacs.start()
    port = free_port()
    node = gateway(
        tmp_path,
        service.url,
        port,
        UNET_DICOM_TLS_CERT=str(pem["gateway.pem"]),
        UNET_DICOM_TLS_KEY=str(pem["gateway.key"]),
        UNET_DICOM_TLS_CA=str(pem["ca.pem"]),
        UNET_DICOM_DESTINATIONS=f"PACS@127.0.0.1:{pacs.port}",
    )
    node.start()
    (instance,) = ct_series(tmp_path / "ct", 1, size=64)
    base = [TOOLS["storescu"] or "", "-aet", "MODALITY", "-aec", "UNET"]
    trusted = ["+cf", str(pem["ca.pem"])]
    try:
        signed = [*base, "+tls", str(pem["modality.key"]), str(pem["modality.pem"]), *trusted]
        deadline = time.monotonic() + 30
        while True:  # the listener may still be starting
            done = subprocess.run(
                [*signed, "127.0.0.1", str(port), str(instance)], capture_output=True, check=False
            )
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert done.returncode == 0, done.stdout + done.stderr
        until(lambda: len(pacs.received()) == 1, "the SEG at the TLS destination")
        assert pydicom.dcmread(pacs.received()[0]).SOPClassUID == SEGMENTATION
        # A client that connects and never says hello holds up no one: the handshake runs
        # in the association's thread, not in the one that accepts connections.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            echo = [TOOLS["echoscu"] or "", "-aet", "MODALITY", "-aec", "UNET", "-to", "10"]
            echo += ["-ta", "10", "+tls", str(pem["modality.key"]), str(pem["modality.pem"])]
            echo += [*trusted, "127.0.0.1", str(port)]
            answered = subprocess.run(echo, capture_output=True, check=False, timeout=30)
            assert answered.returncode == 0, answered.stdout + answered.stderr
        # No client certificate, or plain TCP: no association.
        anonymous = [*base, "+tla", *trusted, "127.0.0.1", str(port), str(instance)]
        assert subprocess.run(anonymous, capture_output=True, check=False).returncode != 0
        plain = [*base, "127.0.0.1", str(port), str(instance)]
        assert subprocess.run(plain, capture_output=True, check=False).returncode != 0
    finally:
        node.stop()
        pacs.stop()


def test_a_stow_rs_destination_orthanc_beside_a_c_store_one(
    service: Server, tmp_path: Path
) -> None:
    """Orthanc with Debian's DICOMweb plugin receives the SEG and its SR by STOW-RS while
    storescp receives them by C-STORE: one copy each."""
    orthanc = Orthanc(tmp_path / "orthanc", extra={"Plugins": [str(DICOMWEB_PLUGIN)]})
    orthanc.start(wait_forwarder=False)
    pacs = Pacs(tmp_path / "pacs", free_port())
    pacs.start()
    port = free_port()
    destinations = f"PACS@127.0.0.1:{pacs.port},{orthanc.url}/dicom-web/studies"
    node = gateway(tmp_path, service.url, port, UNET_DICOM_DESTINATIONS=destinations)
    node.start()
    try:
        checked = check(service.url, UNET_DICOM_DESTINATIONS=destinations)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"ok   {orthanc.url}/dicom-web/studies: QIDO-RS HTTP 200" in checked.stdout
        wait_listening(port, node)
        series = ct_series(tmp_path / "ct", 5, size=64)
        sent(storescu(port, series))
        until(lambda: queue_is_empty(tmp_path / "state") and "sent" in node.text(), "both sent")
        the_one_seg(pacs, series)
        stored = [
            pydicom.dcmread(io.BytesIO(httpx.get(f"{orthanc.url}/instances/{i}/file").content))
            for i in httpx.get(f"{orthanc.url}/instances").json()
        ]
        by_class = {str(d.SOPClassUID): str(d.SOPInstanceUID) for d in stored}
        assert len(stored) == len(by_class) == 2
        at_pacs = [pacs.received()[0], pacs.received(COMPREHENSIVE_3D_SR)[0]]
        assert by_class == {
            SEGMENTATION: pydicom.dcmread(at_pacs[0]).SOPInstanceUID,
            COMPREHENSIVE_3D_SR: pydicom.dcmread(at_pacs[1]).SOPInstanceUID,
        }
    finally:
        node.stop()
        pacs.stop()
        orthanc.stop()


STORAGE_REFUSING_SR = f"""
import os, orthanc
FOLDER = os.environ["UNET_TEST_STORAGE"]

def create(uuid, content_type, data):  # a storage area that fails SRs while "refuse-sr" is there
    if b"{COMPREHENSIVE_3D_SR}" in data and os.path.exists(FOLDER + "/refuse-sr"):
        raise RuntimeError("this storage refuses SRs")
    with open(os.path.join(FOLDER, uuid), "wb") as f:
        f.write(data)

def read(uuid, content_type):
    with open(os.path.join(FOLDER, uuid), "rb") as f:
        return f.read()

def remove(uuid, content_type):
    os.remove(os.path.join(FOLDER, uuid))

orthanc.RegisterStorageArea(create, read, remove)
"""


def test_a_stow_rs_destination_that_stores_part_of_a_round_gets_it_again(
    service: Server, tmp_path: Path
) -> None:
    """Orthanc whose storage fails SRs answers the STOW-RS of a SEG and its SR with 200 (its
    DICOMweb plugin 1.7) and only the SEG in its Referenced SOP Sequence: the round stays
    queued for it, and once the storage takes SRs again both are there, one copy each."""
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "refuse-sr").touch()
    script = tmp_path / "storage.py"
    script.write_text(STORAGE_REFUSING_SR)
    plugins = {"Plugins": [str(PYTHON_PLUGIN), str(DICOMWEB_PLUGIN)], "PythonScript": str(script)}
    orthanc = Orthanc(tmp_path / "orthanc", extra=plugins, env={"UNET_TEST_STORAGE": str(storage)})
    orthanc.start(wait_forwarder=False)
    port = free_port()
    stow = f"{orthanc.url}/dicom-web/studies"
    node = gateway(tmp_path, service.url, port, UNET_DICOM_DESTINATIONS=stow)
    node.start()
    try:
        wait_listening(port, node)
        sent(storescu(port, ct_series(tmp_path / "ct", 3, size=64)))
        until(lambda: "1 of 2 not stored" in node.text(), "the SR's failure seen")
        assert not queue_is_empty(tmp_path / "state")
        (storage / "refuse-sr").unlink()
        until(lambda: queue_is_empty(tmp_path / "state"), "the round delivered")
        stored = [
            pydicom.dcmread(io.BytesIO(httpx.get(f"{orthanc.url}/instances/{i}/file").content))
            for i in httpx.get(f"{orthanc.url}/instances").json()
        ]
        assert sorted(str(d.SOPClassUID) for d in stored) == [SEGMENTATION, COMPREHENSIVE_3D_SR]
    finally:
        node.stop()
        orthanc.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 600 KiB tmpfs: a disk that fills up (mounting needs root, as CI runs)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_answers_out_of_resources_and_leaves_nothing_half_written(
    service: Server, tmp_path: Path, small_disk: Path
) -> None:
    series = ct_series(tmp_path / "ct", 8, size=256)  # 128 KiB of pixels each
    port = free_port()
    node = gateway(tmp_path, service.url, port, UNET_DICOM_STATE_DIR=str(small_disk))
    node.start()
    try:
        wait_listening(port, node)
        scu = AE(ae_title="MODALITY")
        scu.add_requested_context(
            CTImageStorage, pydicom.dcmread(series[0]).file_meta.TransferSyntaxUID
        )
        assoc = scu.associate("127.0.0.1", port, ae_title="UNET")
        assert assoc.is_established
        try:
            statuses = [int(assoc.send_c_store(path).Status) for path in series]
        finally:
            assoc.release()
        stored = statuses.count(0x0000)
        assert 0 < stored < len(series)
        assert set(statuses) == {0x0000, 0xA700}, [hex(s) for s in statuses]
        assert statuses == sorted(statuses)  # once full, full
        assert list((small_disk / "incoming").iterdir()) == []  # nothing half-written
        kept = [p for p in (small_disk / "rounds").rglob("*") if p.is_file()]
        assert len(kept) == stored  # what was acknowledged, and only that
        assert "C-STORE from MODALITY failed (0xA700): the disk is full" in node.text()
    finally:
        node.stop()


def test_three_modalities_at_once_over_three_associations_each(
    service: Server, tmp_path: Path
) -> None:
    """... with UNET_DICOM_RESULTS=seg: the SEGs alone, no SR."""
    with routing(service, tmp_path, UNET_DICOM_RESULTS="seg") as running:
        three_modalities(running, tmp_path)


def three_modalities(routed: Routed, tmp_path: Path) -> None:
    every = {
        modality: ct_series(tmp_path / modality, 9, size=64) for modality in ("CT1", "CT2", "CT3")
    }
    senders = [
        storescu(routed.port, files[i::3], calling=modality)
        for modality, files in every.items()
        for i in range(3)
    ]
    for sender in senders:
        sent(sender)
    until(lambda: len(routed.pacs.received()) >= 3, "three SEGs at the PACS")
    time.sleep(2 * STABLE_S)
    segs = [pydicom.dcmread(path) for path in routed.pacs.received()]
    assert len(segs) == 3
    wanted = {
        frozenset(pydicom.dcmread(f).SOPInstanceUID for f in files) for files in every.values()
    }
    got = {
        frozenset(
            item.ReferencedSOPInstanceUID
            for ref in seg.ReferencedSeriesSequence
            for item in ref.ReferencedInstanceSequence
        )
        for seg in segs
    }
    assert got == wanted
    assert len(routed.pacs.received(None)) == 3  # no SR: UNET_DICOM_RESULTS=seg


def test_each_series_goes_to_the_model_meant_for_its_modality(tmp_path: Path) -> None:
    """A repository of a CT model and an MR model (the default): a CT series is segmented
    by the CT model, a PT series (no model is meant for it) is skipped, with the reason."""
    models = modality_models(tmp_path / "models")
    env = {"UNET_MODEL_REPOSITORY": str(models), "UNET_DEFAULT_MODEL": "mrnet", "UNET_THREADS": "1"}
    service = start_server(env, tmp_path / "uvicorn.log")
    try:
        with routing(service, tmp_path) as routed:
            ct, pt = ct_and_pt_series(tmp_path)
            sent(storescu(routed.port, ct))
            sent(storescu(routed.port, pt))
            until(lambda: len(routed.pacs.received()) >= 1, "the CT series' SEG at the PACS")
            until(lambda: "skipped" in routed.node.text(), "the PT series skipped")
            time.sleep(2 * STABLE_S)
            seg = the_one_seg(routed.pacs, ct)
            algorithm = seg.SegmentSequence[0].SegmentAlgorithmName
            assert algorithm == "ctnet-card"
            log = routed.node.text()
            assert "no model is meant for this modality (the models: ctnet: CT; mrnet: MR)" in log
            assert "segmented by ctnet" in log
            until(lambda: queue_is_empty(tmp_path / "state"), "the queue emptied")
    finally:
        stop_server(service)
