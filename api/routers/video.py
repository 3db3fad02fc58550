"""The job lifecycle (spec section 4): storyboard → generate → status → result, cancel and
re-make one scene. Jobs are Dagster runs tagged `sparklio/job_id`; rendering happens in detached
`sparklio run-job` workers (api/worker.py), so these routes only record, launch and read back."""

from __future__ import annotations

import errno
import shutil
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from sparklio_assets import pipeline
from sparklio_assets import store_paths as layout
from sparklio_assets.checks import read_report
from sparklio_assets.files import write_model
from sparklio_assets.jobs import create_job, named
from sparklio_assets.models import JobSpec, Storyboard
from sparklio_assets.partitions import JOBS

from .. import jobs, worker
from ..dependencies import JobDep, JobId, LinksDep, Runtime, RuntimeDep, load_job
from ..engines import NO_CLOUD, cloud_available
from ..errors import disk_full, field_errors, problem_422
from ..schemas import (
    FieldError,
    GenerateRequest,
    GenerateResponse,
    NotReady,
    ResultMetadata,
    ResultResponse,
    SceneEdit,
    StatusResponse,
    StoryboardRequest,
    StoryboardResponse,
)
from ..status import STARTUP_S, expected_final_s, expected_scene_s, expected_total_s, status
from .responses import BODY, BUSY, NOT_FOUND, TOO_MANY

router = APIRouter(prefix="/video", tags=["video"])

SceneId = Annotated[str, PathParam(description="scene_001 ...", examples=["scene_003"])]


def estimate(runtime: Runtime, plan: Storyboard) -> int:
    return round(expected_total_s(plan) * jobs.instance_pace(runtime.instance, runtime.store))


@router.post("/storyboard", response_model=StoryboardResponse, responses={**BODY},
             summary="Brief → storyboard (spec 4.1)")
def make_storyboard(body: StoryboardRequest, runtime: RuntimeDep, links: LinksDep) -> StoryboardResponse:
    """Creates a job and materializes its `storyboard` asset (a Dagster run tagged with the job
    id). The returned `storyboard_id` is the job id used by every other endpoint. Without a
    `brand` in the request, the brand stored under `brand_id` (POST /brands) is used, if any."""
    spec = named(JobSpec(brief=body.brief(), brand=body.brand_kit(), quality="standard"))
    try:
        create_job(spec, runtime.instance, runtime.store)
        with runtime.storyboard_lock:
            run_id = pipeline.make_storyboard(spec.job_id, runtime.defs, runtime.instance, runtime.store)
    except (OSError, pipeline.PipelineError) as error:
        if not disk_full(error) and isinstance(error, pipeline.PipelineError):
            raise HTTPException(500, detail=str(error)) from None
        forget(runtime, spec.job_id)  # the caller never got the id: a full disk leaves no job folder behind
        if isinstance(error, OSError):
            raise
        raise OSError(errno.ENOSPC, f"No space left on device ({error})") from None  # answered as 507
    plan = layout.read_storyboard(runtime.store, spec.job_id)
    return StoryboardResponse(storyboard_id=spec.job_id, storyboard=plan, estimated_cost=jobs.total_cost(plan),
                              estimated_time=estimate(runtime, plan), dagster_run_id=run_id,
                              status_url=links(f"/video/status/{spec.job_id}"))


def forget(runtime: Runtime, job_id: str) -> None:
    """Remove a job that could not be created: its folder and its Dagster partition."""
    shutil.rmtree(runtime.store.job_dir(job_id), ignore_errors=True)
    try:
        runtime.instance.delete_dynamic_partition(JOBS.name, job_id)
    except Exception:  # best effort: an unused partition only costs a row
        pass


