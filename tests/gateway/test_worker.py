"""The gateway's worker on its own: a round or a delivery that raises is tried again later
and never holds up the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.gateway import client
from app.gateway.metrics import Metrics
from app.gateway.settings import GatewaySettings
from app.gateway.store import GatewayStore
from app.gateway.worker import Worker


def test_a_delivery_that_raises_is_retried_and_the_next_one_still_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = GatewaySettings(dicom_destinations="PACS@127.0.0.1:104", dicom_state_dir=tmp_path)
    store = GatewayStore(tmp_path)
    for series in ("broken", "fine"):
        store.add_instance(series, "a", lambda path: path.write_bytes(b"x"))
    broken, fine = sorted(store.close_stable(0), key=lambda r: r.series)
    for item in (broken, fine):
        store.segmented(item, item.series.encode(), ["PACS@127.0.0.1:104"])

    def send(settings: object, destination: object, path: Path, tls: object) -> client.Outcome:
        if path.read_bytes() == b"broken":
            raise RuntimeError("the peer aborted the association")
        return client.Outcome("ok", "C-STORE 0x0000")

    monkeypatch.setattr(client, "send", send)
    worker = Worker(settings, store, Metrics(store))
    worker.send_due()
    assert not store.result(fine).exists()  # delivered and gone
    assert store.result(broken).exists()
    assert store.due_deliveries() == []  # the broken one waits for its back-off
    assert store.counts() == {"sending": 1, "to PACS@127.0.0.1:104": 1}
