"""The gateway's durable queue: SQLite and files under UNET_DICOM_STATE_DIR.

A series arrives in rounds. Instances join the series' open round (``receiving``); the
round is ``segmenting`` once no instance came for UNET_DICOM_STABLE_SECONDS, ``sending``
once the service's result is on disk (its instances are then removed), and leaves the
store, with its files, when every destination has accepted the result. More instances
for a series whose round is closed open the next round. ``refused`` rounds (the service
cannot segment them: 4xx) keep only their row and reason; ``kept`` rounds (no
destination configured) keep their result.

Every state change is one transaction (WAL, synchronous=FULL) and every file is written
to a temporary name, fsynced, renamed and its folder fsynced: after ``kill -9`` a round
is where its last committed transaction left it, and work is redone, never lost. A round
still receiving at start-up counts its quiet time from then: while the gateway was down,
the modality could not send the rest.

    state/queue.sqlite
    state/incoming/       instances being written (removed at start: never acknowledged)
    state/rounds/<key>/   a round's instances, <sop key>.dcm
    state/results/<key>.<kind>.dcm   a round's results: seg, and sr (UNET_DICOM_RESULTS)
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.gateway.disk import fsync_folder, write_durably, write_synced, writer

SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    series TEXT NOT NULL, round INTEGER NOT NULL, state TEXT NOT NULL, last REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next REAL NOT NULL DEFAULT 0, detail TEXT,
    PRIMARY KEY (series, round));
CREATE TABLE IF NOT EXISTS deliveries (
    series TEXT NOT NULL, round INTEGER NOT NULL, destination TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (series, round, destination));
"""


