"""pynetdicom's reactors woken instead of polled, and its PDUs read in large pieces.

pynetdicom (3.0) runs an association in two threads that poll. The DUL thread, which reads
and writes the socket, sleeps ``_run_loop_delay`` (1 ms) after every turn of its loop that
found nothing to do; the association's reactor, which hands DIMSE messages to our
handlers, sleeps 1 ms at every turn. Each C-STORE waits for both: the DUL to read its last
PDU, the reactor to notice the message, the DUL to notice the response to send. On
loopback that was 1.3 ms of the 4.1 ms pynetdicom takes per 512 x 512 CT instance before
its handler does anything (``python -m bench.gateway``, the floor rows).

``install()`` turns both sleeps into waits that end as soon as there is work: the DUL
thread waits on its socket and on a socket pair written whenever a primitive is queued
for it to send; the reactor waits on its DIMSE message queue. Idle, both still wake every
1 ms as before, so the timers and releases pynetdicom checks there keep their timing. It
also reads each PDU in pieces of up to 256 KiB rather than 4 KiB.

The only hooks pynetdicom offers for this are the names its modules look up: ``time`` in
``pynetdicom.dul`` and ``pynetdicom.association``, ``AssociationSocket.recv`` and the
DUL's ``to_provider_queue``. ``POLLS`` names the lines of pynetdicom this relies on; a test
reads them in the installed pynetdicom, so an upgrade that moves them fails that test
instead of silently polling again.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import threading
import time
from typing import Any

import pynetdicom.association
import pynetdicom.dul
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket

REACTOR_DELAY = 0.001  # the association reactor's sleep, per turn
PIECE = 256 * 1024  # the most one recv() asks for
# (function, the line it polls with): what install() changes, checked by a test.
POLLS = (
    (DULServiceProvider.run_reactor, "time.sleep(self._run_loop_delay)"),
    (Association._run_reactor, "time.sleep(0.001)"),
    (Association._run_reactor, "self.dimse.get_msg(block=False)"),
    (AssociationSocket.recv, "self.socket.recv(bufsize)"),
    (DULServiceProvider.__init__, "self.to_provider_queue"),
)
_installed = threading.Lock()
_done: list[bool] = []


class _WakingQueue(queue.Queue[Any]):
    """The DUL's queue of primitives to send; each put also wakes the DUL."""

    def __init__(self, bell: socket.socket) -> None:
        super().__init__()
        self.bell = bell

    def _put(self, item: Any) -> None:
        super()._put(item)
        # full (the DUL will look anyway) or closed (the DUL has stopped): nothing to wake
        with contextlib.suppress(OSError):
            self.bell.send(b"\0")


class _Clock:
    """Stands in for ``time`` in pynetdicom.dul and pynetdicom.association."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        thread = threading.current_thread()
        if isinstance(thread, DULServiceProvider):
            _dul_wait(thread, seconds)
        elif isinstance(thread, Association) and seconds == REACTOR_DELAY:
            messages = thread.dimse.msg_queue
            with messages.not_empty:
                if not messages.queue:
                    messages.not_empty.wait(seconds)
        else:
            time.sleep(seconds)


def _dul_wait(dul: DULServiceProvider, seconds: float) -> None:
    """Until the peer sends something, a primitive is queued to send, or ``seconds``."""
    pair: tuple[socket.socket, socket.socket] | None = getattr(dul, "_unet_wake", None)
    transport = dul.socket
    peer = transport.socket if transport is not None else None
    if pair is None or peer is None or not getattr(transport, "_is_connected", False):
        time.sleep(seconds)
        return
    try:
        ready, _, _ = select.select([peer, pair[0]], [], [], seconds)
    except (OSError, ValueError):  # the socket was closed meanwhile: the DUL will see it
        time.sleep(seconds)
        return
    if pair[0] in ready:
        with contextlib.suppress(OSError):  # drained: it does not block
            while pair[0].recv(4096):
                pass


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """AssociationSocket.recv in pieces of up to PIECE bytes: as it, it returns what came
    before the peer closed, and never holds more than the peer has sent."""
    assert self.socket is not None
    data = bytearray()
    while len(data) < nr_bytes:
        piece = self.socket.recv(min(nr_bytes - len(data), PIECE))
        if not piece:
            break
        data += piece
    return data


def _wrap_dul() -> None:
    init, run = DULServiceProvider.__init__, DULServiceProvider.run_reactor

    def made(self: DULServiceProvider, assoc: Association) -> None:
        init(self, assoc)
        pair = socket.socketpair()
        for end in pair:
            end.setblocking(False)
        self._unet_wake = pair  # type: ignore[attr-defined]
        self.to_provider_queue = _WakingQueue(pair[1])

    def run_reactor(self: DULServiceProvider) -> None:
        try:
            run(self)
        finally:
            for end in self._unet_wake:  # type: ignore[attr-defined]
                end.close()

    DULServiceProvider.__init__ = made  # type: ignore[method-assign]
    DULServiceProvider.run_reactor = run_reactor  # type: ignore[method-assign]


def install() -> None:
    """Once per process; every association made after it is woken."""
    with _installed:
        if _done:
            return
        _wrap_dul()
        AssociationSocket.recv = _recv  # type: ignore[method-assign]
        for module in (pynetdicom.dul, pynetdicom.association):
            setattr(module, "time", _Clock())  # noqa: B010 (the name pynetdicom looks up)
        _done.append(True)
