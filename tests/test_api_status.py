"""`api.status.status` on hand-made run lists: every state a job can be in, without Dagster runs,
workers or files. The end-to-end tests (test_api.py) show the same states on real runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dagster import DagsterRunStatus as S

from api.status import JobState, Run, status
from api.worker import WorkerRecord
from sparklio_assets.models import BrandKit, Brief
from sparklio_assets.planner import plan_storyboard

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
BRIEF = Brief(brand_id="b1", product="Daily Eye Care Moisturizer", target_audience="20-30대 직장인",
              goal="제품 인지도 + 전환", duration=5, tone="professional_warm", channels=["instagram_reels"])
PLAN = plan_storyboard(BRIEF, BrandKit.default_for(BRIEF))
SCENES = [s.id for s in PLAN.scenes]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(stage: str, state: S, created: float, took: float | None = None, **events) -> Run:
    start = at(created).timestamp() + 0.1
    end = start + took if took is not None else None
    return Run(run_id=f"run-{stage}-{created}", stage=stage, status=state, created=at(created), start=start,
               end=end, **events)


def storyboard_run() -> Run:
    return run("storyboard", S.SUCCESS, -10, 1)


def request(kind: str = "generate", scene_id: str | None = None, canceled: bool = False) -> WorkerRecord:
    return WorkerRecord(kind=kind, requested_at=T0.isoformat(), scene_id=scene_id,
                        canceled_at=at(30).isoformat() if canceled else None)


def job(runs: list[Run], record: WorkerRecord | None = None, running: bool = False, **extra) -> JobState:
    return JobState(job_id="job123", plan=PLAN, record=record, running=running, runs=[storyboard_run(), *runs],
                    **extra)


def whole_job(finished: float = 60.0) -> list[Run]:
    runs = [run(scene, S.SUCCESS, 5 + 5 * i, 4) for i, scene in enumerate(SCENES)]
    return runs + [run("final_video", S.SUCCESS, 5 + 5 * len(SCENES), finished)]


def test_storyboard_only_awaits_generate():
    state = status(job([]), now=at(0).timestamp())
    assert (state.status, state.current_step, state.progress, state.eta_seconds) == (
        "storyboard_ready", "awaiting_generate", 0.0, None)
    assert (state.scenes_completed, state.scenes_total) == (0, len(SCENES))


def test_a_request_whose_worker_waits_for_a_slot_is_queued():
    state = status(job([], request(), running=True), now=at(2).timestamp())
    assert (state.status, state.current_step) == ("queued", "queued")
    assert 0 < state.progress < 0.2 and state.eta_seconds >= 1


def test_processing_names_the_step_and_scene_that_run():
    runs = [run(SCENES[0], S.SUCCESS, 5, 3), run(SCENES[1], S.STARTED, 9, last_step="scene_motion_clip")]
    state = status(job(runs, request(), running=True), now=at(10).timestamp())
    assert (state.status, state.current_step, state.current_scene) == (
        "processing", "generating_motion_clips", SCENES[1])
    assert state.scenes_completed == 1 and 0 < state.progress < 0.99 and state.eta_seconds >= 1
    assert [r.stage for r in state.runs] == [SCENES[0], SCENES[1]]  # this request's runs only


def test_a_scene_waiting_for_the_gpu_worker_says_so_and_why():
    reason = "ComfyUI at http://gpu:8188 is down (connection refused); waiting up to 600 s"
    runs = [run(SCENES[0], S.STARTED, 5, last_step="scene_key_image", gpu_wait=reason)]
    state = status(job(runs, request(), running=True), now=at(10).timestamp())
    assert (state.status, state.current_step, state.current_scene, state.detail) == (
        "processing", "waiting_for_gpu_worker", SCENES[0], reason)
    back = [run(SCENES[0], S.STARTED, 5, last_step="scene_key_image", gpu_wait="")]
    state = status(job(back, request(), running=True), now=at(10).timestamp())
    assert (state.current_step, state.detail) == ("generating_key_images", None)


def test_final_video_mixes_the_soundtrack_before_it_assembles():
    """The step names follow the run's own order: never assembling → mixing → assembling."""
    done = [run(scene, S.SUCCESS, 5 + i, 1) for i, scene in enumerate(SCENES)]
    steps = []
    for last_step in (None, "soundtrack", "final_video", "final_video_quality"):
        final = run("final_video", S.STARTED, 20, last_step=last_step)
        steps.append(status(job([*done, final], request(), running=True), now=at(21).timestamp()).current_step)
    between = status(job(done, request(), running=True), now=at(19).timestamp()).current_step
    assert [between, *steps] == ["mixing_soundtrack", "mixing_soundtrack", "mixing_soundtrack", "assembling_video",
                                 "checking_quality"]


