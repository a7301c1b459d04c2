"""The C-STORE response, encoded by hand: pynetdicom builds a pydicom Dataset for each and
encodes it, 0.6 ms of the gateway's ~6 ms an instance (a 512 x 512 CT on loopback),
for seven fixed elements.

``StoreResponse`` takes the place of pynetdicom's C_STORE_RSP message for the responses
the listener sends (with pynetdicom's own event log off, as the gateway has it). A
response with only what the gateway's statuses carry (the SOP class and instance, the
message id, the status; its UIDs ASCII) is encoded here, in Implicit VR Little
Endian as PS3.7 6.3.1 has every command set, one PDV when the peer's largest PDU takes
it; any other (an error comment, an offending element) goes pynetdicom's way. A test
compares both encodings, byte for byte, over many responses.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pynetdicom.dimse
from pydicom import Dataset
from pynetdicom import _config
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

C_STORE_RSP_FIELD, NO_DATASET = 0x8001, 0x0101
PDV_HEADER = 6  # its length (4) and context id (1), and the message control header (1)


def _element(element: int, value: bytes) -> bytes:
    """One command element of group 0000, Implicit VR Little Endian."""
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\0" if len(data) % 2 else data  # UI is padded with NUL to even length


def encode_command(sop_class: str, message_id: int, status: int, sop_instance: str) -> bytes:
    """The command set of a C-STORE-RSP without a dataset (PS3.7 9.3.1.2), with its group
    length first."""
    rest = b"".join(
        (
            _element(0x0002, _uid(sop_class)),
            _element(0x0100, struct.pack("<H", C_STORE_RSP_FIELD)),
            _element(0x0120, struct.pack("<H", message_id)),
            _element(0x0800, struct.pack("<H", NO_DATASET)),
            _element(0x0900, struct.pack("<H", status)),
            _element(0x1000, _uid(sop_instance)),
        )
    )
    return _element(0x0000, struct.pack("<I", len(rest))) + rest


class StoreResponse(C_STORE_RSP):
    """pynetdicom's C_STORE_RSP with the command set of a plain response encoded here; any
    other is pynetdicom's own message (``_full``), made and encoded as it makes them."""

    def __init__(self) -> None:  # not C_STORE_RSP's: its empty Dataset costs 0.1 ms
        self.context_id: int | None = None
        self.command_set = Dataset()  # filled for pynetdicom's way only
        self.data_set: BytesIO | None = BytesIO()
        self._data_set_path = None
        self._encoded: bytes | None = None
        self._full: C_STORE_RSP | None = None
        self._primitive: Any = None

    def primitive_to_message(self, primitive: Any) -> None:
        self._primitive = primitive
        fields = (
            primitive.AffectedSOPClassUID,
            primitive.MessageIDBeingRespondedTo,
            primitive.Status,
            primitive.AffectedSOPInstanceUID,
        )
        extra = (primitive.ErrorComment, primitive.OffendingElement)
        odd = not all(str(uid).isascii() for uid in (fields[0], fields[3]))  # a peer's bad UID
        if any(value is None for value in fields) or any(v is not None for v in extra) or odd:
            self._pynetdicoms()
            return
        sop_class, message_id, status, sop_instance = fields
        self._encoded = encode_command(str(sop_class), message_id, status, str(sop_instance))

    def _pynetdicoms(self) -> C_STORE_RSP:
        full = self._full = C_STORE_RSP()
        full.primitive_to_message(self._primitive)
        self.command_set = full.command_set
        return full

    def encode_msg(self, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
        encoded = self._encoded
        if encoded is None or 0 < max_pdu_length < len(encoded) + PDV_HEADER:
            full = self._full or self._pynetdicoms()  # a PDU too small for one PDV: fragments
            yield from full.encode_msg(context_id, max_pdu_length)
            return
        self.context_id = context_id
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
        yield pdata  # the last (and only) fragment of a command: bits xxxxxx11


def response() -> C_STORE_RSP:
    """The message of a C-STORE response: ours, unless pynetdicom's own event log is on
    (its handler knows its own class alone; the gateway turns that log off)."""
    return StoreResponse() if _config.LOG_HANDLER_LEVEL == "none" else C_STORE_RSP()


def install() -> None:
    """Every C-STORE response pynetdicom sends from now on is made by ``response``."""
    pynetdicom.dimse._RSP_TO_MESSAGE[C_STORE] = response  # type: ignore[assignment]
