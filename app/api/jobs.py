"""``/jobs``: large images asynchronously (API.md, "Large images: jobs").

Submit (the body streamed to disk, or a ``source`` under UNET_JOB_SOURCE_ROOT),
poll, download, cancel. The input is checked before the job is queued (400
not an image, 413, 415, 422), so a queued job has an input it can read; the
runner (app/jobs/runner.py) does the rest in its own thread.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from app.api.auth import Authorized
from app.api.deps import ModelServiceDep
from app.api.errors import ErrorBody
from app.api.job_upload import admitted, receive_input
from app.api.schemas import JobList, JobView
from app.api.segment import (
    IMAGE_BODY,
    ClassQuery,
    MinAreaQuery,
    ObjectsQuery,
    ThresholdQuery,
    TtaQuery,
    check_format,
)
from app.codecs.outputs import LARGE_OUTPUTS, default_outputs, every_format
from app.errors import JobNotFoundError, JobStateError, quote
from app.jobs.inputs import probe
from app.jobs.results import zip_folder
from app.jobs.runner import JobRunner
from app.jobs.store import FINISHED, Job, Submission
from app.pipeline.context import options_for

router = APIRouter(
    prefix="/jobs",
    tags=["jobs"],
    dependencies=[Authorized],
    responses={
        401: {"model": ErrorBody, "description": "API keys are set and none or a wrong one came"},
        503: {"model": ErrorBody, "description": "not ready or shutting down (see Retry-After)"},
    },
)


def _errors(**statuses: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: ``_errors(s404="...")`` -> {404: {"model": ErrorBody, ...}}."""
    return {int(k[1:]): {"model": ErrorBody, "description": v} for k, v in statuses.items()}


BINARY = {"type": "string", "format": "binary"}
# What a result may be: every format's media type, from the outputs registries.
RESULT_TYPES = list(
    dict.fromkeys(o.media_type for o in [*default_outputs(), *LARGE_OUTPUTS.values()])
)
_NOT_FOUND = "no such job (never submitted, deleted, or expired after UNET_JOB_TTL)"


def get_runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


RunnerDep = Annotated[JobRunner, Depends(get_runner)]
JobFormatQuery = Annotated[
    str | None,
    Query(
        alias="format",
        description="the result's format: those of /segment and the large ones (ome-zarr, "
        "ome-tiff, ...); default png up to UNET_MAX_IMAGE_PIXELS, ome-zarr above",
    ),
]
_JOB_BODY = {
    **IMAGE_BODY,
    "description": "The image (multipart field `file` or the raw body, streamed to disk), or "
    'JSON {"source": "<path under UNET_JOB_SOURCE_ROOT>"}.',
    "content": {
        **IMAGE_BODY["content"],
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["source"],
                "properties": {"source": {"type": "string"}},
            }
        },
    },
}


SkipBackgroundQuery = Annotated[
    bool,
    Query(
        description="images that go block by block: predict only the blocks near tissue "
        "(brightfield slides; the rest is class 0, without objects)"
    ),
]


PixelSizeQuery = Annotated[
    float | None,
    Query(
        gt=0,
        le=10_000,
        allow_inf_nan=False,
        description="images that go block by block: their pixel size in µm, over what the "
        "file says; checked against the model card's pixel_size_um",
    ),
]


def _time(stamp: float | None) -> str | None:
    return datetime.fromtimestamp(stamp, UTC).isoformat() if stamp is not None else None


def view(job: Job, runner: JobRunner) -> dict[str, Any]:
    """A job as GET /jobs/{id} shows it; a running job's progress from the runner."""
    live = runner.live(job.id) if job.status == "running" else None
    done = live.done if live is not None else job.tiles_done
    eta = live.eta() if live is not None else (0.0 if job.status == "succeeded" else None)
    request = job.request
    return {
        "id": job.id,
        "status": job.status,
        "format": request.output,
        "input": {
            "name": request.name,
            "width": request.width,
            "height": request.height,
            "frames": request.frames,
        },
        "progress": {"tiles_done": done, "tiles_total": live.total if live else job.tiles_total},
        "stage": live.stage if live is not None else None,
        "eta_seconds": None if eta is None else round(eta, 1),
        "created": _time(job.created),
        "started": _time(job.started),
        "finished": _time(job.finished),
        "error": job.error,
        "result": f"/jobs/{job.id}/result" if job.status == "succeeded" else None,
        "background_skipped": _skipped(job),
    }


def _skipped(job: Job) -> float | None:
    """The fraction of the image skipped as background, once a job that asked has run."""
    kept = (job.result or {}).get("background_skipped")
    return float(kept) if kept is not None else None


def _job(runner: JobRunner, job_id: str) -> Job:
    job = runner.store.get(job_id)
    if job is None:
        raise JobNotFoundError(f"no job {quote(job_id)} (never submitted, deleted or expired)")
    return job


