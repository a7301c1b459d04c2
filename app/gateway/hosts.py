"""The host names of the allow-list (``AE@host``), looked up in a thread of their own:
once before the listener opens, then every REFRESH_S. An association looks its caller's
address up in what was found, and never waits on DNS (a slow or dead resolver would hold
one of UNET_DICOM_MAX_ASSOCIATIONS for each association of an allowed AE title)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

from app.gateway.settings import Address, lookup

log = logging.getLogger("app.gateway")
REFRESH_S = 60.0


class HostNames:
    """``names`` -> their addresses, refreshed in the background; call it with a name."""

    def __init__(
        self, names: Collection[str], resolve: Callable[[str], frozenset[Address]] = lookup
    ) -> None:
        self.names, self.resolve = sorted(names), resolve
        self._found: dict[str, frozenset[Address]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, name: str) -> frozenset[Address]:
        return self._found.get(name, frozenset())

    def refresh(self) -> None:
        for name in self.names:
            found = self.resolve(name)
            if not found and self._found.get(name) != found:  # said once, not each minute
                log.warning("allowed host %s resolves to no address: its callers are "
                            "rejected until it does", name)  # fmt: skip
            self._found[name] = found  # one assignment: readers see the old or the new

    def start(self) -> None:
        """The first look-up now; then one every REFRESH_S (none without names)."""
        self.refresh()
        if self.names:
            self._thread = threading.Thread(target=self._run, name="unet-hosts", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
