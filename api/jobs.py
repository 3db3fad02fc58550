"""A job as the API sees it, read from the Dagster instance (its runs and their events) and the
artifact store; `api/status.py` turns that into the job's status without further I/O.

Nothing lives in the API process. A job is its `job.json` + `storyboard.json` (artifact store),
the request the API last made for it (`worker/worker.json`: generate or re-make one scene, when,
canceled or not), whether its worker still holds the job lock, and the Dagster runs tagged
`sparklio/job_id=<job>`. Runs created after the request belong to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from resources.artifacts import ArtifactStore
from resources.llm.router import storyboard_cost_usd
from sparklio_assets import liveness
from sparklio_assets import store_paths as layout
from sparklio_assets.files import write_model
from sparklio_assets.jobs import FINAL_VIDEO_JOB, JOB_TAG, stage_name
from sparklio_assets.models import JOB_ID_PATTERN, JobSpec, Storyboard, VideoRecord
from sparklio_assets.step_failures import step_failure_reason
from sparklio_assets.tags import GPU_WAIT_TAG, REMAKE_TAG, UI

from . import worker
from .schemas import StatusResponse
from .status import IN_FLIGHT, JobState, Run, expected_final_s

JOB_ID = re.compile(JOB_ID_PATTERN)


class NotFound(LookupError):
    pass


def _read_events(instance: DagsterInstance, run: Run) -> None:
    """Fill in what status needs from a run's event log: the failure of a failed run, the step a
    run in flight is on."""
    if run.status == DagsterRunStatus.FAILURE:
        for entry in reversed(instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)):
            run.failed_step = entry.dagster_event.step_key if entry.dagster_event else None
            run.failure = step_failure_reason(entry.dagster_event) or "step failed"
            return
        for entry in reversed(instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)):
            message = entry.dagster_event.message if entry.dagster_event else entry.user_message
            run.failure = (message or "run failed").strip()
            return
    elif run.status in IN_FLIGHT:
        started = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
        if started and started[-1].step_key:
            run.last_step = started[-1].step_key


def job_runs(instance: DagsterInstance, job_id: str) -> list[Run]:
    records = instance.get_run_records(RunsFilter(tags={JOB_TAG: job_id}), order_by="create_timestamp",
                                       ascending=True)
    runs = [Run(r.dagster_run.run_id, stage_name(r.dagster_run.job_name, r.dagster_run.tags), r.dagster_run.status,
                r.create_timestamp, r.start_time, r.end_time, gpu_wait=r.dagster_run.tags.get(GPU_WAIT_TAG, ""),
                daemon=r.dagster_run.tags.get(REMAKE_TAG) == UI)
            for r in records]
    latest = {run.stage: run for run in runs}
    for run in latest.values():  # status looks only at each stage's latest run
        _read_events(instance, run)
    return runs


@dataclass
class Job(JobState):
    """A job's state plus where it lives, loaded once per request."""

    store: ArtifactStore | None = None
    spec: JobSpec | None = None

    @property
    def dir(self) -> Path:
        return self.store.job_dir(self.job_id)

    def has_video(self) -> bool:
        return self.video_ready


def load(job_id: str, store: ArtifactStore, instance: DagsterInstance) -> Job:
    if not JOB_ID.match(job_id):
        raise NotFound(f"no job {job_id!r}")
    try:
        spec = layout.read_job(store, job_id)
    except (FileNotFoundError, ValueError):
        raise NotFound(f"no job {job_id!r}") from None
    try:
        plan = layout.read_storyboard(store, job_id)
    except (FileNotFoundError, ValueError):
        plan = None
    job_dir = store.job_dir(job_id)
    scenes = plan.scenes if plan else []
    made = frozenset(s.id for s in scenes if layout.motion_path(store, job_id, s.id).is_file())
    video = layout.video_path(store, job_id).is_file() and layout.video_record_path(store, job_id).is_file()
    liveness.reap(instance, store)  # a dead worker's runs end (FAILURE, "worker died") and free their slots
    return Job(job_id=job_id, plan=plan, record=worker.read_record(job_dir), running=worker.is_running(job_dir),
               runs=job_runs(instance, job_id), scenes_made=made, video_ready=video,
               log_tail=worker.log_tail(job_dir, lines=1), store=store, spec=spec,
               progress_shown=worker.read_progress(job_dir))


def remember_progress(job: Job, current: StatusResponse) -> StatusResponse:
    """Keep the request's highest progress beside its record, so polling never sees it go back
    (the estimate re-scales as stages finish faster or slower than expected)."""
    if current.status in ("queued", "processing") and current.progress > job.progress_shown:
        try:
            worker.write_progress(job.dir, current.progress)
        except OSError:  # a progress bar is not worth failing a status request for
            pass
    return current


def write_spec(job: Job, **changes) -> JobSpec:
    spec = job.spec.model_copy(update=changes)
    JobSpec.model_validate(spec.model_dump())  # the changes must keep the job valid
    write_model(layout.job_path(job.store, job.job_id), spec)
    job.spec = spec
    return spec


def generation_time(job: JobState) -> float | None:
    """Seconds from the request (or the first run, for CLI jobs) to the end of the final video."""
    finals = [r for r in job.request_runs if r.stage == "final_video" and r.status == DagsterRunStatus.SUCCESS]
    if not finals or not finals[-1].end:
        return None
    if job.record is not None:
        began = job.record.requested.timestamp()
    else:
        began = min((r.start or r.created.timestamp()) for r in job.runs)
    return round(finals[-1].end - began, 2)


def total_cost(plan: Storyboard | None, record: VideoRecord | None = None) -> float:
    """Money spent: the storyboard's LLM calls and the narration's speech (the built-in engines
    and the own GPU worker cost nothing per job)."""
    narration = record.audio.cost_usd if record is not None and record.audio is not None else 0.0
    return round((storyboard_cost_usd(plan) if plan is not None else 0.0) + narration, 6)


def video_record(job: Job) -> VideoRecord:
    return job.store.read(layout.video_record_path(job.store, job.job_id), VideoRecord)


def instance_pace(instance: DagsterInstance, store: ArtifactStore, limit: int = 5) -> float:
    """How long this machine's recent final videos took against `expected_final_s`: scales the
    time estimates to the machine (1.0 with no history)."""
    ratios = []
    try:
        records = instance.get_run_records(
            RunsFilter(job_name=FINAL_VIDEO_JOB, statuses=[DagsterRunStatus.SUCCESS]), limit=limit)
        for record in records:
            job_id = record.dagster_run.tags.get(JOB_TAG)
            if not job_id or not record.start_time or not record.end_time:
                continue
            try:
                plan = layout.read_storyboard(store, job_id)
            except (FileNotFoundError, ValueError):
                continue
            ratios.append((record.end_time - record.start_time) / expected_final_s(sum(s.frames for s in plan.scenes)))
    except Exception:  # an estimate must never fail a request
        return 1.0
    if not ratios:
        return 1.0
    ratios.sort()
    return min(10.0, max(0.3, ratios[len(ratios) // 2]))


def cancel_runs(job: Job, instance: DagsterInstance, message: str) -> list[str]:
    """Mark the job's unfinished Dagster runs CANCELED (after its worker was killed)."""
    canceled = []
    for run in instance.get_runs(RunsFilter(tags={JOB_TAG: job.job_id}, statuses=list(IN_FLIGHT))):
        instance.report_run_canceled(run, message=message)
        liveness.free_slots(instance, run.run_id)  # report_run_canceled leaves a held `gpu` slot held
        canceled.append(run.run_id)
    return canceled
