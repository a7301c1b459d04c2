"""The gateway's C-STORE of a round's results against a real pynetdicom SCP on 127.0.0.1
that stores Segmentations but no SRs: the round is not delivered, and the reason says why."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import SegmentationStorage  # type: ignore[attr-defined]

from app.codecs.dicom_seg import encode_seg
from app.codecs.dicom_sr import encode_sr
from app.gateway import client
from app.gateway.settings import GatewaySettings, parse_destination
from tests.api.test_dicom_series import ct_series
from tests.conftest import free_port


@pytest.fixture
def seg_only_pacs() -> Iterator[tuple[int, list[str]]]:
    """A C-STORE SCP of Segmentation Storage alone; yields its port and what it stored."""
    stored: list[str] = []

    def on_store(event: evt.Event) -> int:
        stored.append(str(event.dataset.SOPClassUID))
        return 0x0000

    ae = AE(ae_title="SEGONLY")
    ae.add_supported_context(SegmentationStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield port, stored
    finally:
        server.shutdown()


def results(folder: Path) -> list[Path]:
    sources = [pydicom.dcmread(io.BytesIO(b)) for b in ct_series(2, seed=11)]
    masks = [np.zeros((128, 128), np.uint8) for _ in sources]
    masks[0][10:20, 10:20] = 1
    args = (sources, masks, ["background", "lesion"], "m", "1")
    paths = [folder / "r.seg.dcm", folder / "r.sr.dcm"]
    paths[0].write_bytes(encode_seg(*args))
    paths[1].write_bytes(encode_sr(*args))
    return paths


def test_a_destination_without_sr_storage_is_told_apart(
    seg_only_pacs: tuple[int, list[str]], tmp_path: Path
) -> None:
    port, stored = seg_only_pacs
    destination = parse_destination(f"SEGONLY@127.0.0.1:{port}")
    settings = GatewaySettings(dicom_state_dir=tmp_path)
    seg, sr = results(tmp_path)
    outcome = client.send(settings, destination, [seg, sr], None)
    assert (outcome.kind, outcome.detail) == ("retry", "the destination accepts no SR storage")
    assert stored == []  # nothing half-delivered
    assert client.send(settings, destination, [seg], None).kind == "ok"  # UNET_DICOM_RESULTS=seg
    assert stored == ["1.2.840.10008.5.1.4.1.1.66.4"]


def test_the_scu_sends_without_nagles_delay(
    seg_only_pacs: tuple[int, list[str]], tmp_path: Path
) -> None:
    """A C-STORE's dataset follows its command at once: TCP_NODELAY on the SCU's socket,
    set before the association is requested."""
    port, _ = seg_only_pacs
    destination = parse_destination(f"SEGONLY@127.0.0.1:{port}")
    settings = GatewaySettings(dicom_state_dir=tmp_path)
    assoc = client._associate(settings, destination, None, (SegmentationStorage,))
    try:
        assert assoc.is_established
        peer = assoc.dul.socket.socket
        assert peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        assoc.release()