def key(uid: str) -> str:
    """A UID's hash: file names and log lines never carry the UID itself."""
    return hashlib.sha256(uid.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Round:
    series: str
    round: int
    attempts: int = 0

    @property
    def name(self) -> str:
        return f"{key(self.series)}-{self.round}"


@dataclass(frozen=True)
class Delivery:
    round: Round
    destination: str
    attempts: int


class GatewayStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.incoming, self.rounds, self.results = (
            folder / "incoming",
            folder / "rounds",
            folder / "results",
        )
        for f in (folder, self.incoming, self.rounds, self.results):
            f.mkdir(parents=True, exist_ok=True)
        for stale in self.incoming.iterdir():  # written, never acknowledged: the sender resends
            stale.unlink()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(folder / "queue.sqlite", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        with self._db:  # a series' quiet time counts from now: we were not listening
            self._db.execute("UPDATE rounds SET last = ? WHERE state = 'receiving'", (time.time(),))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- receiving ---------------------------------------------------------------------------

    def add_instance(self, series: str, sop: str, write: Callable[[BinaryIO], object]) -> None:
        """Write one instance durably into its series' open round; returns only once it is
        on disk (the C-STORE's success): written and fsynced in incoming/, renamed into the
        round's folder, the folder fsynced, and a new round's row committed. The folder is
        the round's list of instances; its quiet time (``last``) is committed without an
        fsync of its own: a restart counts it from then anyway."""
        staged = self.incoming / f"{uuid.uuid4().hex}.dcm"
        target: Path | None = None
        try:
            write_synced(staged, write)
            with self._lock:
                row = self._db.execute(
                    "SELECT round, state FROM rounds WHERE series = ? ORDER BY round DESC LIMIT 1",
                    (series,),
                ).fetchone()
                is_open = bool(row) and row[1] == "receiving"
                number = row[0] if is_open else (row[0] + 1 if row else 1)
                folder = self.rounds / Round(series, number).name
                if not folder.exists():
                    folder.mkdir()
                    fsync_folder(self.rounds)  # the new folder's entry survives a power loss
                target = folder / f"{key(sop)}.dcm"
                if target.exists():  # sent again: the copy on disk stays whatever happens
                    target = None
                staged.replace(folder / f"{key(sop)}.dcm")
                fsync_folder(folder)
                self._stamp(series, number, is_open)
        except BaseException:
            if target is not None:  # not on disk as a whole: not acknowledged, so not kept
                target.unlink(missing_ok=True)
            raise
        finally:
            staged.unlink(missing_ok=True)

    def _stamp(self, series: str, number: int, is_open: bool) -> None:
        """A new round's row (synchronous=FULL), or an open round's new quiet time
        (synchronous=NORMAL: in the WAL, on disk with the next full commit)."""
        if not is_open:
            with self._db:
                self._db.execute(
                    "INSERT INTO rounds (series, round, state, last) VALUES (?, ?, 'receiving', ?)",
                    (series, number, time.time()),
                )
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._db:
                self._db.execute(
                    "UPDATE rounds SET last = ? WHERE series = ? AND round = ?",
                    (time.time(), series, number),
                )
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def close_stable(self, quiet_seconds: float) -> list[Round]:
        """Open rounds without a new instance for ``quiet_seconds``: now ``segmenting``."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT series, round FROM rounds WHERE state = 'receiving' AND last <= ?",
                (time.time() - quiet_seconds,),
            ).fetchall()
            for series, number in rows:
                db.execute(
                    "UPDATE rounds SET state = 'segmenting' WHERE series = ? AND round = ?",
                    (series, number),
                )
        return [Round(s, n) for s, n in rows]

    # -- segmenting --------------------------------------------------------------------------

    def due(self, state: str) -> list[Round]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT series, round, attempts FROM rounds WHERE state = ? AND next <= ?"
                " ORDER BY last",
                (state, time.time()),
            ).fetchall()
        return [Round(*row) for row in rows]

    def files(self, item: Round) -> list[Path]:
        return sorted((self.rounds / item.name).glob("*.dcm"))

    def result_files(self, item: Round) -> list[Path]:
        """A round's results, the SEG first (``.seg.dcm`` before ``.sr.dcm``)."""
        return sorted(self.results.glob(f"{item.name}.*"))

    def keep_result(self, item: Round, kind: str, data: bytes) -> None:
        """One result of a round still segmenting, on disk: a later try of the round (the
        SR failed, the gateway was killed) asks the service only for what it lacks."""
        write_durably(self.results / f"{item.name}.{kind}.dcm", writer(data))

    def forget_results(self, item: Round) -> None:  # to be asked again, or refused
        for path in self.result_files(item):
            path.unlink(missing_ok=True)

    def kept_result(self, item: Round, kind: str) -> bytes | None:
        path = self.results / f"{item.name}.{kind}.dcm"
        return path.read_bytes() if path.exists() else None

    def segmented(self, item: Round, results: dict[str, bytes], destinations: list[str]) -> None:
        """The service's results (kind -> Part 10 bytes) are on disk; each destination gets
        a delivery to make."""
        for kind, data in results.items():  # usually on disk already (keep_result)
            if not (path := self.results / f"{item.name}.{kind}.dcm").exists():
                write_durably(path, writer(data))
        with self._transaction() as db:
            state = "sending" if destinations else "kept"
            db.execute(
                "UPDATE rounds SET state = ?, attempts = 0, next = 0, detail = NULL"
                " WHERE series = ? AND round = ?",
                (state, item.series, item.round),
            )
            db.executemany(
                "INSERT OR IGNORE INTO deliveries (series, round, destination, state)"
                " VALUES (?, ?, ?, 'pending')",
                [(item.series, item.round, d) for d in destinations],
            )
        shutil.rmtree(self.rounds / item.name, ignore_errors=True)

    def refused(self, item: Round, reason: str) -> None:
        """The service cannot segment this round (a 4xx): recorded with its reason, never
        retried; its instances are removed."""
        with self._transaction() as db:
            db.execute(
                "UPDATE rounds SET state = 'refused', detail = ? WHERE series = ? AND round = ?",
                (reason, item.series, item.round),
            )
        shutil.rmtree(self.rounds / item.name, ignore_errors=True)
        self.forget_results(item)

    def postpone(self, item: Round, seconds: float, reason: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE rounds SET attempts = attempts + 1, next = ?, detail = ?"
                " WHERE series = ? AND round = ?",
                (time.time() + seconds, reason, item.series, item.round),
            )

    # -- sending -----------------------------------------------------------------------------

    def due_deliveries(self, destination: str | None = None) -> list[Delivery]:
        """Deliveries due now, to ``destination`` (None: to any)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT series, round, destination, attempts FROM deliveries"
                " WHERE state = 'pending' AND next <= ? AND ? IN (destination, '')"
                " ORDER BY next",
                (time.time(), destination or ""),
            ).fetchall()
        return [Delivery(Round(s, n), d, a) for s, n, d, a in rows]

    def delivered(self, delivery: Delivery) -> bool:
        """One destination accepted; True when that was the last, and the round is gone."""
        item = delivery.round
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'sent'"
                " WHERE series = ? AND round = ? AND destination = ?",
                (item.series, item.round, delivery.destination),
            )
            (left,) = db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE series = ? AND round = ?"
                " AND state = 'pending'",
                (item.series, item.round),
            ).fetchone()
            if left:
                return False
            for table in ("deliveries", "rounds"):
                db.execute(
                    f"DELETE FROM {table} WHERE series = ? AND round = ?",
                    (item.series, item.round),
                )
        for path in self.result_files(item):
            path.unlink(missing_ok=True)
        return True

    def delivery_failed(self, delivery: Delivery, seconds: float) -> None:
        item = delivery.round
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next = ?"
                " WHERE series = ? AND round = ? AND destination = ?",
                (time.time() + seconds, item.series, item.round, delivery.destination),
            )

    # -- monitoring --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rounds by state, and pending deliveries per destination (``to <destination>``)."""
        with self._transaction() as db:
            states = dict(db.execute("SELECT state, COUNT(*) FROM rounds GROUP BY state"))
            pending = db.execute(
                "SELECT destination, COUNT(*) FROM deliveries WHERE state = 'pending'"
                " GROUP BY destination"
            ).fetchall()
        return {**states, **{f"to {d}": n for d, n in pending}}
