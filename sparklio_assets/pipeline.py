"""Running a job through Dagster without a daemon (the CLI, the API's worker): materialize the
stages that jobs.next_stages names, as runs on the instance, so every run shows in the Dagster UI.

A job is 2 + N runs: storyboard, then its N scene runs at once, then the final video. The scene
runs are bounded by the `gpu` pool (the instance's limit, `dagster instance concurrency set gpu N`):

- on one machine (Dagster's default executor) at most min(pool limit, CPU cores) scene runs go at
  once, each in a child process forked from this one, so they share nothing but the instance and
  the store and run truly in parallel (the built-in engines are CPU-bound Python);
- with SPARKLIO_EXECUTOR=celery at most the pool limit: each run's steps go to the `gpu` queue,
  where every free GPU worker takes one (sparklio_assets/distributed.py).

Inside each run the scene steps claim their pool slot as usual, so runs of other jobs (another API
worker, a campaign) share the same limit. Reports come back in stage order once each stage is done.

Why forked processes, one run each, rather than threads or one run over several partitions: the
built-in engines hold the GIL for much of their work, so threads would not overlap; a run over a
set of multi-partitions is not something Dagster can target, and one run per scene is what lets the
UI and the API show each scene and re-make one alone. A fork (not spawn) inherits the Definitions
as they are, so runs built in memory (tests, resource overrides) need not be importable by name;
each child opens its own connection to the instance from its ref.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions

from resources.artifacts import ArtifactStore

from . import distributed, liveness, resume, store_paths
from .assets import GPU_POOL
from .files import atomic_path
from .jobs import (
    FINAL_VIDEO,
    FINAL_VIDEO_JOB,
    JOB_TAG,
    SCENE_JOB,
    STORYBOARD,
    STORYBOARD_JOB,
    Stage,
    create_job,
    next_stages,
)
from .models import KeyImageRecord, MotionRecord, VideoRecord
from .partitions import register_scenes, scene_key
from .step_failures import describe_step_failures, failure_report

__all__ = ["JOB_TAG", "PipelineError", "StageReport", "assemble", "create_job", "ensure_dagster_home",
           "make_storyboard", "remake_scene", "run_job", "scene_parallelism"]

# In-process runs print nothing: their events are in the run's event log (the Dagster UI), the CLI
# and the API say what happened in a line each, and a failure's traceback goes to its log file.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

OnStage = Callable[["StageReport"], None]


class PipelineError(RuntimeError):
    """A stage failed; the message names the stage, the step and the reason, `log` the file with
    the tracebacks (None when several stages failed: each has its own)."""

    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log

    def __reduce__(self):  # from a forked stage process back to the parent, log included
        return PipelineError, (str(self), self.log)


@dataclass
class StageReport:
    stage: str  # storyboard | scene_001 ... | final_video
    run_id: str
    seconds: float
    engines: dict[str, str]


def ensure_dagster_home(sparklio_home: Path) -> Path:
    """DAGSTER_HOME as set, or <sparklio home>/dagster with the packaged dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or sparklio_home / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(str(files("sparklio_assets") / "data" / "dagster.yaml"), config)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# ---------------------------------------------------------------- one run


def _execute(defs: Definitions, stage: Stage, instance: DagsterInstance, job_id: str, store: ArtifactStore,
             run_config: dict | None = None) -> tuple[str, float]:
    """One stage as one run; returns (run id, seconds). Raises PipelineError naming each failed step
    and the log file (store_paths.failure_log_path) that holds their tracebacks."""
    started = time.perf_counter()
    config = {**QUIET, **(run_config or {})}
    tags = {JOB_TAG: job_id, **liveness.run_tags(job_id)}  # the lease tag: see liveness.reap
    if distributed.cluster_executor() is None:
        result = defs.resolve_job_def(stage.job_name).execute_in_process(
            instance=instance, partition_key=stage.partition_key, tags=tags, run_config=config, raise_on_error=False)
    else:  # the configured executor (Celery) places the steps on its workers, so run the job through it
        result = distributed.execute_on_cluster(defs, stage.job_name, stage.partition_key, instance, tags, config)
    if not result.success:
        failures = result.get_step_failure_events()
        log = store_paths.failure_log_path(store, job_id, stage.name, result.run_id)
        with atomic_path(log) as tmp:
            tmp.write_text(failure_report(failures) if failures else "the run failed before any step ran\n",
                           encoding="utf-8")
        reason = describe_step_failures(failures) or "run failed"
        raise PipelineError(f"{stage.name} failed (run {result.run_id}): {reason}", log)
    return result.run_id, time.perf_counter() - started


