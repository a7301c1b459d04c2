"""The gateway's worker on its own: a round or a delivery that raises is tried again later
and never holds up the others."""

from __future__ import annotations

import io
import ipaddress
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from app.gateway import client, worker
from app.gateway.hosts import HostNames
from app.gateway.metrics import Metrics
from app.gateway.settings import Destination, GatewaySettings
from app.gateway.store import GatewayStore
from app.gateway.worker import Worker
from tests.deploy.pacs import ct_series
from tests.gateway.peers import until

SEG_UID = "2.25.7"


def fake_seg() -> bytes:
    return seg_with_uid(SEG_UID)


FAKE_SR = f"an SR measuring the SEG {SEG_UID}".encode()


def test_a_delivery_that_raises_is_retried_and_the_next_one_still_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = GatewaySettings(dicom_destinations="PACS@127.0.0.1:104", dicom_state_dir=tmp_path)
    store = GatewayStore(tmp_path)
    for series in ("broken", "fine"):
        store.add_instance(series, "a", lambda f: f.write(b"x"))
    broken, fine = sorted(store.close_stable(0), key=lambda r: r.series)
    for item in (broken, fine):
        store.segmented(item, {"seg": item.series.encode()}, ["PACS@127.0.0.1:104"])

    def send(
        settings: object, destination: object, paths: list[Path], tls: object
    ) -> client.Outcome:
        if paths[0].read_bytes() == b"broken":
            raise RuntimeError("the peer aborted the association")
        return client.Outcome("ok", "C-STORE 0x0000")

    monkeypatch.setattr(client, "send", send)
    worker = Worker(settings, store, Metrics(store))
    worker.send_due("PACS@127.0.0.1:104")
    assert store.result_files(fine) == []  # delivered and gone
    assert len(store.result_files(broken)) == 1
    assert store.due_deliveries() == []  # the broken one waits for its back-off
    assert store.counts() == {"sending": 1, "to PACS@127.0.0.1:104": 1}


def test_results_are_seg_then_sr_and_never_an_sr_alone() -> None:
    assert GatewaySettings().dicom_results == ["seg", "sr"]
    assert GatewaySettings(dicom_results=" SR, seg ,sr").dicom_results == ["seg", "sr"]
    assert GatewaySettings(dicom_results="seg").dicom_results == ["seg"]
    for bad in ("sr", "seg,pdf", ""):
        with pytest.raises(ValidationError, match="UNET_DICOM_RESULTS"):
            GatewaySettings(dicom_results=bad)


@pytest.mark.parametrize(
    ("sr_outcome", "stored", "state"),
    [
        (client.Outcome("ok", "HTTP 200", FAKE_SR), ["SEG", FAKE_SR], "kept"),
        (client.Outcome("refused", "HTTP 422: no spacing"), ["SEG"], "kept"),  # the SEG alone
        # the SEG waits on disk for the SR's next try
        (client.Outcome("retry", "HTTP 503", retry_after=5), ["SEG"], "segmenting"),
    ],
)
def test_a_round_keeps_its_seg_when_only_the_sr_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sr_outcome: client.Outcome,
    stored: list[bytes | str],
    state: str,
) -> None:
    store = GatewayStore(tmp_path)
    store.add_instance("s", "a", lambda f: f.write(b"x"))
    (item,) = store.close_stable(0)
    asked = []

    def segment(settings: object, series: object, kind: str, model: str) -> client.Outcome:
        asked.append(kind)
        return client.Outcome("ok", "HTTP 200", fake_seg()) if kind == "seg" else sr_outcome

    monkeypatch.setattr(client, "segment", segment)
    monkeypatch.setattr(client, "choose_model", lambda settings, modality: client.Outcome("ok", ""))
    monkeypatch.setattr(worker, "modality", lambda path: "CT")
    Worker(GatewaySettings(dicom_state_dir=tmp_path), store, Metrics(store)).segment_due()
    assert asked == ["seg", "sr"]
    expected = [fake_seg() if kept == "SEG" else kept for kept in stored]
    assert [p.read_bytes() for p in store.result_files(item)] == expected
    assert store.counts() == {state: 1}


@pytest.mark.parametrize(
    ("choice", "state", "reason"),
    [
        (client.Outcome("refused", "no model is meant for this modality"), "refused",
         "skipped: no model is meant for this modality"),
        (client.Outcome("retry", "the service is unreachable (ConnectError)"), "segmenting",
         None),
    ],
)  # fmt: skip
def test_a_round_no_model_is_meant_for_is_skipped_and_never_posted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    choice: client.Outcome,
    state: str,
    reason: str | None,
) -> None:
    store = GatewayStore(tmp_path)
    store.add_instance("s", "a", lambda f: f.write(b"x"))
    store.close_stable(0)
    asked: list[str] = []
    monkeypatch.setattr(
        client, "choose_model", lambda settings, modality: asked.append(modality) or choice
    )
    monkeypatch.setattr(client, "segment", lambda *args: pytest.fail("posted"))
    monkeypatch.setattr(worker, "modality", lambda path: "PT")
    metrics = Metrics(store)
    Worker(GatewaySettings(dicom_state_dir=tmp_path), store, metrics).segment_due()
    assert asked == ["PT"]
    assert store.counts() == {state: 1}
    with sqlite3.connect(tmp_path / "queue.sqlite") as db:
        (detail,) = db.execute("SELECT detail FROM rounds").fetchone()
    assert detail == (reason or choice.detail)
    skipped = 'unet_gateway_series_total{outcome="skipped"} 1.0'
    assert (skipped in generate_latest(metrics.registry).decode()) == (reason is not None)


