"""A job's state, read from the Dagster instance (its runs and their events) and the artifact store.

Nothing lives in the API process. A job is its `job.json` + `storyboard.json` (artifact store),
the request the API last made for it (`worker/worker.json`: generate or re-make one scene, when,
canceled or not), whether its worker still holds the job lock, and the Dagster runs tagged
`sparklio/job_id=<job>`. Runs created after the request belong to it; each run is one stage
(storyboard, scene_00N, final_video), so the stages' run statuses give the job's status, their
timings the progress and ETA, and a failed run's step-failure event says which step failed and why.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from resources.artifacts import ArtifactStore, write_model
from resources.llm.router import storyboard_cost_usd
from sparklio_assets import layout, liveness
from sparklio_assets.models import JOB_ID_PATTERN, JobSpec, Storyboard, VideoRecord
from sparklio_assets.pipeline import JOB_TAG

from . import worker
from .schemas import JobError, RunInfo, StatusResponse

JOB_ID = re.compile(JOB_ID_PATTERN)
IN_FLIGHT = {DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.MANAGED,
             DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING,
             DagsterRunStatus.SUSPENDED}
STEP_NAMES = {
    "storyboard": "planning_storyboard",
    "scene_key_image": "generating_key_images",
    "scene_motion_clip": "generating_motion_clips",
    "soundtrack": "mixing_soundtrack",
    "final_video": "assembling_video",
    "final_video_quality": "checking_quality",
}
# A CLI-run job (no API request) with no run in flight for this long is reported as interrupted.
CLI_GAP_SECONDS = 30.0

# Expected seconds per stage on one free core, before scaling by the pace seen so far. Measured
# with the built-in engines: a scene is ~0.05 s a frame, assembly ~0.125 s a frame (encode-bound).
STARTUP_S = 4.0
STORYBOARD_S = 1.0
PACE_PRIOR_S = 5.0  # finished seconds at the expected pace assumed before any stage has finished


def expected_scene_s(frames: int) -> float:
    return 0.6 + 0.05 * frames


def expected_final_s(frames: int) -> float:
    return 1.5 + 0.15 * frames  # encode + thumbnail + quality checks


def expected_total_s(plan: Storyboard) -> float:
    frames = [s.frames for s in plan.scenes]
    return STARTUP_S + sum(expected_scene_s(f) for f in frames) + expected_final_s(sum(frames))


class NotFound(LookupError):
    pass


@dataclass
class Run:
    run_id: str
    stage: str  # storyboard | scene_00N | final_video
    status: DagsterRunStatus
    created: datetime
    start: float | None
    end: float | None

    @property
    def seconds(self) -> float | None:
        return self.end - self.start if self.start and self.end else None


def _stage(run) -> str:
    if run.job_name == "storyboard_job":
        return "storyboard"
    if run.job_name == "final_video_job":
        return "final_video"
    if run.job_name == "scene_job":
        return run.tags.get("dagster/partition/scene") or run.tags.get("dagster/partition", "").split("|")[-1]
    return run.job_name


def job_runs(instance: DagsterInstance, job_id: str) -> list[Run]:
    records = instance.get_run_records(RunsFilter(tags={JOB_TAG: job_id}), order_by="create_timestamp",
                                       ascending=True)
    return [Run(r.dagster_run.run_id, _stage(r.dagster_run), r.dagster_run.status, r.create_timestamp,
                r.start_time, r.end_time) for r in records]


@dataclass
class Job:
    """Everything known about one job, loaded once per request."""

    job_id: str
    store: ArtifactStore
    instance: DagsterInstance
    spec: JobSpec
    plan: Storyboard | None
    record: worker.WorkerRecord | None
    running: bool
    runs: list[Run]

    @property
    def dir(self) -> Path:
        return self.store.job_dir(self.job_id)

    @property
    def request_runs(self) -> list[Run]:
        """The runs made for the API's latest request (all runs for a job made by the CLI)."""
        if self.record is None:
            return self.runs
        return [r for r in self.runs if r.created >= self.record.requested]

    def has_video(self) -> bool:
        return layout.video_path(self.store, self.job_id).is_file() and \
            layout.video_record_path(self.store, self.job_id).is_file()


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
    liveness.reap(instance, store)  # a dead worker's runs end (FAILURE, "worker died") and free their slots
    return Job(job_id, store, instance, spec, plan, worker.read_record(job_dir), worker.is_running(job_dir),
               job_runs(instance, job_id))