def _report(stage: Stage, job_id: str, run_id: str, seconds: float, store: ArtifactStore) -> StageReport:
    """What made the stage's output, read back from the records its run wrote."""
    if stage.job_name == STORYBOARD_JOB:
        engines = {"storyboard": store_paths.read_storyboard(store, job_id).metadata.planner_engine}
    elif stage.job_name == SCENE_JOB:
        key = store.read(store_paths.key_image_record_path(store, job_id, stage.name), KeyImageRecord)
        motion = store.read(store_paths.motion_path(store, job_id, stage.name), MotionRecord)
        engines = {"image": key.engine, "motion": motion.engine + (
            f" (fallback: {motion.fallback_reason})" if motion.fallback_reason else "")}
    else:
        record = store.read(store_paths.video_record_path(store, job_id), VideoRecord)
        engines = {k: record.engines[k] for k in ("music", "narration", "assembly") if k in record.engines}
    return StageReport(stage.name, run_id, seconds, engines)


# ---------------------------------------------------------------- several runs at once

# What a forked stage process inherits from its parent (set before the pool forks, never pickled:
# Definitions built in memory, by tests or by hand, need not be importable by module name).
_CHILD: dict = {}


def _child_init(defs: Definitions, instance_ref, job_id: str, store: ArtifactStore, run_config: dict | None) -> None:
    _CHILD.update(defs=defs, instance=DagsterInstance.from_ref(instance_ref), job_id=job_id, store=store,
                  run_config=run_config)


def _child_run(stage: Stage) -> tuple[str, float]:
    return _execute(_CHILD["defs"], stage, _CHILD["instance"], _CHILD["job_id"], _CHILD["store"], _CHILD["run_config"])