@router.post(
    "",
    status_code=202,
    summary="Submit a job",
    openapi_extra={"requestBody": _JOB_BODY},
    response_model=JobView,
    responses={
        **_errors(
            s400="not an image, a malformed multipart or JSON body, a truncated upload",
            s403="a source outside UNET_JOB_SOURCE_ROOT or UNET_JOB_SOURCE_URLS, or any "
            "source when they are unset",
            s408="the body stalled for UNET_BODY_TIMEOUT seconds",
            s413="body above UNET_JOB_MAX_BYTES, or an image too large for its format",
            s415="a recognised but unsupported image format",
            s422="bad query parameter; a source that names nothing; frames for a 1-frame format",
            s502="a DICOMweb source's server refused, failed or could not be reached",
            s503="UNET_JOB_MAX_QUEUE jobs queued, running or being submitted (Retry-After)",
            s507="the jobs volume is nearly full (UNET_JOB_MIN_FREE_BYTES)",
        ),
        202: {"headers": {"Location": {"description": "/jobs/{id}"}}},
    },
)
async def submit(
    request: Request,
    service: ModelServiceDep,
    runner: RunnerDep,
    output: JobFormatQuery = None,
    threshold: ThresholdQuery = None,
    class_index: ClassQuery = 1,
    tta: TtaQuery = False,
    min_area: MinAreaQuery = None,
    objects: ObjectsQuery = False,
    skip_background: SkipBackgroundQuery = False,
    pixel_size: PixelSizeQuery = None,
) -> JSONResponse:
    """Queue the image of the body (raw or multipart `file`), or the file named by a JSON
    body `{"source": "<path under UNET_JOB_SOURCE_ROOT>"}`. 202 with the job and its
    Location; poll it, then GET its result."""
    if output is not None:
        check_format(output, every_format(service.outputs))
    # 422 before a 20 GiB body is read, not after
    options = options_for(service.model.card, threshold, class_index, tta, min_area, objects)
    job_id = str(uuid.uuid4())
    with admitted(request, service, runner):
        try:
            path, name = await receive_input(request, service, runner, job_id)
            found = await asyncio.to_thread(probe, path, output, options, service, pixel_size)
            given = Submission(
                str(path), name, found.output, found.large, found.width, found.height,
                found.frames, options, skip_background, pixel_size, service.name,
            )  # fmt: skip
            job = runner.store.add(job_id, given, found.tiles)
        except BaseException:
            runner.store.remove_files(job_id)
            raise
    size = f"{found.width}x{found.height}x{found.frames}"
    runner.changed(job_id, "queued", format=found.output, image=size, tiles=found.tiles)
    runner.wake()
    return JSONResponse(view(job, runner), 202, headers={"Location": f"/jobs/{job_id}"})


@router.get("", summary="List jobs", response_model=JobList)
def list_jobs(runner: RunnerDep) -> dict[str, list[dict[str, Any]]]:
    """Every job kept, newest first."""
    return {"jobs": [view(job, runner) for job in runner.store.all()]}


@router.get(
    "/{job_id}",
    summary="A job's status and progress",
    response_model=JobView,
    responses=_errors(s404=_NOT_FOUND),
)
def get_job(job_id: str, runner: RunnerDep) -> dict[str, Any]:
    return view(_job(runner, job_id), runner)


@router.get(
    "/{job_id}/result",
    summary="A job's result",
    response_class=Response,
    responses={
        200: {
            "description": "the output file; an OME-Zarr store as a zip of it",
            "content": {media: {"schema": BINARY} for media in RESULT_TYPES},
        },
        **_errors(s404=_NOT_FOUND, s409="the job has not succeeded (yet)"),
    },
)
def get_result(job_id: str, runner: RunnerDep) -> Response:
    """The output file; a folder (OME-Zarr) as a zip made on the fly. 409 until it succeeded."""
    job = _job(runner, job_id)
    if job.status != "succeeded" or job.result is None:
        raise JobStateError(f"job {job_id} is {job.status}: its result exists once it succeeded")
    path = runner.store.folder(job_id) / job.result["file"]
    if not path.exists():  # deleted or expired since the row was read
        raise JobNotFoundError(f"job {job_id} and its result are gone (deleted or expired)")
    name, media_type = job.result["name"], job.result["media_type"]
    if not path.is_dir():
        return FileResponse(path, media_type=media_type, filename=name)
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(zip_folder(path), media_type=media_type, headers=disposition)


@router.delete(
    "/{job_id}",
    summary="Cancel or delete a job",
    response_class=Response,
    status_code=204,
    responses={
        202: {"model": JobView, "description": "cancelled (a running job at its next batch)"},
        204: {"description": "a finished job deleted with its files"},
        **_errors(s404=_NOT_FOUND),
    },
)
def delete_job(job_id: str, runner: RunnerDep) -> Response:
    """202: a queued or running job is cancelled (a running one at its next tile batch);
    204: a finished job is deleted with its files."""
    job = _job(runner, job_id)
    if job.status in FINISHED or not runner.cancel(job_id):
        runner.store.delete(job_id)
        runner.changed(job_id, "deleted")
        return Response(status_code=204)
    return JSONResponse(view(_job(runner, job_id), runner), 202)
