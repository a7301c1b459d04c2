"""The C-STORE response encoded by hand (app/gateway/responses.py) is pynetdicom's own,
byte for byte, PDV for PDV, and reads back through pynetdicom as the response sent."""

from __future__ import annotations

import pynetdicom.dimse
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pynetdicom import _config
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from app.gateway import responses
from app.gateway.responses import StoreResponse

UIDS = st.from_regex(r"\A[12](\.(0|[1-9][0-9]{0,12})){1,14}\Z").filter(lambda u: len(u) <= 64)
STATUSES = st.sampled_from([0x0000, 0xA700, 0xA900, 0xB000, 0xB007, 0xC000, 0xC210, 0xFFFF])
PDU_SIZES = st.sampled_from([0, 16, 64, 100, 150, 16382, 131072])


def response(sop_class: str, message_id: int, status: int, sop_instance: str) -> C_STORE:
    primitive = C_STORE()
    primitive.AffectedSOPClassUID = sop_class
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.Status = status
    primitive.AffectedSOPInstanceUID = sop_instance
    return primitive


def pdvs(message: C_STORE_RSP, primitive: C_STORE, context_id: int, pdu: int) -> list[object]:
    message.primitive_to_message(primitive)
    pieces = message.encode_msg(context_id, pdu)
    return [pdv for piece in pieces for pdv in piece.presentation_data_value_list]


def read_back(pieces: list[object]) -> C_STORE:
    """The response as pynetdicom's DIMSE provider reads it off the wire."""
    message = C_STORE_RSP()
    done = False
    for pdv in pieces:
        data = P_DATA()
        data.presentation_data_value_list.append(pdv)
        done = message.decode_msg(data)
    assert done
    primitive = message.message_to_primitive()
    assert isinstance(primitive, C_STORE)
    return primitive


@given(
    sop_class=UIDS,
    sop_instance=UIDS,
    message_id=st.integers(0, 0xFFFF),
    status=STATUSES,
    context_id=st.integers(1, 255).filter(lambda n: n % 2),
    pdu=PDU_SIZES,
)
def test_a_plain_response_is_pynetdicoms_byte_for_byte(
    sop_class: str, sop_instance: str, message_id: int, status: int, context_id: int, pdu: int
) -> None:
    primitive = response(sop_class, message_id, status, sop_instance)
    ours = pdvs(StoreResponse(), primitive, context_id, pdu)
    assert ours == pdvs(C_STORE_RSP(), primitive, context_id, pdu)
    back = read_back(ours)
    assert (back.AffectedSOPClassUID, back.AffectedSOPInstanceUID) == (sop_class, sop_instance)
    assert (back.MessageIDBeingRespondedTo, back.Status) == (message_id, status)


@given(comment=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9 .,()]{0,62}[A-Za-z0-9]\Z"))
def test_a_response_with_an_error_comment_goes_pynetdicoms_way(comment: str) -> None:
    primitive = response("1.2.840.10008.5.1.4.1.1.2", 7, 0xC210, "1.2.3.4")
    primitive.ErrorComment = comment  # LO: no backslash, no leading or trailing space
    ours = pdvs(StoreResponse(), primitive, 1, 16382)
    assert ours == pdvs(C_STORE_RSP(), primitive, 1, 16382)
    assert read_back(ours).ErrorComment == comment


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom's, as it encodes
@given(uid=st.sampled_from(["1.2.3\u00e9", "1.2.\u00b2"]), where=st.sampled_from(["class", "sop"]))
def test_a_uid_that_is_not_ascii_goes_pynetdicoms_way(uid: str, where: str) -> None:
    """A peer's malformed UID (pydicom reads the command set as Latin-1): pynetdicom
    encodes it as it does, where the hand encoder would raise and leave the peer waiting."""
    sop_class, sop = (uid, "1.2.3") if where == "class" else ("1.2.840.10008.5.1.4.1.1.2", uid)
    primitive = response(sop_class, 3, 0x0000, sop)
    expected = pdvs(C_STORE_RSP(), primitive, 1, 16382)
    assert pdvs(StoreResponse(), primitive, 1, 16382) == expected


def test_install_makes_every_c_store_response_ours_while_pynetdicoms_log_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    responses.install()
    make = pynetdicom.dimse._RSP_TO_MESSAGE[C_STORE]
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    assert type(make()) is StoreResponse
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "standard")  # its handler knows its own
    assert type(make()) is C_STORE_RSP