def test_the_modality_is_read_from_the_header_and_empty_when_unreadable(tmp_path: Path) -> None:
    (ct,) = ct_series(tmp_path / "ct", 1, size=16)
    assert worker.modality(ct) == "CT"
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"x")
    assert worker.modality(broken) == ""


def test_the_sender_is_woken_by_a_segmented_round_not_by_its_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender has looked once and found nothing; then a round is segmented. With a
    poll of an hour, only the segmenter's wake-up can send it."""
    monkeypatch.setattr(worker, "POLL_S", 3600.0)
    settings = GatewaySettings(dicom_destinations="PACS@127.0.0.1:104", dicom_state_dir=tmp_path)
    store = GatewayStore(tmp_path)
    store.add_instance("s", "a", lambda f: f.write(b"x"))
    store.close_stable(0)
    looked, sent = threading.Event(), threading.Event()

    def segment(settings: object, series: object, kind: str, model: str) -> client.Outcome:
        assert looked.wait(30), "the sender never looked"
        return client.Outcome("ok", "HTTP 200", fake_seg() if kind == "seg" else FAKE_SR)

    def send(settings: object, destination: object, paths: list[Path], tls: object) -> object:
        sent.set()
        return client.Outcome("ok", "C-STORE 0x0000")

    monkeypatch.setattr(client, "choose_model", lambda settings, modality: client.Outcome("ok", ""))
    monkeypatch.setattr(client, "segment", segment)
    monkeypatch.setattr(client, "send", send)
    monkeypatch.setattr(worker, "modality", lambda path: "CT")
    send_due = Worker.send_due

    def sender_step(self: Worker, name: str) -> None:
        send_due(self, name)
        looked.set()

    monkeypatch.setattr(Worker, "send_due", sender_step)
    node = Worker(settings, store, Metrics(store))
    node.start()
    try:
        assert sent.wait(30), "the segmented round was not sent"
        until(lambda: store.counts() == {}, "the round delivered and gone", 30)
    finally:
        node.stop()
    assert not any(thread.is_alive() for thread in node._threads)  # stop wakes every loop


@pytest.mark.parametrize(
    ("allowed", "peer", "admitted"),
    [
        ("CT1", "10.1.2.3", True),
        ("CT1@10.1.2.3", "10.1.2.3", True),
        ("CT1@10.1.2.3", "::ffff:10.1.2.3", True),  # a dual-stack listener's view of it
        ("CT1@10.1.2.3", "10.1.2.4", False),
        ("CT1@localhost", "127.0.0.1", True),  # a host name: the addresses it resolves to
        ("CT1@localhost", "10.1.2.3", False),
        ("CT1@no-such-host.invalid", "10.1.2.3", False),  # does not resolve: no one
        ("CT1@::1", "::1", True),
        ("MR2@10.1.2.3", "10.1.2.3", False),  # another AE title from the right host
    ],
)
def test_an_allowed_caller_by_address_or_host_name(allowed: str, peer: str, admitted: bool) -> None:
    settings = GatewaySettings(dicom_allowed=allowed)
    assert settings.admits("CT1", peer) is admitted


