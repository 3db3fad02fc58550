"""A job's status as a pure function of what is known about it: its Dagster runs (stage, status,
timings, the last step started, why it failed), the request the API last made (worker.json),
whether its worker holds the job lock, and which files exist. `api/jobs.py` reads those from the
instance and the store; this module does no I/O, so every state is unit-tested on hand-made runs.

Each run is one stage (storyboard, scene_00N, final_video). The stages' run statuses give the
status, their timings the progress and ETA, and a failed run's step failure says which step
failed and why.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dagster import DagsterRunStatus

from sparklio_assets.models import Storyboard

from .schemas import JobError, RunInfo, StatusResponse
from .worker import WorkerRecord

IN_FLIGHT = frozenset({DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.MANAGED,
                       DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING,
                       DagsterRunStatus.SUSPENDED})
STEP_NAMES = {
    "storyboard": "planning_storyboard",
    "scene_key_image": "generating_key_images",
    "scene_motion_clip": "generating_motion_clips",
    "soundtrack": "mixing_soundtrack",
    "final_video": "assembling_video",
    "final_video_quality": "checking_quality",
}
# The step a stage's run begins with, shown until its first step starts: final_video_job mixes the
# soundtrack before it assembles, so "assembling_video" must not show before "mixing_soundtrack".
FIRST_STEP = {"storyboard": "planning_storyboard", "final_video": "mixing_soundtrack"}
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


@dataclass
class Run:
    """One Dagster run of the job, with what its event log says (read only where status needs it)."""

    run_id: str
    stage: str  # storyboard | scene_00N | final_video
    status: DagsterRunStatus
    created: datetime
    start: float | None = None
    end: float | None = None
    last_step: str | None = None  # step key of the latest STEP_START (runs in flight)
    failed_step: str | None = None  # step key of the STEP_FAILURE (failed runs)
    failure: str | None = None  # why the run failed, as step_failures.step_failure_reason says
    gpu_wait: str = ""  # why a scene step waits for the GPU worker (jobs.GPU_WAIT_TAG), "" when it does not
    daemon: bool = False  # launched from the Dagster UI (or its chain sensor): the daemon, not a worker, runs it

    @property
    def seconds(self) -> float | None:
        return self.end - self.start if self.start and self.end else None


@dataclass
class JobState:
    """Everything status needs, as plain data."""

    job_id: str
    plan: Storyboard | None
    record: WorkerRecord | None
    running: bool  # a worker holds the job lock
    runs: list[Run] = field(default_factory=list)  # oldest first
    scenes_made: frozenset[str] = frozenset()  # scenes whose motion file exists
    video_ready: bool = False  # ad.mp4 and video.json exist
    log_tail: str = ""  # the worker log's last useful line
    progress_shown: float = 0.0  # the highest progress already reported for the current request

    @property
    def request_runs(self) -> list[Run]:
        """The runs made for the API's latest request (all runs for a job made by the CLI)."""
        if self.record is None:
            return self.runs
        return [r for r in self.runs if r.created >= self.record.requested]


def stage_step(stage: str) -> str:
    if stage.startswith("scene_"):
        return STEP_NAMES["scene_key_image"]
    return FIRST_STEP.get(stage) or STEP_NAMES.get(stage, stage)


def current_step(run: Run) -> str:
    if run.last_step:
        return STEP_NAMES.get(run.last_step, run.last_step)
    return stage_step(run.stage)


def failure_of(run: Run) -> JobError:
    """Which step of a failed run failed, and why."""
    if run.failed_step or run.failure:
        return JobError(stage=run.stage, step=run.failed_step, reason=run.failure or "step failed", run_id=run.run_id)
    return JobError(stage=run.stage, reason=f"run ended {run.status.value}", run_id=run.run_id)


def status(job: JobState, now: float | None = None) -> StatusResponse:
    """The job's status at `now` (a UNIX time; default the current time)."""
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
        others = sum(1 for s in scene_ids if s != record.scene_id and s in job.scenes_made)
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
    scene: str | None = None
    eta: int | None = None
    detail: str | None = None
    hint = f" (worker log: {job.log_tail})" if job.log_tail else ""
    if record is not None and record.canceled_at:
        value, step = "canceled", "canceled"
    elif failed := [r for r in latest.values() if r.status == DagsterRunStatus.FAILURE]:
        value, step = "failed", "failed"
        error = failure_of(failed[0])
    elif [s for s in expected if states[s] == "canceled"]:
        value, step = "canceled", "canceled"
    elif in_flight and (record is None or job.running or any(r.daemon for r in in_flight)):
        value = "processing"
        waiting = next((r for r in in_flight if r.gpu_wait), None)
        step = "waiting_for_gpu_worker" if waiting else current_step(in_flight[-1])
        if waiting:
            detail = waiting.gpu_wait
        scene = in_flight[-1].stage if in_flight[-1].stage.startswith("scene_") else None
    elif in_flight:
        value, step = "failed", "failed"
        error = JobError(stage=in_flight[-1].stage, run_id=in_flight[-1].run_id,
                         reason="the worker process ended while this run was in progress" + hint)
    elif states["final_video"] == "done" and job.video_ready:
        value, step = "completed", "completed"
    elif record is not None and job.running:
        pending = [s for s in expected if states[s] == "pending" and s != "startup"]
        value = "processing" if runs else "queued"
        step = stage_step(pending[0]) if runs and pending else "queued"
        scene = pending[0] if runs and pending and pending[0].startswith("scene_") else None
    elif record is not None:
        value, step = "failed", "failed"
        error = JobError(stage=runs[-1].stage if runs else record.scene_id or "worker",
                         reason="the worker exited before the video was finished" + hint)
    elif not [r for r in job.runs if r.stage != "storyboard"]:
        value, step = "storyboard_ready", "awaiting_generate"
    elif job.runs and (job.runs[-1].end or 0) > now - CLI_GAP_SECONDS:
        value, step = "processing", stage_step(next((s for s in expected if states[s] == "pending"), "final_video"))
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
        if value in ("queued", "processing"):  # never below what this request already showed
            progress = max(progress, job.progress_shown)
        if value in ("queued", "processing"):
            eta = max(1, round(remaining))
    return StatusResponse(
        job_id=job.job_id, status=value, progress=round(progress, 3), current_step=step,
        scenes_completed=scenes_completed, scenes_total=len(scene_ids), eta_seconds=eta, kind=kind,
        current_scene=scene, error=error, detail=detail,
        runs=[RunInfo(run_id=r.run_id, stage=r.stage, status=r.status.value) for r in runs],
        updated_at=datetime.fromtimestamp(now, UTC))
