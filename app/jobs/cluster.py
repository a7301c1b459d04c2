"""Jobs on a Dask cluster (UNET_DASK_SCHEDULER): a job's blocks, object passes and
in-memory images run as tasks on the cluster's workers (app/pipeline/dask.py), not on the
service's engine, so ``/segment`` no longer shares the service's cores with job tiles.

The workers run the product's own environment and read the job's input and write its
store under UNET_JOBS_DIR, a volume they share with the service at the same path; each
loads the model at UNET_MODEL_PATH once and checks its SHA-256 against the service's.
A job's result is the one the service would write itself, bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from app.codecs.outputs import Provenance
from app.jobs.store import Submission
from app.pipeline.context import Setup
from app.pipeline.dask import Cluster, connect
from app.service import Service

CONNECT_S = 10.0
FAULT_RETRIES = 2  # a job that fails on the cluster runs again this often before it fails


class JobCluster:
    """The service's client of the scheduler at ``address``; OSError at start when it
    cannot be reached."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.client: Any = connect(address, CONNECT_S)
        self.faults: dict[str, int] = {}  # job id -> the times it went back to the queue

    @staticmethod
    def setup(request: Submission, service: Service) -> Setup:
        """What the workers run a job with: its model's file and tiling, its options."""
        settings, predictor, o = service.settings, service.predictor, request.options
        return Setup(
            settings.model_path.absolute(), settings.providers, settings.precision,
            predictor.tile_size, predictor.batch_size, o.threshold, o.class_index, o.tta,
            o.min_area, o.outline_objects, settings.max_image_pixels,
            skip_background=request.skip_background, pixel_size=request.pixel_size,
        )  # fmt: skip

    def for_job(
        self, request: Submission, service: Service, on_tiles: Callable[[int], None]
    ) -> Cluster:
        """The cluster as one job's ``Blocks``, ``Mapper`` and in-memory runner, with the
        job's model (workers check its SHA-256); OSError while the scheduler is out of
        reach (the job is then retried)."""
        sha256 = Provenance.of(service.model).sha256
        return Cluster(None, self.setup(request, service), sha256, self.reconnected(), on_tiles)

    def reconnected(self) -> Any:
        """The client, a new one when the last lost its scheduler (a restarted scheduler
        at the same address is found again); OSError when it is still out of reach."""
        if self.lost():
            self.close()
            self.client = None
            self.client = connect(self.address, CONNECT_S)
        return self.client

    def retry(self, job_id: str, exc: Exception) -> str | None:
        """Why a job that failed on the cluster goes back to the queue (it then resumes from
        its finished blocks), or None: it failed. A lost scheduler, always; any other
        fault up to FAULT_RETRIES times per job (a worker that dies can break the client's
        gather of a task in flight, a fault of the cluster's, not of the job's)."""
        if self.lost():
            return "the Dask scheduler is out of reach"
        tries = self.faults.get(job_id, 0)
        if tries >= FAULT_RETRIES:
            return None
        self.faults[job_id] = tries + 1
        return f"a fault on the Dask cluster ({type(exc).__name__}); try {tries + 2}"

    def lost(self) -> bool:
        """Whether the scheduler is out of reach now (a job that failed then is retried)."""
        return str(getattr(self.client, "status", "")) != "running"

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # a client of a lost scheduler
                self.client.close()