def test_progress_never_reaches_one_before_the_video_is_done():
    done = [run(scene, S.SUCCESS, 5 + i, 1) for i, scene in enumerate(SCENES)]
    final = run("final_video", S.STARTED, 20, last_step="final_video")
    late = [status(job([*done, final], request(), running=True), now=at(20 + t).timestamp()).progress
            for t in (1, 10, 100, 1000, 10_000)]
    assert late == sorted(late) and all(p < 1.0 for p in late), late
    # finished runs, but no ad.mp4 on disk: not completed
    unfinished = status(job(whole_job(), request(), running=False, video_ready=False), now=at(200).timestamp())
    assert unfinished.status == "failed" and unfinished.progress < 1.0


def test_completed():
    state = status(job(whole_job(), request(), video_ready=True), now=at(300).timestamp())
    assert (state.status, state.current_step, state.progress, state.eta_seconds) == ("completed", "completed", 1.0, 0)
    assert state.scenes_completed == len(SCENES) and state.error is None


def test_a_failed_run_says_which_step_failed_and_why():
    runs = [run(SCENES[0], S.FAILURE, 5, 1, failed_step="scene_key_image", failure="scene_009 does not exist")]
    state = status(job(runs, request(), running=False), now=at(10).timestamp())
    assert state.status == "failed" and state.current_step == "failed"
    assert (state.error.stage, state.error.step, state.error.reason, state.error.run_id) == (
        SCENES[0], "scene_key_image", "scene_009 does not exist", runs[0].run_id)


def test_a_worker_that_died_mid_run_fails_the_job_with_its_last_log_line():
    runs = [run(SCENES[0], S.STARTED, 5)]
    state = status(job(runs, request(), running=False, log_tail="Killed"), now=at(10).timestamp())
    assert state.status == "failed" and state.error.stage == SCENES[0]
    assert "worker process ended" in state.error.reason and "(worker log: Killed)" in state.error.reason


def test_a_scene_remade_from_the_dagster_ui_is_processing_not_a_dead_worker():
    """The daemon runs a UI re-make (tagged sparklio/remake=ui); no API worker holds the job."""
    runs = [*whole_job(), run(SCENES[1], S.STARTED, 200, daemon=True)]
    state = status(job(runs, request(), running=False, video_ready=True), now=at(205).timestamp())
    assert (state.status, state.current_scene, state.error) == ("processing", SCENES[1], None)
    undaemoned = [*whole_job(), run(SCENES[1], S.STARTED, 200)]
    assert status(job(undaemoned, request(), running=False, video_ready=True), now=at(205).timestamp()).status \
        == "failed", "the same run under a worker that is gone is a dead worker"


def test_a_worker_that_exited_between_runs_fails_the_job():
    state = status(job([run(SCENES[0], S.SUCCESS, 5, 1)], request(), running=False), now=at(10).timestamp())
    assert state.status == "failed" and "exited before the video was finished" in state.error.reason


@pytest.mark.parametrize("how", ["record", "runs"])
def test_canceled(how):
    if how == "record":
        state = status(job([run(SCENES[0], S.STARTED, 5)], request(canceled=True)), now=at(40).timestamp())
    else:
        state = status(job([run(SCENES[0], S.CANCELED, 5, 1)], request()), now=at(40).timestamp())
    assert (state.status, state.current_step, state.eta_seconds) == ("canceled", "canceled", None)


def test_regenerate_counts_the_other_scenes_already_made():
    runs = [*whole_job(), run(SCENES[1], S.STARTED, 400)]
    record = WorkerRecord(kind="regenerate", scene_id=SCENES[1], requested_at=at(399).isoformat())
    state = status(job(runs, record, running=True, scenes_made=frozenset(SCENES), video_ready=True),
                   now=at(401).timestamp())
    assert (state.status, state.kind, state.current_scene) == ("processing", "regenerate", SCENES[1])
    assert state.scenes_completed == len(SCENES) - 1
    assert [r.stage for r in state.runs] == [SCENES[1]]


def test_a_cli_job_is_processing_between_runs_then_interrupted():
    runs = [run(SCENES[0], S.SUCCESS, 5, 1)]
    assert status(job(runs), now=at(10).timestamp()).status == "processing"
    later = status(job(runs), now=at(600).timestamp())
    assert later.status == "failed" and later.error.reason.startswith("interrupted")


def test_progress_already_shown_is_a_floor_while_the_request_runs():
    runs = [run(SCENES[0], S.STARTED, 5)]
    fresh = status(job(runs, request(), running=True), now=at(6).timestamp())
    shown = status(job(runs, request(), running=True, progress_shown=0.5), now=at(6).timestamp())
    assert fresh.progress < 0.5 and shown.progress == 0.5
    failed = status(job([run(SCENES[0], S.FAILURE, 5, 1)], request(), progress_shown=0.5), now=at(9).timestamp())
    assert failed.status == "failed"
