"""Waiting for jobs, reading their results: shared by the in-process and the real-server tests."""

from __future__ import annotations

import io
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr

FINISHED = ("succeeded", "failed", "cancelled")


class Client(Protocol):
    def get(self, url: str, **kwargs: Any) -> Any: ...


def wait(client: Client, job_id: str, timeout_s: float = 120.0) -> tuple[dict[str, Any], list[int]]:
    """Poll until the job has finished: (its last view, the tiles_done seen while it ran)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        seen.append(job["progress"]["tiles_done"])
        if job["status"] in FINISHED:
            return job, seen
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout_s} s: {job}")


def zipped_labels(body: bytes, folder: Path) -> np.ndarray:
    """Level 0 of the OME-Zarr store in a downloaded zip, through zarr's own ZipStore."""
    assert zipfile.ZipFile(io.BytesIO(body)).testzip() is None
    path = Path(tempfile.mkstemp(suffix=".zip", dir=folder)[1])
    path.write_bytes(body)
    store = zarr.storage.ZipStore(path, mode="r")
    try:
        return np.asarray(zarr.open_group(store, mode="r")["0"][:])
    finally:
        store.close()


def leftovers(jobs: Path) -> list[str]:
    """Files of a jobs folder besides its database and its (empty) uploads folder."""
    return sorted(
        str(p.relative_to(jobs))
        for p in jobs.rglob("*")
        if p.name != "uploads" and not p.name.startswith("jobs.sqlite3")
    )
