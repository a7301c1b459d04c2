"""pynetdicom's reactors woken instead of polled (app/gateway/reactor.py): the lines of
pynetdicom it relies on are still there, every byte arrives through it from dcmtk and from
pynetdicom, PDUs larger than one read included, an idle association does not spin, and
an association leaves no descriptor behind."""

from __future__ import annotations

import copy
import inspect
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from app.gateway import client, reactor
from app.gateway.receiver import TRANSFER_SYNTAXES
from tests.conftest import free_port
from tests.deploy.pacs import ct_series, require
from tests.gateway.peers import TOOLS, sent, storescu, until

CT = str(CTImageStorage)


def test_the_lines_of_pynetdicom_it_wakes_are_still_there() -> None:
    for function, line in reactor.POLLS:
        source = inspect.getsource(function)
        assert line in source, f"pynetdicom changed {function.__qualname__}: {line!r} is gone"


def test_the_contexts_copy_as_a_deep_copy_does() -> None:
    ae = AE()
    for context in AllStoragePresentationContexts:  # as the gateway's listener
        ae.add_supported_context(str(context.abstract_syntax), TRANSFER_SYNTAXES)
    contexts = reactor.Contexts(ae.supported_contexts)
    fast, generic = copy.deepcopy(contexts), copy.deepcopy(list(contexts))
    assert [vars(c) for c in fast] == [vars(c) for c in generic]
    assert len(fast) == len(AllStoragePresentationContexts)
    for original, twin in zip(contexts, fast, strict=True):
        assert twin is not original
        assert twin._transfer_syntax is not original._transfer_syntax
        for name, value in vars(twin).items():  # nothing else that a deep copy would copy
            assert name == "_transfer_syntax" or isinstance(value, (type(None), int, str)), name


class Scp:
    """A pynetdicom Storage SCP in this process, woken, that keeps what it receives."""

    def __init__(self) -> None:
        reactor.install()
        self.received: dict[str, bytes] = {}
        self.largest_pdu = 0
        self.ae = AE(ae_title="WOKEN")
        self.ae.maximum_pdu_size = 0  # what the sender proposes, as the gateway
        self.ae.add_supported_context(CT)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_DATA_RECV, self._data),
            (evt.EVT_CONN_OPEN, client._no_delay),
        ]
        self.port = free_port()
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=handlers
        )

    def _store(self, event: Any) -> int:
        self.received[str(event.dataset.SOPInstanceUID)] = bytes(event.dataset.PixelData)
        return 0x0000

    def _data(self, event: Any) -> None:
        self.largest_pdu = max(self.largest_pdu, len(event.data))

    def associations(self) -> list[Any]:
        return list(self.server.active_associations)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scp() -> Iterator[Scp]:
    running = Scp()
    yield running
    running.stop()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def pixels(path: Path) -> tuple[str, bytes]:
    ds = pydicom.dcmread(path)
    return str(ds.SOPInstanceUID), bytes(ds.PixelData)


def test_every_byte_arrives_through_the_woken_reactors(scp: Scp, tmp_path: Path) -> None:
    require([name for name in ("storescu",) if TOOLS[name] is None], "make system-deps (dcmtk)")
    before = open_descriptors()
    from_dcmtk = ct_series(tmp_path / "dcmtk", 4, size=512)
    sent(storescu(scp.port, from_dcmtk, called="WOKEN"))
    # pynetdicom sends a dataset in one PDU to a peer without a limit: 1 MiB, four reads
    (large,) = ct_series(tmp_path / "pynetdicom", 1, size=724)
    scu = AE(ae_title="SENDER")
    scu.add_requested_context(CT)
    assoc = scu.associate("127.0.0.1", scp.port, ae_title="WOKEN")
    assert assoc.is_established
    assert assoc.send_c_store(pydicom.dcmread(large)).Status == 0x0000
    assoc.release()
    assert scp.largest_pdu > reactor.PIECE
    assert scp.received == dict(pixels(path) for path in [*from_dcmtk, large])
    until(lambda: not scp.associations(), "both associations ended", 10)
    until(lambda: open_descriptors() <= before, "their descriptors closed", 10)


def cpu_seconds(thread_id: int) -> float:
    """A thread's user and system time (/proc: clock ticks)."""
    fields = Path(f"/proc/self/task/{thread_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_an_idle_association_does_not_spin(scp: Scp) -> None:
    scu = AE(ae_title="IDLE")
    scu.add_requested_context(CT)
    assoc = scu.associate("127.0.0.1", scp.port, ae_title="WOKEN")
    assert assoc.is_established
    try:
        until(lambda: len(scp.associations()) == 1, "the association on the SCP's side", 10)
        (served,) = scp.associations()
        threads = [served.native_id, served.dul.native_id]
        spent = [cpu_seconds(t) for t in threads]
        time.sleep(2.0)  # idle: both threads only wake each millisecond, as pynetdicom's own
        idle = [cpu_seconds(t) - s for t, s in zip(threads, spent, strict=True)]
        assert all(seconds < 0.5 for seconds in idle), idle  # spinning would be about 2 s
    finally:
        assoc.release()


def test_sends_in_a_row_each_get_their_response(tmp_path: Path) -> None:
    """The woken reactor of a sending association must not take the wake-up meant for the
    send_c_store that waits for its response (which would then wait out dimse_timeout):
    an SCP that answers at once, both ends without Nagle's delay, 300 sends in a row."""
    reactor.install()
    ae = AE(ae_title="QUICK")
    ae.add_supported_context(CT)
    port = free_port()
    handlers: list[Any] = [
        (evt.EVT_C_STORE, lambda event: 0x0000),
        (evt.EVT_CONN_OPEN, client._no_delay),
    ]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    (path,) = ct_series(tmp_path, 1, size=16)
    dataset = pydicom.dcmread(path)
    scu = AE(ae_title="SENDER")
    scu.add_requested_context(CT)
    scu.dimse_timeout = 2  # a stolen wake-up: no response within it, the association aborts
    assoc = scu.associate("127.0.0.1", port, ae_title="QUICK", evt_handlers=handlers[1:])
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(dataset).get("Status") for _ in range(300)]
    finally:
        assoc.release()
        server.shutdown()
    assert statuses == [0x0000] * 300