def write_spec(job: Job, **changes) -> JobSpec:
    spec = job.spec.model_copy(update=changes)
    JobSpec.model_validate(spec.model_dump())  # the changes must keep the job valid
    write_model(layout.job_path(job.store, job.job_id), spec)
    job.spec = spec
    return spec


def _failure(instance: DagsterInstance, run: Run) -> JobError:
    """Which step of a failed run failed, and why, from the run's event log."""
    for entry in reversed(instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)):
        event = entry.dagster_event
        data = event.step_failure_data if event else None
        reason = ""
        if data is not None:
            if data.user_failure_data is not None and data.user_failure_data.description:
                reason = data.user_failure_data.description
            elif data.error is not None:
                reason = data.error.message
        return JobError(stage=run.stage, step=event.step_key if event else None,
                        reason=reason.strip() or "step failed", run_id=run.run_id)
    for entry in reversed(instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)):
        message = entry.dagster_event.message if entry.dagster_event else entry.user_message
        return JobError(stage=run.stage, reason=(message or "run failed").strip(), run_id=run.run_id)
    return JobError(stage=run.stage, reason=f"run ended {run.status.value}", run_id=run.run_id)


def _current_step(instance: DagsterInstance, run: Run) -> str:
    started = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
    if started and started[-1].step_key:
        return STEP_NAMES.get(started[-1].step_key, started[-1].step_key)
    return _stage_step(run.stage)


def _stage_step(stage: str) -> str:
    if stage.startswith("scene_"):
        return STEP_NAMES["scene_key_image"]
    return STEP_NAMES.get(stage, stage)


