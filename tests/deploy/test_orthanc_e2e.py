"""The forwarder inside a real Orthanc, fed by dcmtk's storescu, against the real service.

Debian's orthanc 1.10 + orthanc-python 4.0 + dcmtk (``make system-deps``).
Without them these tests skip saying so, except in CI (CI=true), where they
fail: a PACS integration that was never run is how the deadlock shipped.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from pacs import (
    COMPRESSED_SAMPLES,
    PYTHON_PLUGIN,
    ROOT,
    Orthanc,
    ct_and_pt_series,
    ct_series,
    is_result,
    missing_tools,
    modality_models,
    require,
    samples,
)

from tests.conftest import Server, free_port, start_server, stop_server
from tests.gateway.peers import COMPREHENSIVE_3D_SR, SEGMENTATION, Pacs
from tests.nets import BINARY, default_card, save_model

pytestmark = pytest.mark.slow
ENV = {"UNET_THREADS": "1", "UNET_LOG_FORMAT": "json"}
REST_LIMIT_S = 5.0  # Orthanc must keep answering uploads; the deadlock made them hang forever
# The tests of the PACS issue run the per-instance mode (one SEG per instance); the default,
# one SEG per stable series, has its own tests below.
PER_INSTANCE = {"Trigger": "instance"}


@pytest.fixture(scope="module", autouse=True)
def _debian_packages() -> None:
    require([f"Debian's {name}" for name in missing_tools()])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pacs-model") / "binary.onnx"
    save_model(path, BINARY, seed=3, card=default_card(BINARY, name="binary"))
    return path


def serve(model: Path, log: Path, port: int | None = None, **env: str) -> Server:
    return start_server({**ENV, "UNET_MODEL_PATH": str(model), **env}, log, port=port)


@pytest.fixture
def service(model: Path, tmp_path: Path) -> Iterator[Server]:
    running = serve(model, tmp_path / "service.log")
    yield running
    stop_server(running)


@pytest.fixture
def orthanc(tmp_path: Path, service: Server) -> Iterator[Orthanc]:
    pacs = Orthanc(tmp_path / "orthanc", forwarder={"ServiceUrl": service.url, **PER_INSTANCE})
    pacs.start()
    yield pacs
    pacs.stop()


class RestProbe:
    """Uploads a fresh instance through Orthanc's REST API every 0.3 s and times each upload."""

    def __init__(self, pacs: Orthanc, files: list[Path]) -> None:
        self.pacs, self.files = pacs, files
        self.latencies: list[float] = []
        self.ids: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for path in self.files:
            if self.stopping.wait(0.3):
                return
            began = time.monotonic()
            self.ids.append(self.pacs.upload(path.read_bytes()))
            self.latencies.append(time.monotonic() - began)

    def __enter__(self) -> RestProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(60)


def parallel(*jobs: object) -> None:
    """Run callables in threads (parallel associations); re-raise the first failure."""
    errors: list[BaseException] = []

    def run(job: object) -> None:
        try:
            job()  # type: ignore[operator]
        except BaseException as exc:  # collected, re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    if errors:
        raise errors[0]


def series_final(pacs: Orthanc) -> bool:
    """Every series but SEGs and SRs has its outcome (series mode)."""
    series = [pacs.get(f"/series/{s}") for s in pacs.get("/series")]
    mine = [s for s in series if s["MainDicomTags"].get("Modality") not in ("SEG", "SR")]
    return bool(mine) and all(
        "UnetSegmentation" in pacs.get(f"/series/{s['ID']}/metadata?expand") for s in mine
    )


def all_final(pacs: Orthanc) -> bool:
    return all(
        i["metadata"].get("UnetSegmentation") or is_result(i["metadata"].get("SopClassUid", ""))
        for i in pacs.instances()
    )