def gpu_pool_limit(instance: DagsterInstance) -> int | None:
    """The `gpu` pool's slot count on this instance (set, or the instance's default_limit);
    None when the instance enforces no pool limits."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    default = storage.get_pool_config().default_pool_limit
    for pool in storage.get_pool_limits():
        if pool.name == GPU_POOL and not pool.from_default:
            return pool.limit
    return default


def scene_parallelism(instance: DagsterInstance, scenes: int) -> int:
    """How many scene runs go at once: the `gpu` pool's limit, and on one machine no more than its
    CPU cores (the built-in engines are CPU-bound); with Celery the GPU workers take one each."""
    bound = scenes
    if distributed.cluster_executor() is None:
        bound = min(bound, os.cpu_count() or 1)
    limit = gpu_pool_limit(instance)
    return max(1, min(bound, limit if limit is not None else bound))


def _can_fork(instance: DagsterInstance) -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and not instance.is_ephemeral


def run_stages(stages: Sequence[Stage], job_id: str, defs: Definitions, instance: DagsterInstance,
               store: ArtifactStore, on_stage: OnStage = lambda _: None, run_config: dict | None = None) -> None:
    """Run the stages (one stage, or a job's scenes) and report each in order. Several go at once
    (scene_parallelism); a failed one does not stop the others, and the error names every failure."""
    with _lease(job_id, instance, store):  # every writer of a job holds its lease (liveness.py)
        if scene_ids := [s.name for s in stages if s.job_name == SCENE_JOB]:
            _scene_cells(job_id, scene_ids, instance, store)
        _run_stages(stages, job_id, defs, instance, store, on_stage, run_config)


def _scene_cells(job_id: str, scene_ids: Sequence[str], instance: DagsterInstance, store: ArtifactStore) -> None:
    """Refuse a scene the storyboard does not have before any run (its partition key would not
    exist), and make sure the storyboard's scene keys are on the instance (a storyboard made
    before the scene dimension was dynamic registered none)."""
    plan = store_paths.read_storyboard(store, job_id)
    if why := plan.lacks(job_id, list(scene_ids)):
        raise PipelineError(why)
    register_scenes(instance, [s.id for s in plan.scenes])


def _run_stages(stages: Sequence[Stage], job_id: str, defs: Definitions, instance: DagsterInstance,
                store: ArtifactStore, on_stage: OnStage, run_config: dict | None) -> None:
    workers = min(len(stages), scene_parallelism(instance, len(stages))) if len(stages) > 1 else 1
    if workers == 1 or not _can_fork(instance):
        for stage in stages:
            run_id, seconds = _execute(defs, stage, instance, job_id, store, run_config)
            on_stage(_report(stage, job_id, run_id, seconds, store))
        return
    errors: list[PipelineError] = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_child_init,
                             initargs=(defs, instance.get_ref(), job_id, store, run_config)) as pool:
        futures: list[tuple[Stage, Future]] = [(stage, pool.submit(_child_run, stage)) for stage in stages]
        for stage, future in futures:
            try:
                run_id, seconds = future.result()
            except PipelineError as error:
                errors.append(error)
                continue
            except BrokenProcessPool as error:
                errors.append(PipelineError(f"{stage.name} failed: its process died ({error})"))
                continue
            on_stage(_report(stage, job_id, run_id, seconds, store))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise PipelineError("; ".join(map(str, errors)))


# ---------------------------------------------------------------- the entry points


def run_job(job_id: str, defs: Definitions, instance: DagsterInstance, store: ArtifactStore,
            on_stage: OnStage = lambda _: None, run_config: dict | None = None,
            reuse_storyboard: bool = False) -> VideoRecord:
    """Materialize everything for one job, in the order jobs.next_stages gives; returns the final
    video's record. With reuse_storyboard, a storyboard already materialized (by the API, say) is
    kept, and so are the scenes an interrupted attempt already made (resume.finished_scenes)."""
    with _lease(job_id, instance, store):
        done: set[str] = set()
        if (reuse_storyboard and store_paths.storyboard_path(store, job_id).is_file()
                and job_id in instance.get_materialized_partitions(AssetKey("storyboard"))):
            scene_ids = [s.id for s in store_paths.read_storyboard(store, job_id).scenes]
            done |= {STORYBOARD, *resume.finished_scenes(instance, store, job_id, scene_ids)}
        while True:
            scene_ids = [s.id for s in store_paths.read_storyboard(store, job_id).scenes] if STORYBOARD in done else []
            stages = next_stages(job_id, scene_ids, done)
            if not stages:
                return store.read(store_paths.video_record_path(store, job_id), VideoRecord)
            run_stages(stages, job_id, defs, instance, store, on_stage, run_config)
            done.update(stage.name for stage in stages)


def _lease(job_id: str, instance: DagsterInstance, store: ArtifactStore):
    """The job's lease (liveness.hold) for this process; re-entrant, so each entry point takes it."""
    return liveness.hold(store.job_dir(job_id), job_id, liveness.owner(), instance, store)


def make_storyboard(job_id: str, defs: Definitions, instance: DagsterInstance, store: ArtifactStore,
                    on_stage: OnStage = lambda _: None, run_config: dict | None = None) -> str:
    """Materialize the job's storyboard; returns the run id."""
    reports: list[StageReport] = []

    def report(stage: StageReport) -> None:
        reports.append(stage)
        on_stage(stage)

    run_stages([Stage(STORYBOARD, STORYBOARD_JOB, job_id)], job_id, defs, instance, store, report, run_config)
    return reports[0].run_id


def assemble(job_id: str, defs: Definitions, instance: DagsterInstance, store: ArtifactStore,
             on_stage: OnStage = lambda _: None, run_config: dict | None = None) -> VideoRecord:
    """(Re-)mix the soundtrack and assemble the final video from the job's current scenes."""
    run_stages([Stage(FINAL_VIDEO, FINAL_VIDEO_JOB, job_id)], job_id, defs, instance, store, on_stage, run_config)
    return store.read(store_paths.video_record_path(store, job_id), VideoRecord)


def remake_scene(job_id: str, scene_id: str, defs: Definitions, instance: DagsterInstance, store: ArtifactStore,
                 on_stage: OnStage = lambda _: None, run_config: dict | None = None) -> None:
    """(Re-)materialize one scene's key image and motion; the other scenes are not touched."""
    run_stages([Stage(scene_id, SCENE_JOB, scene_key(job_id, scene_id))], job_id, defs, instance, store,
               on_stage, run_config)