def test_an_sr_that_failed_is_asked_again_without_the_seg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5xx for the SR after the SEG was made: the next try asks for the SR alone (the SEG
    is not computed twice), and after a restart of the gateway too."""
    store = GatewayStore(tmp_path)
    store.add_instance("s", "a", lambda f: f.write(b"x"))
    (item,) = store.close_stable(0)
    asked, answers = [], {"seg": [fake_seg()], "sr": [None, None, FAKE_SR]}

    def segment(settings: object, series: object, kind: str, model: str) -> client.Outcome:
        asked.append(kind)
        body = answers[kind].pop(0)
        return (
            client.Outcome("retry", "HTTP 503") if body is None else client.Outcome("ok", "", body)
        )

    monkeypatch.setattr(client, "segment", segment)
    monkeypatch.setattr(client, "choose_model", lambda settings, modality: client.Outcome("ok", ""))
    monkeypatch.setattr(worker, "modality", lambda path: "CT")
    for attempt in range(3):
        Worker(GatewaySettings(dicom_state_dir=tmp_path), store, Metrics(store)).segment_due()
        with sqlite3.connect(tmp_path / "queue.sqlite") as db:  # due again at once
            db.execute("UPDATE rounds SET next = 0")
        if attempt == 1:  # a restart between two tries
            store.close()
            store = GatewayStore(tmp_path)
    assert asked == ["seg", "sr", "sr", "sr"]
    assert [p.read_bytes() for p in store.result_files(item)] == [fake_seg(), FAKE_SR]
    assert store.counts() == {"kept": 1}


def test_a_destination_that_hangs_holds_up_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each destination has a sender of its own: one whose peer never answers (until its
    time-out, 30 s and more) leaves the others' rounds going out at once."""
    dead, alive = "DEAD@10.255.255.1:104", "PACS@127.0.0.1:104"
    settings = GatewaySettings(
        dicom_destinations=f"{dead},{alive}", dicom_state_dir=tmp_path / "state"
    )
    store = GatewayStore(tmp_path / "state")
    for series in ("one", "two"):
        store.add_instance(series, "a", lambda f: f.write(b"x"))
    for item in store.close_stable(0):
        store.segmented(item, {"seg": b"SEG"}, [dead, alive, "GONE@127.0.0.1:104"])
    release, delivered = threading.Event(), []

    def send(settings: object, destination: Destination, paths: list[Path], tls: object) -> object:
        if destination.name == dead:
            release.wait(30)  # a peer that never answers, until the test ends
            return client.Outcome("retry", "association not established")
        delivered.append(destination.name)
        return client.Outcome("ok", "C-STORE 0x0000")

    monkeypatch.setattr(client, "send", send)
    caplog.set_level(logging.WARNING, logger="app.gateway")
    node = Worker(settings, store, Metrics(store))
    node.start()
    try:
        until(lambda: delivered == [alive, alive], "both rounds at the live destination", 10)
        assert store.counts()[f"to {dead}"] == 2
    finally:
        release.set()
        node.stop()
    assert "2 round(s) wait for GONE@127.0.0.1:104, no longer in" in caplog.text


def test_an_association_never_waits_on_dns(caplog: pytest.LogCaptureFixture) -> None:
    """The listener's host names are looked up before it opens and then in the background:
    admitting a caller reads what was found (a resolver that hangs holds up no one)."""
    asked: list[str] = []

    def resolve(name: str) -> frozenset[Any]:
        asked.append(name)
        return (
            frozenset({ipaddress.ip_address("10.1.2.3")}) if name == "ct.example" else frozenset()
        )

    settings = GatewaySettings(dicom_allowed="CT1@ct.example,MR2@gone.example,US3@10.9.9.9")
    assert settings.allowed_host_names() == ["ct.example", "gone.example"]
    hosts = HostNames(settings.allowed_host_names(), resolve)
    caplog.set_level(logging.WARNING, logger="app.gateway")
    hosts.start()
    try:
        for _ in range(100):
            assert settings.admits("CT1", "10.1.2.3", hosts)
            assert settings.admits("CT1", "::ffff:10.1.2.3", hosts)
            assert not settings.admits("CT1", "10.1.2.4", hosts)
            assert not settings.admits("MR2", "10.1.2.3", hosts)  # its name resolves to none
            assert settings.admits("US3", "10.9.9.9", hosts)
        assert asked == ["ct.example", "gone.example"]  # once each, at start
        assert "allowed host gone.example resolves to no address" in caplog.text
    finally:
        hosts.stop()


def test_a_kept_seg_that_the_new_sr_does_not_measure_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SEG kept from a try whose SR failed, then the model replaced: the SR made now
    quotes another SEG. Both are asked again, so that what goes out goes together."""
    store = GatewayStore(tmp_path)
    store.add_instance("s", "a", lambda f: f.write(b"x"))
    (item,) = store.close_stable(0)
    old_seg, new_seg = seg_with_uid("2.25.1"), seg_with_uid("2.25.2")
    store.keep_result(item, "seg", old_seg)  # the SR's try failed, the model was replaced
    asked: list[str] = []

    def segment(settings: object, series: object, kind: str, model: str) -> client.Outcome:
        asked.append(kind)
        body = new_seg if kind == "seg" else b"SR quoting 2.25.2 as its SEG"
        return client.Outcome("ok", "HTTP 200", body)

    monkeypatch.setattr(client, "segment", segment)
    monkeypatch.setattr(client, "choose_model", lambda settings, modality: client.Outcome("ok", ""))
    monkeypatch.setattr(worker, "modality", lambda path: "CT")
    Worker(GatewaySettings(dicom_state_dir=tmp_path), store, Metrics(store)).segment_due()
    assert asked == ["sr", "seg", "sr"]
    seg, sr = (p.read_bytes() for p in store.result_files(item))
    assert (seg, sr) == (new_seg, b"SR quoting 2.25.2 as its SEG")


def seg_with_uid(uid: str) -> bytes:
    """A Part 10 file with this SOP Instance UID (all _refers reads of a SEG)."""
    dataset = pydicom.Dataset()
    dataset.SOPInstanceUID = uid
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    dataset.file_meta = pydicom.dataset.FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()
