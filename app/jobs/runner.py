"""The job runner: one thread that runs queued jobs, oldest first, on the service's engine.

Each job runs through what ``unet-segment`` runs (app/pipeline/batch.py): in memory for
formats of one image up to UNET_MAX_IMAGE_PIXELS, block by block into a store on
disk (app/pipeline/large.py) otherwise, so a job's result equals the command line's
bit for bit. Its engine calls go through the Gate: one tile batch at a time,
never while a ``/segment`` request waits (app/jobs/gate.py).

Restart: a job that was running when the process died goes back to the queue; a
large one goes on from the blocks it had finished (its store and their ledger are kept
in the job's folder, app/pipeline/resume.py), anything else starts again from its
input; the store is then swept of orphans. A graceful shutdown stops the running job
at its next tile batch and queues it again the same way. Finished jobs and their files are
removed UNET_JOB_TTL seconds after they finished.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy.typing as npt

from app.codecs.outputs import LARGE_OUTPUTS
from app.jobs.cluster import JobCluster
from app.jobs.failure import failure
from app.jobs.folder import RESUME, CancelledError, StoppingError, clear_outputs
from app.jobs.gate import Gate
from app.jobs.inputs import check_source
from app.jobs.progress import Live, TileCounter
from app.jobs.store import FINISHED, Job, JobStore, Status, Submission
from app.pipeline.batch import Large, Small
from app.pipeline.blocks import local_blocks
from app.pipeline.context import Context
from app.pipeline.dask import Cluster
from app.pipeline.files import remove, target, write_atomically
from app.service import Service

log = logging.getLogger("app.jobs")
RETRY_S = 5.0  # the runner's pause after a fault of its own


class JobRunner:
    """Runs the jobs of ``store`` with ``service``'s model, one at a time, in its thread."""

    def __init__(
        self,
        store: JobStore,
        service: Service,
        gate: Gate,
        cluster: JobCluster | None = None,
        models: Callable[[str], Service] | None = None,
    ) -> None:
        self.store, self.service, self.gate = store, service, gate
        self.models = models  # a job's model by name (the repository's); None: ``service``
        self.cluster = cluster  # UNET_DASK_SCHEDULER's: the jobs' tiles run there
        self.ttl = service.settings.job_ttl
        self.sweep_every = min(60.0, max(0.25, self.ttl / 4))
        self._live: dict[str, Live] = {}
        self.submitting = 0  # jobs being received and checked (touched on the event loop only)
        self._next_sweep = time.monotonic() + self.sweep_every
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="unet-jobs", daemon=True)

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from the last run (requeue, remove orphans and expired jobs), then run."""
        for job_id in self.store.requeue_running():
            clear_outputs(self.store.folder(job_id))
            log.info("job requeued after a restart", extra={"fields": {"job": job_id}})
        for orphan in self.store.orphans():
            remove(orphan)
        self.sweep()
        self.count()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop at the running job's next tile batch (it is queued again), then return."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        """A job was queued."""
        self._wake.set()

    def changed(
        self, job_id: str, status: Status | Literal["deleted", "expired"], **fields: Any
    ) -> None:
        """One log line per state change (``deleted``, ``expired``: the job is gone), and the
        ``unet_jobs`` gauge."""
        log.info("job %s", status, extra={"fields": {"job": job_id, **fields}})
        self.count()

    def count(self) -> None:
        """The ``unet_jobs{status}`` gauge from the store."""
        for name, count in self.store.counts().items():
            self.service.metrics.jobs.labels(name).set(count)

    # -- what the routes ask ----------------------------------------------------------------

    def live(self, job_id: str) -> Live | None:
        return self._live.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when it had finished already."""
        now = time.time()
        if self.store.update(job_id, only_if="queued", status="cancelled", finished=now):
            self.store.remove_files(job_id)
            self.changed(job_id, "cancelled")
            return True
        live = self._live.get(job_id)
        if live is not None:
            live.cancel.set()  # harmless if it has just ended: then it is finished below
        job = self.store.get(job_id)
        return job is not None and job.status not in FINISHED

    def sweep(self) -> None:
        """Remove the jobs that finished more than UNET_JOB_TTL seconds ago, with their files."""
        for job_id in self.store.expired(self.ttl):
            self.store.delete(job_id)
            self.changed(job_id, "expired")

    # -- the thread ------------------------------------------------------------------------

    def sweep_due(self) -> None:
        """``sweep`` when UNET_JOB_TTL / 4 (at most a minute) has passed since the last."""
        if time.monotonic() >= self._next_sweep:
            self.sweep()
            self._next_sweep = time.monotonic() + self.sweep_every

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.sweep_due()
                job = self.store.next_queued()
                if job is None:
                    self._wake.wait(max(0.0, self._next_sweep - time.monotonic()))
                else:
                    self._run(job)
            except Exception:  # a fault of ours (the database, the disk): jobs must go on
                log.exception("the job runner failed; it goes on in %s s", RETRY_S)
                self._stopping.wait(RETRY_S)

    def _run(self, job: Job) -> None:
        live = Live(job.tiles_total)
        self._live[job.id] = live
        began = time.time()
        try:
            if not self.store.update(job.id, only_if="queued", status="running", started=began):
                return  # cancelled meanwhile
            self.changed(job.id, "running", tiles_total=job.tiles_total)
            self._finish(job, live, began)
        except Exception:  # recording its end failed: never leave it "running" for good
            self.store.update(job.id, only_if="running", status="failed", finished=time.time(),
                              error="internal error while recording the job's end")  # fmt: skip
            raise
        finally:
            del self._live[job.id]

    def _finish(self, job: Job, live: Live, began: float) -> None:
        """Run ``job`` and record how it ended."""
        store, metrics = self.store, self.service.metrics
        try:
            result = self._execute(job, live)
        except StoppingError:
            clear_outputs(store.folder(job.id))
            store.update(job.id, status="queued", started=None, tiles_done=0)
            self.changed(job.id, "queued", reason="shutdown")
            return
        except CancelledError:  # its files go first: "cancelled" means nothing is left
            store.remove_files(job.id)
            store.update(job.id, status="cancelled", finished=time.time(), tiles_done=live.done)
            self.changed(job.id, "cancelled", tiles_done=live.done)
            return
        except Exception as exc:  # the job failed, the service goes on
            retry = self.cluster.retry(job.id, exc) if self.cluster is not None else None
            if retry is not None:  # the cluster's fault, not the job's
                clear_outputs(store.folder(job.id))  # what it goes on from is kept
                store.update(job.id, status="queued", started=None, tiles_done=0)
                self.changed(job.id, "queued", reason=retry)
                self._stopping.wait(RETRY_S)
                return
            error = failure(exc, job.request, self.store.folder(job.id))
            store.remove_files(job.id)
            store.update(job.id, status="failed", finished=time.time(), error=error)
            metrics.job_duration.observe(time.time() - began)
            # The client reads the message; the log only its kind (a source's path is theirs).
            self.changed(job.id, "failed", error=type(exc).__name__)
            return
        end = time.time()
        store.update(job.id, status="succeeded", finished=end, tiles_done=live.done, result=result)
        metrics.job_duration.observe(end - began)
        self.changed(job.id, "succeeded", tiles=live.done, seconds=round(end - began, 3))

    def _execute(self, job: Job, live: Live) -> dict[str, str]:
        """Segment the job's input into its folder; the result's file, media type and name."""
        request = job.request
        service = self.service_of(request)

        def check() -> None:
            if live.cancel.is_set():
                raise CancelledError
            if self._stopping.is_set():
                raise StoppingError

        def report(done: int) -> None:
            service.metrics.job_tiles.inc(max(done - live.done, 0))
            live.done = done
            self.sweep_due()  # a job of hours must not keep older results past their TTL

        context = self._context(job, service, check)
        counter = TileCounter(report)
        folder = self.store.folder(job.id)
        folder.mkdir(exist_ok=True)
        source, named = Path(request.input), Path(request.name)
        if not source.is_relative_to(folder):  # a source, read in place: still inside its root?
            check_source(service.settings.job_source_root, source, request.name)
        remote = (
            self.cluster.for_job(request, service, lambda n: report(live.done + n))
            if self.cluster
            else None
        )
        if request.large:  # named as unet-segment names it: the result equals its file
            return self._large(job, live, context, counter, check, remote)
        if remote is not None:
            check()
            body, media_type, _ = remote.small(source, request.output)
        else:
            body, media_type, _ = Small(context, service.outputs, request.output)(source, counter)
        extension = service.outputs.extension(request.output)
        path = target(folder, named, extension, media_type)
        write_atomically(path, body)
        return {"file": path.name, "media_type": media_type, "name": path.name}

    def _large(
        self,
        job: Job,
        live: Live,
        context: Context,
        counter: TileCounter,
        check: Callable[[], None],
        remote: Cluster | None,
    ) -> dict[str, str]:
        """A job's image block by block, here or on the cluster (``remote``)."""
        request, folder = job.request, self.store.folder(job.id)
        output = LARGE_OUTPUTS[request.output]
        path = target(folder, Path(request.name), output.extension)

        def between(stage: str, done: int, total: int) -> None:  # object passes, levels
            if stage == "background":  # the tiles left once the glass is skipped
                live.total = done
                self.store.update(job.id, tiles_total=done)
            if stage == "resumed":  # the tiles of the blocks a run before had finished
                counter.base = live.resumed = live.done = done
                fields = {"job": job.id, "tiles_done": done, "blocks_done": total}
                log.info("job resumed", extra={"fields": fields})
            live.stage = "tiles" if stage in ("blocks", "background", "resumed") else stage
            if remote is not None:
                check()  # no tile batch of its here: cancel and shutdown are looked at now
            else:
                self.gate.job_batch(lambda: None, check)

        if remote is not None:
            large = Large(context, request.output, remote.blocks, remote.map)
        else:
            blocks = local_blocks(context.predictor, context.options, counter)
            large = Large(context, request.output, blocks)
        facts = large(Path(request.input), path, between, resume=folder / RESUME)
        download = path.name + (".zip" if path.is_dir() else "")
        result = {"file": path.name, "media_type": output.media_type, "name": download}
        skipped = facts.get("background_skipped")
        return result if skipped is None else result | {"background_skipped": str(skipped)}

    def service_of(self, request: Submission) -> Service:
        """The Service of the job's model (the one named when it was submitted); a model no
        longer served fails the job (BadParameterError naming the models)."""
        if request.model is None or self.models is None:
            return self.service
        return self.models(request.model)

    def _context(self, job: Job, service: Service, check: Callable[[], None]) -> Context:
        """The job's model and decoders, with a predictor whose every tile batch waits
        for its turn at the gate (and stops the job when ``check`` raises)."""
        engine = service.model.engine

        def run(batch: npt.NDArray[Any]) -> Any:
            return self.gate.job_batch(lambda: engine.run(batch), check)

        request = job.request
        return Context.of_job(
            service, request.options, run, request.skip_background, request.pixel_size
        )
