"""Jobs on disk: one SQLite database (stdlib ``sqlite3``, WAL) and one folder per job.

    UNET_JOBS_DIR/
      jobs.sqlite3       the rows: id, status, request, progress, times, error, result
      uploads/<id>.part  a body being received (removed at start: no upload survives one)
      <id>/input         the uploaded image (absent for a ``source`` job, read in place)
      <id>/result.<ext>  the output once the job has succeeded (a folder for OME-Zarr)

A row exists once its input is complete, so the folder of an unknown id, or an
upload left by a crash, is an orphan and is removed (``orphans``). Every method is
safe from any thread (one connection, one lock): the routes, the runner thread and
the cleaner share one store.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.codecs.outputs.base import Options

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: tuple[Status, ...] = ("succeeded", "failed", "cancelled")
STATUSES: tuple[Status, ...] = ("queued", "running", *FINISHED)
DATABASE = "jobs.sqlite3"
JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
UPLOADS = "uploads"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    tiles_done INTEGER NOT NULL DEFAULT 0,
    tiles_total INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created);
"""


@dataclass(frozen=True)
class Submission:
    """What a job was asked to do; stored as JSON, read back at every (re)start.

    input: the image (the job's upload, or a file under UNET_JOB_SOURCE_ROOT);
    name: the input's name for the result's file name; output: the format;
    large: whether it goes block by block (app/pipeline/large.py); width, height,
    frames: from the input's header; options: the request's Options, whole, as /segment
    takes them (so that no option can be lost on the way to the runner); model: the
    model it was submitted to, by its name in the repository.
    """

    input: str
    name: str
    output: str
    large: bool
    width: int
    height: int
    frames: int
    options: Options
    skip_background: bool = False
    pixel_size: float | None = None
    model: str | None = None  # the repository's name (model=); None: the service's model

    @classmethod
    def from_json(cls, text: str) -> Submission:
        """A stored request; one stored before Options were kept whole (its threshold,
        class_index, tta and min_area beside the rest) reads back the same."""
        values = json.loads(text)
        legacy = [k for k in ("threshold", "class_index", "tta", "min_area") if k in values]
        options = values.pop("options", None) or {k: values.pop(k) for k in legacy}
        return cls(**values, options=Options(**options))


@dataclass
class Job:
    """One row. result: the output's file (or folder) name in the job's folder, and its
    media type, once the job has succeeded."""

    id: str
    status: Status
    request: Submission
    created: float
    tiles_done: int = 0
    tiles_total: int = 0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    result: dict[str, str] | None = field(default=None)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        values = dict(row)
        values["request"] = Submission.from_json(values["request"])
        values["result"] = json.loads(values["result"]) if values["result"] else None
        return cls(**values)


class JobStore:
    """The jobs of one UNET_JOBS_DIR."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / UPLOADS).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            root / DATABASE, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never torn
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _sql(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def close(self) -> None:
        with self._sql() as db:
            db.close()

    # -- files ----------------------------------------------------------------------------

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def upload(self, job_id: str) -> Path:
        """Where the body of job ``job_id`` is received before the job exists."""
        return self.root / UPLOADS / f"{job_id}.part"

    def remove_files(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
        self.upload(job_id).unlink(missing_ok=True)

    def orphans(self) -> list[Path]:
        """Files no row owns: uploads (none is under way at start) and folders of unknown ids."""
        with self._sql() as db:
            known = {row[0] for row in db.execute("SELECT id FROM jobs")}
        found = [p for p in (self.root / UPLOADS).iterdir() if p.name.endswith(".part")]
        for path in self.root.iterdir():  # only what could be a job's: a folder named by a UUID
            if path.is_dir() and JOB_ID.fullmatch(path.name) and path.name not in known:
                found.append(path)
        return found

    # -- rows -----------------------------------------------------------------------------

    def add(self, job_id: str, request: Submission, tiles_total: int) -> Job:
        job = Job(job_id, "queued", request, time.time(), tiles_total=tiles_total)
        with self._sql() as db:
            db.execute(
                "INSERT INTO jobs (id, status, request, tiles_total, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (job_id, job.status, json.dumps(asdict(request)), tiles_total, job.created),
            )
        return job

    def get(self, job_id: str) -> Job | None:
        with self._sql() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def all(self) -> list[Job]:
        """Every job, newest first."""
        with self._sql() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created DESC, id").fetchall()
        return [Job.from_row(row) for row in rows]

    def next_queued(self) -> Job | None:
        """The oldest queued job."""
        with self._sql() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE status = 'queued' ORDER BY created, id LIMIT 1"
            ).fetchone()
        return Job.from_row(row) if row else None

    def counts(self) -> dict[Status, int]:
        """The number of jobs in each status (every status present, zero or not)."""
        with self._sql() as db:
            rows = db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        found = {row[0]: row[1] for row in rows}
        return {status: found.get(status, 0) for status in STATUSES}

    def update(self, job_id: str, *, only_if: Status | None = None, **values: Any) -> bool:
        """Set columns of one row (``result`` as JSON); with ``only_if``, only while the job
        has that status. Whether the row was changed."""
        if "result" in values and values["result"] is not None:
            values["result"] = json.dumps(values["result"])
        columns = ", ".join(f"{name} = ?" for name in values)
        where, args = "id = ?", [*values.values(), job_id]
        if only_if is not None:
            where, args = f"{where} AND status = ?", [*args, only_if]
        with self._sql() as db:
            return db.execute(f"UPDATE jobs SET {columns} WHERE {where}", args).rowcount == 1

    def delete(self, job_id: str) -> None:
        """The row and every file of the job."""
        with self._sql() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self.remove_files(job_id)

    def requeue_running(self) -> list[str]:
        """At start: jobs that were running when the process died go back to the queue
        (they restart from their input; their partial output is removed)."""
        with self._sql() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM jobs WHERE status = 'running'")]
            db.execute(
                "UPDATE jobs SET status = 'queued', tiles_done = 0, started = NULL "
                "WHERE status = 'running'"
            )
        return ids

    def expired(self, ttl: float, now: float | None = None) -> list[str]:
        """Finished jobs older than ``ttl`` seconds since they finished."""
        limit = (now if now is not None else time.time()) - ttl
        marks = ", ".join("?" * len(FINISHED))
        with self._sql() as db:
            rows = db.execute(
                f"SELECT id FROM jobs WHERE status IN ({marks}) AND finished <= ?",
                (*FINISHED, limit),
            ).fetchall()
        return [row[0] for row in rows]