def test_three_parallel_associations_each_instance_gets_exactly_one_seg(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    series = [ct_series(tmp_path / f"series{k}", 9) for k in range(3)]
    compressed = samples(tmp_path / "compressed", COMPRESSED_SAMPLES)
    (rtplan,) = samples(tmp_path / "rt", ["rtplan.dcm"])
    probe_files = ct_series(tmp_path / "probe", 8)

    with RestProbe(orthanc, probe_files) as probe:
        parallel(
            *(lambda files=files: orthanc.store(files) for files in series),
            lambda: [
                orthanc.store([path], option)
                for path, option in zip(compressed, COMPRESSED_SAMPLES.values(), strict=True)
            ],
            lambda: orthanc.store([rtplan]),
        )
        orthanc.wait_until(lambda: all_final(orthanc), 120, "every instance segmented or refused")
    orthanc.wait_until(lambda: all_final(orthanc), 60, "the REST uploads segmented")

    assert probe.latencies
    assert max(probe.latencies) < REST_LIMIT_S, probe.latencies
    sources = orthanc.sources()
    images = set(sources.values()) - {_uid(rtplan)}
    assert len(images) == 27 + len(COMPRESSED_SAMPLES) + len(probe.ids)
    assert orthanc.seg_references() == dict.fromkeys(images, 1)

    # The RT plan: refused by the service (415), recorded on the instance, logged, no SEG.
    rt_id = next(i for i, uid in sources.items() if uid == _uid(rtplan))
    assert (orthanc.outcome(rt_id) or "").startswith("refused HTTP 415")
    assert any(rt_id in line and "415" in line for line in orthanc.forwarder_lines())

    # Re-sent instances are not segmented again; a later new one is (the feed moved past them).
    orthanc.store(series[0])
    (later,) = ct_series(tmp_path / "later", 1)
    orthanc.store([later])
    orthanc.wait_until(
        lambda: _uid(later) in orthanc.seg_references(), 30, "the later instance's SEG"
    )
    assert orthanc.seg_references() == dict.fromkeys(images | {_uid(later)}, 1)

    status, seconds = orthanc.stop()
    assert status == 0
    assert seconds < 15


def test_service_restarted_mid_burst_loses_nothing(model: Path, tmp_path: Path) -> None:
    port = free_port()
    service = serve(model, tmp_path / "service.log", port=port)
    pacs = Orthanc(tmp_path / "orthanc", forwarder={"ServiceUrl": service.url, **PER_INSTANCE})
    try:
        pacs.start()
        first, second = ct_series(tmp_path / "a", 12), ct_series(tmp_path / "b", 12)
        pacs.store(first)
        pacs.wait_until(lambda: len(pacs.seg_references()) >= 3, 60, "a few SEGs before the stop")
        stop_server(service)
        with RestProbe(pacs, ct_series(tmp_path / "probe", 4)) as probe:
            pacs.store(second)  # while the service is down
            pacs.wait_until(
                lambda: any("unreachable" in line for line in pacs.forwarder_lines()),
                30,
                "the forwarder noticing the service is down",
            )
        assert probe.latencies
        assert max(probe.latencies) < REST_LIMIT_S, probe.latencies
        service = serve(model, tmp_path / "service.log", port=port)
        pacs.wait_until(lambda: all_final(pacs), 120, "every instance segmented after the restart")
        images = set(pacs.sources().values())
        assert len(images) == 24 + len(probe.ids)
        assert pacs.seg_references() == dict.fromkeys(images, 1)
    finally:
        pacs.stop()
        stop_server(service)


def test_instances_stored_while_the_service_was_down_survive_an_orthanc_restart(
    model: Path, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there yet
    pacs = Orthanc(
        tmp_path / "orthanc", forwarder={"ServiceUrl": f"http://127.0.0.1:{port}", **PER_INSTANCE}
    )
    service: Server | None = None
    try:
        pacs.start()
        files = ct_series(tmp_path / "a", 4)
        pacs.store(files)
        pacs.wait_until(
            lambda: any("unreachable" in line for line in pacs.forwarder_lines()), 30, "a retry"
        )
        status, seconds = pacs.stop()  # the worker is waiting to retry: SIGTERM must still work
        assert status == 0
        assert seconds < 15

        service = serve(model, tmp_path / "service.log", port=port)
        pacs.start()
        pacs.wait_until(lambda: all_final(pacs), 60, "the 4 instances segmented after restarts")
        assert pacs.seg_references() == {_uid(path): 1 for path in files}
    finally:
        pacs.stop()
        if service is not None:
            stop_server(service)


class QuietServer(ThreadingHTTPServer):
    """A stand-in service whose clients (the forwarder being stopped) may hang up."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class Failing(BaseHTTPRequestHandler):
    """A service that fails every request with HTTP 500."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_instance_the_service_fails_on_is_given_up_after_the_retries(tmp_path: Path) -> None:
    server = QuietServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    pacs = Orthanc(
        tmp_path / "orthanc", forwarder={"ServiceUrl": url, "Retries": 2, **PER_INSTANCE}
    )
    pacs.start()
    try:
        pacs.store(ct_series(tmp_path / "a", 2))
        pacs.wait_until(lambda: all_final(pacs), 60, "both instances given up")
        outcomes = [pacs.outcome(i) for i in pacs.sources()]
        assert outcomes == ["failed HTTP 500", "failed HTTP 500"]
        errors = [line for line in pacs.forwarder_lines() if line.startswith("E")]
        assert len(errors) == 2
        assert all("SEG given up after 2 attempts" in e for e in errors)
    finally:
        pacs.stop()
        server.shutdown()
        server.server_close()


class Slow(BaseHTTPRequestHandler):
    """A service that takes 60 s to answer: Orthanc must still stop on SIGTERM meanwhile."""

    received = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        Slow.received.set()
        time.sleep(60)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_orthanc_stops_promptly_while_a_request_is_in_flight(tmp_path: Path) -> None:
    server = QuietServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    pacs = Orthanc(tmp_path / "orthanc", forwarder={"ServiceUrl": url, **PER_INSTANCE})
    pacs.start()
    try:
        pacs.store(ct_series(tmp_path / "a", 1))
        assert Slow.received.wait(30)
        status, seconds = pacs.stop()
        assert status == 0
        assert seconds < 15
    finally:
        pacs.stop()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("forwarder", "extra", "message"),
    [
        ({}, {}, "no service URL"),
        ({"ServiceUrl": "http://127.0.0.1:9"}, {"UserMetadata": {}}, "is not declared"),
        ({"ServiceUrl": "ftp://x"}, {}, "must start with http"),
        ({"ServiceUrl": "http://127.0.0.1:9", "Timeout": "soon"}, {}, "Timeout"),
    ],
)
def test_a_bad_setting_logs_one_error_and_orthanc_keeps_running(
    tmp_path: Path, forwarder: dict[str, object], extra: dict[str, object], message: str
) -> None:
    pacs = Orthanc(tmp_path / "orthanc", forwarder=forwarder, extra=extra)
    pacs.start()
    try:
        (line,) = pacs.forwarder_lines()
        assert line.startswith("E")
        assert "not started" in line
        assert message in line
        pacs.store(ct_series(tmp_path / "a", 1))  # Orthanc still stores
        assert len(pacs.get("/instances")) == 1
    finally:
        status, _ = pacs.stop()
        assert status == 0


def test_the_debian_recipe_works_as_written(model: Path, tmp_path: Path) -> None:
    """docs/dicom.md's recipe (deploy/orthanc/install-debian.sh) on a copy of /etc/orthanc."""
    service = serve(model, tmp_path / "service.log", UNET_API_KEYS="k")
    etc = tmp_path / "etc-orthanc"
    shutil.copytree("/etc/orthanc", etc)
    script = [str(ROOT / "deploy" / "orthanc" / "install-debian.sh"), service.url, "k"]
    env = {**os.environ, "ORTHANC_CONFIG_DIR": str(etc)}
    for _ in range(2):  # idempotent
        subprocess.run(script, env=env, check=True, capture_output=True)
    # What a site would not change, changed here only to run beside anything on 8042/4242:
    pacs = Orthanc(tmp_path / "orthanc", config_dir=etc)
    text = (etc / "orthanc.json").read_text()
    for key, value in {
        "HttpPort": pacs.http_port,
        "DicomPort": pacs.dicom_port,
        "StorageDirectory": f'"{tmp_path}/db"',
        "IndexDirectory": f'"{tmp_path}/db"',
        "StableAge": 2,  # Debian's 60 s: a series is "stable" that long after its last instance
    }.items():
        text = re.sub(rf'"{key}" *: *[^,]+,', f'"{key}" : {value},', text, count=1)
    (etc / "orthanc.json").write_text(text)
    assert (etc / "unet-forwarder.json").stat().st_mode & 0o007 == 0  # holds the API key

    pacs.start()
    try:
        (path,) = ct_series(tmp_path / "a", 1)  # a series of one: the default series mode
        pacs.store([path])
        pacs.wait_until(lambda: series_final(pacs), 30, "the series segmented")
        assert pacs.seg_references() == {_uid(path): 1}
    finally:
        pacs.stop()
        stop_server(service)


def test_a_stable_series_gets_one_seg_referencing_every_instance(
    service: Server, tmp_path: Path
) -> None:
    """The default: a 25-instance series stored with storescu -> exactly one SEG instance in
    one new series and one SR about it; an RT plan's series is refused and recorded;
    re-sent, nothing new."""
    pacs = Orthanc(tmp_path / "orthanc", forwarder={"ServiceUrl": service.url})
    pacs.start()
    try:
        files = ct_series(tmp_path / "a", 25)
        (rtplan,) = samples(tmp_path / "rt", ["rtplan.dcm"])
        pacs.store(files[::-1])
        pacs.store([rtplan])
        pacs.wait_until(lambda: series_final(pacs), 60, "the stable series segmented")
        segs = [
            i for i in pacs.instances() if i["metadata"].get("SopClassUid", "").endswith(".66.4")
        ]
        assert len(segs) == 1
        assert pacs.seg_references() == {_uid(p): 1 for p in files}
        seg_series = {pacs.get(f"/instances/{s['id']}/series")["ID"] for s in segs}
        ct_series_ids = {pacs.get(f"/instances/{i}/series")["ID"] for i in pacs.sources()}
        assert not seg_series & ct_series_ids  # a new series of its own
        outcomes = {
            s: pacs.get(f"/series/{s}/metadata?expand").get("UnetSegmentation", "")
            for s in pacs.get("/series")
        }
        (done,) = [o for o in outcomes.values() if o.startswith("seg ")]
        assert sum(o.startswith("refused HTTP 415") for o in outcomes.values()) == 1
        # The SR is stored beside the SEG, refers to it, and carries a volume per segment.
        _, seg_id, _, sr_id = done.split()
        assert seg_id == segs[0]["id"]
        report = pydicom.dcmread(io.BytesIO(pacs.file(sr_id)))
        assert report.SOPClassUID == COMPREHENSIVE_3D_SR
        seg = pydicom.dcmread(io.BytesIO(pacs.file(seg_id)))
        evidence = {
            item.ReferencedSOPInstanceUID
            for study in report.CurrentRequestedProcedureEvidenceSequence
            for ref in study.ReferencedSeriesSequence
            for item in ref.ReferencedSOPSequence
        }
        assert evidence == {seg.SOPInstanceUID, *map(_uid, files)}
        assert "Volume" in str(report.ContentSequence)
        pacs.store(files[:5])  # re-sent: Orthanc has them, nothing new
        time.sleep(4)  # longer than StableAge (2 s)
        assert len(pacs.seg_references()) == 25
        assert (
            sum(
                1
                for i in pacs.instances()
                if i["metadata"].get("SopClassUid", "").endswith(".66.4")
            )
            == 1
        )
    finally:
        pacs.stop()


def _uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def test_the_seg_is_sent_on_to_a_modality_and_a_dicomweb_server(
    service: Server, tmp_path: Path
) -> None:
    """Destinations: the SEG and SR of a series go on by C-STORE to storescp (down at first:
    retried until it is up) and by STOW-RS to a second Orthanc; the series is marked only
    then; one copy of each at each."""
    require([] if DICOMWEB_PLUGIN.exists() else ["Debian's orthanc-dicomweb"])
    archive = Orthanc(tmp_path / "archive", extra={"Plugins": [str(DICOMWEB_PLUGIN)]})
    storescp = Pacs(tmp_path / "storescp", free_port())
    pacs = Orthanc(
        tmp_path / "orthanc",
        forwarder={"ServiceUrl": service.url, "Destinations": ["PACS", "archive"]},
        extra={
            "Plugins": [str(PYTHON_PLUGIN), str(DICOMWEB_PLUGIN)],
            "DicomModalities": {"PACS": ["PACS", "127.0.0.1", storescp.port]},
            "DicomWeb": {"Servers": {"archive": [f"{archive.url}/dicom-web/"]}},
        },
    )
    try:
        archive.start(wait_forwarder=False)
        pacs.start()
        files = ct_series(tmp_path / "ct", 5)
        pacs.store(files)
        pacs.wait_until(
            lambda: any("results to PACS" in line for line in pacs.forwarder_lines()),
            60,
            "a try at the PACS, which is down",
        )
        assert not series_final(pacs)  # not marked while a destination has not accepted it
        storescp.start()
        pacs.wait_until(lambda: series_final(pacs), 60, "the SEG sent on everywhere")
        (received,) = storescp.received()
        (report,) = storescp.received(COMPREHENSIVE_3D_SR)
        assert len(storescp.received(None)) == 2
        sent = {pydicom.dcmread(received).SOPInstanceUID, pydicom.dcmread(report).SOPInstanceUID}
        assert pydicom.dcmread(received).SOPClassUID == SEGMENTATION
        archived = {
            archive.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
            for i in archive.get("/instances")
        }
        assert archived == sent  # one copy each, at each destination
    finally:
        pacs.stop()
        archive.stop()
        if storescp.process is not None:
            storescp.stop()


def test_each_series_goes_to_the_model_meant_for_its_modality(tmp_path: Path) -> None:
    """A repository of a CT model and an MR model (the default): Orthanc's CT series is
    segmented by the CT model; a PT series, for which no model is meant, is recorded as
    skipped with the reason and never posted."""
    models = modality_models(tmp_path / "models")
    env = {**ENV, "UNET_MODEL_REPOSITORY": str(models), "UNET_DEFAULT_MODEL": "mrnet"}
    service = start_server(env, tmp_path / "service.log")
    pacs = Orthanc(tmp_path / "orthanc", forwarder={"ServiceUrl": service.url})
    try:
        pacs.start()
        ct, pt = ct_and_pt_series(tmp_path)
        pacs.store([*ct, *pt])
        pacs.wait_until(lambda: series_final(pacs), 60, "both series' outcomes recorded")
        outcomes = {
            pacs.get(f"/series/{s}")["MainDicomTags"]["Modality"]: pacs.get(
                f"/series/{s}/metadata?expand"
            ).get("UnetSegmentation", "")
            for s in pacs.get("/series")
        }
        assert outcomes["PT"] == (
            "skipped no model is meant for this modality (the models: ctnet: CT; mrnet: MR)"
        )
        seg_id = outcomes["CT"].split()[1]
        seg = pydicom.dcmread(io.BytesIO(pacs.file(seg_id)))
        assert seg.SegmentSequence[0].SegmentAlgorithmName == "ctnet-card"
        # the PT series never reached /segment: one SEG and one SR request, both for CT
        posted = service.json_log(lambda line: line.get("route") == "/segment")
        assert [line.get("model") for line in posted] == ["ctnet", "ctnet"]
    finally:
        pacs.stop()
        stop_server(service)
