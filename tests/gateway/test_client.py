"""The gateway's C-STORE of a round's results against a real pynetdicom SCP on 127.0.0.1
that stores Segmentations but no SRs: the round is not delivered, and the reason says why."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
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


def _answer(status: int, document: object = None) -> httpx.Response:
    body = b"" if document is None else json.dumps(document).encode()
    return httpx.Response(status, content=body)


def _items(*uids: str, reason: int | None = None) -> dict[str, object]:
    items = [
        {"00081155": {"vr": "UI", "Value": [uid]}}
        | ({} if reason is None else {"00081197": {"vr": "US", "Value": [reason]}})
        for uid in uids
    ]
    return {"vr": "SQ", "Value": items}


@pytest.mark.parametrize(
    ("status", "document", "lost"),
    [
        (200, None, []),  # no body: a 200 stored all
        (200, {"00081199": _items("1.2", "1.3")}, []),
        (200, {"00081198": {"vr": "SQ"}, "00081199": _items("1.2")}, ["none given"]),  # Orthanc
        (202, {"00081198": _items("1.3", reason=0xA700), "00081199": _items("1.2")}, ["0xA700"]),
        (200, {"00081198": _items("1.3", reason=0x0110)}, ["0x0110"]),
        (202, {"00081199": _items("1.2", "1.3")}, []),  # stored both, with warnings
        (202, None, None),  # which failed, unsaid
        (202, {"detail": "partly"}, None),
    ],
)
def test_what_a_stow_rs_answer_left_unstored(
    status: int, document: object, lost: list[str] | None
) -> None:
    """PS3.18 10.5.3: the Failed SOP Sequence (0008,1198) and the Referenced SOP Sequence
    (0008,1199) of a STOW-RS answer, for the SEG (1.2) and the SR (1.3) sent."""
    assert client._not_stored(_answer(status, document), ["1.2", "1.3"]) == lost
