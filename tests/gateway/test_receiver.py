"""The listener in this process, with pynetdicom's loggers at DEBUG: what the gateway
receives leaves no UID in any log line, pynetdicom's included."""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from app.gateway.metrics import Metrics
from app.gateway.receiver import Receiver
from app.gateway.settings import GatewaySettings
from app.gateway.store import GatewayStore
from tests.conftest import free_port
from tests.deploy.pacs import ct_series


def test_pynetdicom_logs_no_uid_of_what_the_gateway_receives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "standard")  # as shipped; restored after
    caplog.set_level(logging.DEBUG, logger="pynetdicom")
    settings = GatewaySettings(dicom_state_dir=tmp_path, dicom_port=free_port())
    store = GatewayStore(tmp_path / "state")
    receiver = Receiver(settings, store, Metrics(store))
    receiver.start()
    (path,) = ct_series(tmp_path / "ct", 1, size=64)
    dataset = pydicom.dcmread(path)
    try:
        scu = AE(ae_title="MODALITY")
        scu.add_requested_context(CTImageStorage)
        assoc = scu.associate("127.0.0.1", receiver.port, ae_title="UNET")
        assert assoc.is_established
        try:
            assert assoc.send_c_store(dataset).Status == 0x0000
        finally:
            assoc.release()
    finally:
        receiver.stop()
        store.close()
    assert len(list((tmp_path / "state" / "rounds").rglob("*.dcm"))) == 1  # it was received
    text = "\n".join(record.getMessage() for record in caplog.records)
    for uid in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        assert str(dataset[uid].value) not in text, uid
