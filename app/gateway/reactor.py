"""pynetdicom's reactors woken instead of polled, its PDUs read in large pieces, and
the copy of the contexts it makes for every association made cheap.

pynetdicom (3.0) runs an association in two threads that poll. The DUL thread, which
reads and writes the socket, sleeps ``_run_loop_delay`` (1 ms) after every turn of its
loop that found nothing to do; the association's reactor, which hands DIMSE messages to
our handlers, sleeps 1 ms at every turn. Each C-STORE waits for both: the DUL to read its
last PDU, the reactor to notice the message, the DUL to notice the response to send.

``install()`` turns both sleeps, in the associations the listener accepts, into waits
that end as soon as there is work: the DUL thread waits on its socket and on a socket
pair written whenever a primitive is queued for it to send; the reactor waits on its
DIMSE message queue. Idle, both still wake every 1 ms as before, so the timers and
releases pynetdicom checks there keep their timing. Associations the gateway requests
(results to a destination) keep pynetdicom's polling. It also reads each PDU in pieces
of up to 256 KiB rather than 4 KiB, and closes a window in which pynetdicom's reactor
takes the response a send_*() waits for (``_wrap_get_msg``; a peer that answers at once
hits it: a test sends 300 in a row). pynetdicom's own cost per 512 x 512 CT instance
fell from 4.4 to 2.6 ms on loopback (``python -m bench.gateway``, the floor rows).

``Contexts`` holds the listener's presentation contexts. pynetdicom deep-copies them for
every association it accepts: every storage SOP class in 13 transfer syntaxes took
10-15 ms an association that way, which a modality sending one instance per association
pays each time. A context's only mutable attribute is its list of transfer syntaxes
(UIDs are strings), so copying each context and that list is the same copy.

The only hooks pynetdicom offers for the waits and reads are the names its modules look
up: ``time`` in ``pynetdicom.dul`` and ``pynetdicom.association``,
``AssociationSocket.recv``, ``DIMSEServiceProvider.get_msg`` and the DUL's
``to_provider_queue``. ``POLLS`` names the lines
of pynetdicom this relies on; a test reads them in the installed pynetdicom, so an
upgrade that moves them fails that test instead of silently polling again.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import select
import socket
import sys
import threading
import time
from typing import Any

import pynetdicom.association
import pynetdicom.dul
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket

_REACTOR = Association._run_reactor.__code__  # the loop whose sleep becomes a wait
PIECE = 256 * 1024  # the most one recv() asks for
# (function, the line it polls with): what install() changes, checked by a test.
POLLS = (
    (DULServiceProvider.run_reactor, "time.sleep(self._run_loop_delay)"),
    (Association._run_reactor, "time.sleep(0.001)"),
    (Association._run_reactor, "self.dimse.get_msg(block=False)"),
    (Association._run_reactor, "self._reactor_checkpoint.wait()"),
    (Association.send_c_store, "self._reactor_checkpoint.clear()"),
    (AssociationSocket.recv, "self.socket.recv(bufsize)"),
    (DULServiceProvider.__init__, "self.to_provider_queue"),
)
_installed = threading.Lock()
_done: list[bool] = []


class _WakingQueue(queue.Queue[Any]):
    """The DUL's queue of primitives to send; a put also rings the DUL's bell, which it
    has while its reactor runs."""

    bell: socket.socket | None = None

    def _put(self, item: Any) -> None:
        super()._put(item)
        bell = self.bell
        if bell is not None:  # full (the DUL will look anyway) or closed: nothing to wake
            with contextlib.suppress(OSError):
                bell.send(b"\0")


class _Clock:
    """Stands in for ``time`` in pynetdicom.dul and pynetdicom.association."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        thread = threading.current_thread()
        if isinstance(thread, DULServiceProvider) and thread.assoc.is_acceptor:
            _dul_wait(thread, seconds)
        elif (
            isinstance(thread, Association)
            and thread.is_acceptor
            and sys._getframe(1).f_code is _REACTOR
        ):
            _reactor_wait(thread, seconds)
        else:
            time.sleep(seconds)


def _reactor_wait(assoc: Association, seconds: float) -> None:
    """Until a DIMSE message is queued, or ``seconds``. While one of the association's own
    send_*() calls holds the reactor (its checkpoint clear), that call takes the
    messages: then only sleep. A wake-up taken here while such a call also waits (it
    can clear the checkpoint once this wait began) is passed on to it."""
    if not assoc._reactor_checkpoint.is_set():
        time.sleep(seconds)
        return
    messages = assoc.dimse.msg_queue
    with messages.not_empty:
        if not messages.queue:
            messages.not_empty.wait(seconds)
        if messages.queue:
            messages.not_empty.notify()


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


def _wrap_get_msg() -> None:
    """The reactor takes no DIMSE message while a send_*() of its association holds it.

    pynetdicom's send_*() clears the reactor's checkpoint and goes on once the reactor
    says it is paused; but that flag is still set from the last pause until the reactor
    runs again, so the next send can go while the reactor, just released, is about to
    take a message itself: when the peer answers at once, the reactor takes the response,
    and the send waits out dimse_timeout and aborts the association."""
    get_msg = DIMSEServiceProvider.get_msg

    def guarded(self: DIMSEServiceProvider, block: bool = False) -> Any:
        if (
            not block
            and sys._getframe(1).f_code is _REACTOR
            and not self.assoc._reactor_checkpoint.is_set()
        ):
            return None, None
        return get_msg(self, block)

    DIMSEServiceProvider.get_msg = guarded  # type: ignore[method-assign]


def _wrap_dul() -> None:
    init, run = DULServiceProvider.__init__, DULServiceProvider.run_reactor

    def made(self: DULServiceProvider, assoc: Association) -> None:
        init(self, assoc)
        self.to_provider_queue = _WakingQueue()

    def run_reactor(self: DULServiceProvider) -> None:
        """The DUL's reactor with a bell: a socket pair, open while it runs."""
        pair = socket.socketpair()
        for end in pair:
            end.setblocking(False)
        outbox = self.to_provider_queue
        self._unet_wake = pair  # type: ignore[attr-defined]
        if isinstance(outbox, _WakingQueue):
            outbox.bell = pair[1]
        try:
            run(self)
        finally:
            self._unet_wake = None  # type: ignore[attr-defined]
            if isinstance(outbox, _WakingQueue):
                outbox.bell = None
            for end in pair:
                end.close()

    DULServiceProvider.__init__ = made  # type: ignore[method-assign]
    DULServiceProvider.run_reactor = run_reactor  # type: ignore[method-assign]


class Contexts(list[PresentationContext]):
    """The listener's supported contexts, for ``start_server(contexts=...)``."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            twin = copy.copy(context)
            twin._transfer_syntax = list(context._transfer_syntax)
            copies.append(twin)
        return copies


def install() -> None:
    """Once per process; every association made after it is woken."""
    with _installed:
        if _done:
            return
        _wrap_dul()
        _wrap_get_msg()
        AssociationSocket.recv = _recv  # type: ignore[method-assign]
        for module in (pynetdicom.dul, pynetdicom.association):
            setattr(module, "time", _Clock())  # noqa: B010 (the name pynetdicom looks up)
        _done.append(True)