def without_paths(value):
    """The checks report minus the server's file paths (`video_path`, ...): clients get URLs."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items() if not (k == "path" or k.endswith("_path"))}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    return value


def launch(runtime: Runtime, links: LinksDep, job: jobs.Job, kind: str, args: list[str], scene_id: str | None,
           warnings: list[str]) -> GenerateResponse:
    waiting = worker.waiting_count(runtime.store.folder)
    if waiting >= runtime.settings.max_queued:
        raise HTTPException(429, detail=f"{waiting} jobs are already waiting for a worker (the limit is "
                                        f"{runtime.settings.max_queued}); try again later",
                            headers={"Retry-After": str(runtime.settings.retry_after_seconds)})
    try:
        worker.launch(job.dir, kind, args, runtime.worker_env(), scene_id=scene_id)
    except worker.WorkerBusy as error:
        raise HTTPException(409, detail=str(error)) from None
    pace = jobs.instance_pace(runtime.instance, runtime.store)
    if job.plan is None:
        seconds = 60
    elif kind == "regenerate":
        scene = job.plan.scene(scene_id)
        seconds = (STARTUP_S + expected_scene_s(scene.frames)
                   + expected_final_s(sum(s.frames for s in job.plan.scenes))) * pace
    else:
        seconds = estimate(runtime, job.plan)
    return GenerateResponse(
        job_id=job.job_id, status="queued",
        estimated_completion=datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=round(seconds)),
        status_url=links(f"/video/status/{job.job_id}"), events_url=links(f"/video/events/{job.job_id}", signed=True),
        warnings=warnings)


def ensure_idle(job: jobs.Job) -> None:
    current = status(job)
    if current.status in ("queued", "processing"):
        raise HTTPException(409, detail=f"job {job.job_id} is already {current.status} "
                                        f"({current.current_step}); cancel it first or wait")


@router.post("/generate", response_model=GenerateResponse, status_code=202,
             responses={**NOT_FOUND, **BUSY, **BODY, **TOO_MANY},
             summary="Storyboard → video, in a detached worker (spec 4.2)")
def generate(body: GenerateRequest, runtime: RuntimeDep, links: LinksDep) -> GenerateResponse:
    """Records the engine preference and quality in the job and starts `sparklio run-job` in its
    own process group; it materializes each scene and the final video as Dagster runs. Calling
    it again for a failed or canceled job makes the video again, from the scenes already made; a
    job whose storyboard was never finished (the server died making it) gets its storyboard first."""
    with runtime.launch_lock:
        job = load_job(runtime, body.storyboard_id)
        ensure_idle(job)
        jobs.write_spec(job, quality=body.quality, engine_preference=body.engine_preference)
        warnings = [NO_CLOUD] if body.engine_preference in ("cloud", "hybrid") and not cloud_available() else []
        return launch(runtime, links, job, "generate", [job.job_id], None, warnings)


@router.get("/status/{job_id}", response_model=StatusResponse, responses={**NOT_FOUND},
            summary="Progress of a job (spec 4.3)")
def get_status(job: JobDep) -> StatusResponse:
    """Derived from the job's Dagster runs: `storyboard_ready` (generate not called yet),
    `queued`, `processing`, `completed`, `failed` (with `error`: stage, step, reason) or `canceled`.
    Progress never goes back during a request and is 1.0 only once the video is done."""
    return jobs.remember_progress(job, status(job))


@router.get("/result/{job_id}", response_model=ResultResponse,
            responses={**NOT_FOUND, 409: {"model": NotReady, "description": "the video is not finished"}},
            summary="The finished video (spec 4.4)")
def get_result(job: JobDep, runtime: RuntimeDep, links: LinksDep):
    """Download URLs (signed when the server has a key) and what the video is; no server paths."""
    job_id = job.job_id
    current = status(job)
    if current.status != "completed":
        earlier = links(f"/video/files/{job_id}/ad.mp4", signed=True) if job.has_video() else None
        reason = f": {current.error.reason}" if current.error else ""
        body = NotReady(detail=f"job {job_id} is {current.status}{reason}", job_id=job_id, status=current.status,
                        progress=current.progress, video_url=earlier)
        return JSONResponse(body.model_dump(mode="json"), status_code=409)
    record = jobs.video_record(job)
    return ResultResponse(
        job_id=job_id, video_url=links(f"/video/files/{job_id}/ad.mp4", signed=True),
        thumbnail_url=links(f"/video/files/{job_id}/thumbnail.jpg", signed=True),
        metadata=ResultMetadata(duration=record.duration, resolution=record.resolution,
                                scenes_count=record.scenes_count, total_cost=jobs.total_cost(job.plan, record),
                                generation_time=jobs.generation_time(job), engines=record.engines, fps=record.fps,
                                bitrate=record.bitrate, size_bytes=record.size_bytes,
                                checks=without_paths(read_report(runtime.store, job_id)), audio=record.audio,
                                renditions={fmt: links(f"/video/files/{job_id}/{layout.rendition_name(fmt)}",
                                                       signed=True) for fmt in record.renditions}))


@router.post("/cancel/{job_id}", response_model=StatusResponse, responses={**NOT_FOUND, **BUSY},
             summary="Cancel a queued or running job")
def cancel(job_id: JobId, runtime: RuntimeDep) -> StatusResponse:
    """Kills the job's worker (its whole process group), marks its unfinished Dagster runs
    CANCELED and reports `canceled`. A video the job already had is kept."""
    with runtime.launch_lock:
        job = load_job(runtime, job_id)
        current = status(job)
        if current.status == "canceled":
            return current
        if current.status not in ("queued", "processing"):
            raise HTTPException(409, detail=f"job {job_id} is {current.status}; there is nothing to cancel")
        if job.record is None:
            raise HTTPException(409, detail=f"job {job_id} is run by another process (the sparklio CLI), "
                                            "not by this API; stop it there")
        job.record.canceled_at = datetime.now(UTC).isoformat()
        worker.write_record(job.dir, job.record)
        worker.kill(job.dir, job.record)
        jobs.cancel_runs(job, runtime.instance, "canceled through the Sparklio API")
        worker.clean_partial_files(job.dir)
        return status(load_job(runtime, job_id))


@router.post("/regenerate/{job_id}/scenes/{scene_id}", response_model=GenerateResponse, status_code=202,
             responses={**NOT_FOUND, **BUSY, **BODY, **TOO_MANY}, summary="Re-make one scene and re-assemble")
def regenerate(job_id: JobId, scene_id: SceneId, runtime: RuntimeDep, links: LinksDep,
               edit: Annotated[SceneEdit | None, Body()] = None) -> GenerateResponse:
    """Re-makes one scene of a finished job (optionally with new copy, prompt or motion first)
    and re-assembles the video, in a detached worker. The other scenes are not touched."""
    with runtime.launch_lock:
        job = load_job(runtime, job_id)
        if job.plan is None or scene_id not in {s.id for s in job.plan.scenes}:
            raise HTTPException(404, detail=f"job {job_id} has no scene {scene_id!r}")
        ensure_idle(job)
        missing = [s.id for s in job.plan.scenes if s.id != scene_id and s.id not in job.scenes_made]
        if missing:
            raise HTTPException(409, detail=f"job {job_id}: scenes {', '.join(missing)} are not made yet; "
                                            "generate the video first")
        changes = edit.model_dump(exclude_none=True) if edit else {}
        if changes:
            data = job.plan.model_dump()
            index = [s.id for s in job.plan.scenes].index(scene_id)
            data["scenes"][index].update(changes)
            try:
                plan = Storyboard.model_validate(data)
            except ValidationError as error:
                return problem_422([FieldError(field=e.field.removeprefix(f"scenes.{index}."), location="body",
                                               reason=e.reason) for e in field_errors(list(error.errors()))])
            write_model(layout.storyboard_path(runtime.store, job_id), plan)
            job.plan = plan
        return launch(runtime, links, job, "regenerate", [job_id, "--scene", scene_id], scene_id, [])