def status(job: Job, now: float | None = None) -> StatusResponse:
    now = time.time() if now is None else now
    plan, record = job.plan, job.record
    scene_ids = [s.id for s in plan.scenes] if plan else []
    frames = {s.id: s.frames for s in plan.scenes} if plan else {}
    kind = record.kind if record else None
    runs = job.request_runs
    latest: dict[str, Run] = {}
    for run in runs:
        latest[run.stage] = run
    storyboard_runs = [r for r in job.runs if r.stage == "storyboard"]
    if storyboard_runs and "storyboard" not in latest:
        latest["storyboard"] = storyboard_runs[-1]

    # The stages this request makes, with their expected seconds.
    expected: dict[str, float] = {}
    if record is not None:
        expected["startup"] = STARTUP_S
    if kind == "regenerate" and record.scene_id:
        expected[record.scene_id] = expected_scene_s(frames.get(record.scene_id, 0))
    else:
        expected["storyboard"] = STORYBOARD_S
        expected.update({s: expected_scene_s(frames[s]) for s in scene_ids})
    expected["final_video"] = expected_final_s(sum(frames.values()))

    def state(stage: str) -> str:
        if stage == "startup":
            return "done" if runs else ("running" if job.running else "pending")
        run = latest.get(stage)
        if run is None:
            return "pending"
        if run.status == DagsterRunStatus.SUCCESS:
            return "done"
        if run.status == DagsterRunStatus.FAILURE:
            return "failed"
        if run.status == DagsterRunStatus.CANCELED:
            return "canceled"
        return "running"

    states = {stage: state(stage) for stage in expected}
    if kind == "regenerate":
        others = sum(1 for s in scene_ids if s != record.scene_id
                     and layout.motion_path(job.store, job.job_id, s).is_file())
        scenes_completed = others + (states.get(record.scene_id) == "done")
    else:
        scenes_completed = sum(1 for s in scene_ids if states.get(s) == "done")

    # Pace: how much slower (or faster) than expected the finished stages of this request went,
    # pulled toward 1 while little has finished.
    actual = expected_done = 0.0
    for stage, exp in expected.items():
        if states[stage] != "done":
            continue
        if stage == "startup" and record is not None and runs:
            actual += (runs[0].created - record.requested).total_seconds()
            expected_done += exp
        elif stage in latest and latest[stage].seconds is not None and latest[stage] in runs:
            actual += latest[stage].seconds
            expected_done += exp
    pace = min(10.0, max(0.3, (actual + PACE_PRIOR_S) / (expected_done + PACE_PRIOR_S)))

    total = sum(expected.values())
    done = sum(exp for stage, exp in expected.items() if states[stage] == "done")
    partial = 0.0  # in expected seconds
    remaining = sum(exp for stage, exp in expected.items() if states[stage] == "pending") * pace  # in real seconds
    in_flight = [r for r in runs if r.status in IN_FLIGHT]
    for stage, exp in expected.items():
        if states[stage] != "running":
            continue
        if stage == "startup":
            began = record.requested.timestamp()
        else:
            began = latest[stage].created.timestamp()  # not start_time: set later, it would move progress back
        elapsed, budget = max(0.0, now - began), exp * pace
        if elapsed <= 0.9 * budget:
            fraction = elapsed / budget
        else:  # slower than expected: creep toward the end without reaching it
            fraction = 1 - 0.1 * math.exp(-(elapsed - 0.9 * budget) / (0.5 * budget))
        partial += exp * fraction
        remaining += max(budget - elapsed, 2.0)

    error: JobError | None = None
    current_scene: str | None = None
    eta: int | None = None
    if record is not None and record.canceled_at:
        value, step = "canceled", "canceled"
    elif failed := [r for r in latest.values() if r.status == DagsterRunStatus.FAILURE]:
        value, step = "failed", "failed"
        error = _failure(job.instance, failed[0])
    elif [s for s in expected if states[s] == "canceled"]:
        value, step = "canceled", "canceled"
    elif in_flight and (record is None or job.running):
        value = "processing"
        step = _current_step(job.instance, in_flight[-1])
        current_scene = in_flight[-1].stage if in_flight[-1].stage.startswith("scene_") else None
    elif in_flight:
        value, step = "failed", "failed"
        error = JobError(stage=in_flight[-1].stage, run_id=in_flight[-1].run_id,
                         reason="the worker process ended while this run was in progress"
                                + _log_hint(job))
    elif states["final_video"] == "done" and job.has_video():
        value, step = "completed", "completed"
    elif record is not None and job.running:
        pending = [s for s in expected if states[s] == "pending" and s != "startup"]
        value = "processing" if runs else "queued"
        step = _stage_step(pending[0]) if runs and pending else "queued"
        current_scene = pending[0] if runs and pending and pending[0].startswith("scene_") else None
    elif record is not None:
        value, step = "failed", "failed"
        last = runs[-1].stage if runs else "worker"
        error = JobError(stage=last if runs else "worker",
                         reason="the worker exited before the video was finished" + _log_hint(job))
    elif not [r for r in job.runs if r.stage != "storyboard"]:
        value, step = "storyboard_ready", "awaiting_generate"
    elif job.runs and (job.runs[-1].end or 0) > now - CLI_GAP_SECONDS:
        value, step = "processing", _stage_step(next((s for s in expected if states[s] == "pending"), "final_video"))
    else:
        value, step = "failed", "failed"
        error = JobError(stage=job.runs[-1].stage if job.runs else "worker",
                         reason="interrupted: no stage is running and the video was not finished")

    if value in ("completed", "failed", "canceled") and job.running and not (record and record.canceled_at):
        # The writer still holds the job's lease (it is finishing): terminal only once it lets go,
        # so an immediate regenerate is not refused.
        value, step, error = "processing", "finishing", None
    if value == "completed":
        progress, eta = 1.0, 0
    elif value == "storyboard_ready":
        progress = 0.0
    else:
        progress = min(0.99, (done + partial) / total) if total else 0.0
        if value in ("queued", "processing"):
            eta = max(1, round(remaining))
    return StatusResponse(
        job_id=job.job_id, status=value, progress=round(progress, 3), current_step=step,
        scenes_completed=scenes_completed, scenes_total=len(scene_ids), eta_seconds=eta, kind=kind,
        current_scene=current_scene, error=error,
        runs=[RunInfo(run_id=r.run_id, stage=r.stage, status=r.status.value) for r in runs],
        updated_at=datetime.now(timezone.utc))


def _log_hint(job: Job) -> str:
    tail = worker.log_tail(job.dir, lines=1)
    return f" (worker log: {tail})" if tail else ""


def generation_time(job: Job) -> float | None:
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
            RunsFilter(job_name="final_video_job", statuses=[DagsterRunStatus.SUCCESS]), limit=limit)
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


def cancel_runs(job: Job, message: str) -> list[str]:
    """Mark the job's unfinished Dagster runs CANCELED (after its worker was killed)."""
    canceled = []
    for run in job.instance.get_runs(RunsFilter(tags={JOB_TAG: job.job_id}, statuses=list(IN_FLIGHT))):
        job.instance.report_run_canceled(run, message=message)
        liveness.free_slots(job.instance, run.run_id)  # report_run_canceled leaves a held `gpu` slot held
        canceled.append(run.run_id)
    return canceled
