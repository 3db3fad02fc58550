"""Running a job through Dagster: create the job's partition, then materialize its storyboard,
each scene, and the final video as runs on the instance, so every run shows in the Dagster UI.

A run targets one partitions definition, so a job takes 2 + N runs (storyboard, one per scene,
final video), one after the other: the CLI needs no daemon, and the stage reports come back as
they finish. On one machine each run executes in this process; with SPARKLIO_EXECUTOR=celery its
steps go to the Celery workers (sparklio_assets/distributed.py).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions

from resources.artifacts import ArtifactStore, write_model

from . import distributed, layout, liveness, resume
from .models import JobSpec, KeyImageRecord, MotionRecord, VideoRecord
from .partitions import JOBS, scene_key

JOB_TAG = "sparklio/job_id"
# Warnings and errors from in-process runs reach the terminal; the rest is in the run's event log.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class PipelineError(RuntimeError):
    """A stage failed; the message names the stage, the step and the reason."""


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


def create_job(spec: JobSpec, instance: DagsterInstance, store: ArtifactStore) -> JobSpec:
    """Write the job's request and register its partition. Idempotent for the same job_id."""
    write_model(layout.job_path(store, spec.job_id), spec)
    if not instance.has_dynamic_partition(JOBS.name, spec.job_id):
        instance.add_dynamic_partitions(JOBS.name, [spec.job_id])
    return spec


def _execute(defs: Definitions, job_name: str, partition_key: str, instance: DagsterInstance, job_id: str,
             stage: str, run_config: dict | None = None) -> str:
    config = {**QUIET, **(run_config or {})}
    tags = {JOB_TAG: job_id, **liveness.run_tags(job_id)}  # the lease tag: see liveness.reap
    if distributed.cluster_executor() is None:
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=partition_key, tags=tags, run_config=config, raise_on_error=False)
    else:  # the configured executor (Celery) places the steps on its workers, so run the job through it
        result = distributed.execute_on_cluster(defs, job_name, partition_key, instance, tags, config)
    if not result.success:
        failures = result.get_step_failure_events()
        reason = "; ".join(f"{e.step_key}: {e.step_failure_data.error.message.strip()}"
                           for e in failures if e.step_failure_data.error) or "run failed"
        raise PipelineError(f"{stage} failed (run {result.run_id}): {reason}")
    return result.run_id


def run_job(job_id: str, defs: Definitions, instance: DagsterInstance, store: ArtifactStore,
            on_stage: Callable[[StageReport], None] = lambda _: None, run_config: dict | None = None,
            reuse_storyboard: bool = False) -> VideoRecord:
    """Materialize everything for one job; returns the final video's record. With
    reuse_storyboard, a storyboard already materialized (by the API, say) is kept, and so are the
    scenes an interrupted attempt already made (resume.finished_scenes)."""
    with _lease(job_id, instance, store):
        planned = (reuse_storyboard and layout.storyboard_path(store, job_id).is_file()
                   and job_id in instance.get_materialized_partitions(AssetKey("storyboard")))
        if not planned:
            make_storyboard(job_id, defs, instance, store, on_stage, run_config)
        scenes = [scene.id for scene in layout.read_storyboard(store, job_id).scenes]
        done = resume.finished_scenes(instance, store, job_id, scenes) if planned else set()
        for scene_id in scenes:
            if scene_id not in done:
                remake_scene(job_id, scene_id, defs, instance, store, on_stage, run_config)
        return assemble(job_id, defs, instance, store, on_stage, run_config)


def _lease(job_id: str, instance: DagsterInstance, store: ArtifactStore):
    """The job's lease (liveness.hold) for this process; re-entrant, so each entry point takes it."""
    return liveness.hold(store.job_dir(job_id), job_id, liveness.owner(), instance, store)


def make_storyboard(job_id: str, defs: Definitions, instance: DagsterInstance, store: ArtifactStore,
                    on_stage: Callable[[StageReport], None] = lambda _: None, run_config: dict | None = None) -> str:
    """Materialize the job's storyboard; returns the run id."""
    started = time.perf_counter()
    with _lease(job_id, instance, store):
        run_id = _execute(defs, "storyboard_job", job_id, instance, job_id, "storyboard", run_config)
    plan = layout.read_storyboard(store, job_id)
    on_stage(StageReport("storyboard", run_id, time.perf_counter() - started,
                         {"storyboard": plan.metadata.planner_engine}))
    return run_id


def assemble(job_id: str, defs: Definitions, instance: DagsterInstance, store: ArtifactStore,
             on_stage: Callable[[StageReport], None] = lambda _: None, run_config: dict | None = None) -> VideoRecord:
    """(Re-)mix the soundtrack and assemble the final video from the job's current scenes."""
    started = time.perf_counter()
    with _lease(job_id, instance, store):
        run_id = _execute(defs, "final_video_job", job_id, instance, job_id, "final_video", run_config)
    record = store.read(layout.video_record_path(store, job_id), VideoRecord)
    engines = {k: record.engines[k] for k in ("music", "narration", "assembly") if k in record.engines}
    on_stage(StageReport("final_video", run_id, time.perf_counter() - started, engines))
    return record


def remake_scene(job_id: str, scene_id: str, defs: Definitions, instance: DagsterInstance, store: ArtifactStore,
                 on_stage: Callable[[StageReport], None] = lambda _: None, run_config: dict | None = None) -> None:
    """(Re-)materialize one scene's key image and motion; the other scenes are not touched."""
    started = time.perf_counter()
    with _lease(job_id, instance, store):
        run_id = _execute(defs, "scene_job", scene_key(job_id, scene_id), instance, job_id, scene_id, run_config)
    key = store.read(layout.key_image_record_path(store, job_id, scene_id), KeyImageRecord)
    motion = store.read(layout.motion_path(store, job_id, scene_id), MotionRecord)
    on_stage(StageReport(scene_id, run_id, time.perf_counter() - started,
                         {"image": key.engine, "motion": motion.engine + (
                             f" (fallback: {motion.fallback_reason})" if motion.fallback_reason else "")}))
