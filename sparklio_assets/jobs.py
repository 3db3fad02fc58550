"""The run vocabulary: the three asset jobs, the tags every run carries, the one rule for what runs
after what, and the one way a job (a brief to make) comes into being.

    storyboard_job   storyboard[job]
    scene_job        scene_key_image + scene_motion_clip [job, scene]    (the `gpu` pool)
    final_video_job  soundtrack + final_video [job] (and its checks)

`next_stages` is the sequencer for every entry point: the CLI and the API's worker
(pipeline.run_job), the chain sensor (campaigns) and, through create_job + next_stages, the
campaign sensor and the nightly schedule. A run targets one partitions definition, so a job is
2 + N runs: storyboard, then every scene at once, then the final video.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import DagsterInstance, MultiPartitionKey, define_asset_job

from resources.artifacts import ArtifactStore

from . import store_paths
from .assets import final_video, scene_key_image, scene_motion_clip, soundtrack, storyboard
from .brand_library import load_brand
from .files import slug, write_model
from .models import JobSpec
from .partitions import JOBS, scene_key
from .tags import (  # noqa: F401 (the run tags, re-exported: the job vocabulary in one import)
    AUTO,
    CAMPAIGN_TAG,
    CARRIED_TAGS,
    CHAIN_ID_TAG,
    CHAIN_TAG,
    JOB_TAG,
    REMAKE_TAG,
    ROW_TAG,
    SCENE_TAG,
    UI,
)

# ---------------------------------------------------------------- names

STORYBOARD_JOB = "storyboard_job"
SCENE_JOB = "scene_job"
FINAL_VIDEO_JOB = "final_video_job"

# Stage names: what StageReport.stage and the API's progress call each run of a job.
STORYBOARD = "storyboard"
FINAL_VIDEO = "final_video"  # scenes are named by their scene id (scene_001 ...)


# ---------------------------------------------------------------- the asset jobs

# Each job's partitioning (JOBS, or SCENES for scene_job) is inferred from the assets it selects.
storyboard_job = define_asset_job(STORYBOARD_JOB, selection=[storyboard], description="Plan one job's scenes.")
scene_job = define_asset_job(SCENE_JOB, selection=[scene_key_image, scene_motion_clip],
                             description="Make (or re-make) one scene: key image, then motion.")
final_video_job = define_asset_job(FINAL_VIDEO_JOB, selection=[soundtrack, final_video],
                                   description="Mix the soundtrack and assemble one job's current scenes into "
                                               "the finished MP4.")
ASSET_JOBS = (storyboard_job, scene_job, final_video_job)


# ---------------------------------------------------------------- the sequencer


@dataclass(frozen=True)
class Stage:
    """One run of a job: its name (storyboard, scene_001, final_video), job and partition."""

    name: str
    job_name: str
    partition_key: str | MultiPartitionKey


def stage_name(job_name: str, tags: Mapping[str, str]) -> str:
    """The stage a run of one of the ASSET_JOBS is (storyboard, scene_001, final_video): the inverse of Stage."""
    if job_name == STORYBOARD_JOB:
        return STORYBOARD
    if job_name == FINAL_VIDEO_JOB:
        return FINAL_VIDEO
    if job_name == SCENE_JOB:
        return tags.get(SCENE_TAG) or tags.get("dagster/partition", "").split("|")[-1]
    return job_name


def _runnable(job_id: str, scene_ids: Sequence[str], done: Collection[str]) -> list[Stage]:
    if STORYBOARD not in done:
        return [Stage(STORYBOARD, STORYBOARD_JOB, job_id)]
    scenes = [Stage(s, SCENE_JOB, scene_key(job_id, s)) for s in scene_ids if s not in done]
    if scenes:
        return scenes
    return [] if FINAL_VIDEO in done else [Stage(FINAL_VIDEO, FINAL_VIDEO_JOB, job_id)]


def next_stages(job_id: str, scene_ids: Sequence[str], done: Collection[str],
                finished: str | None = None) -> list[Stage]:
    """The rule: storyboard, then every scene at once, then the final video once every scene is done.

    `done`: the stages that have succeeded (stage names; `scene_ids` comes from the storyboard, so
    it may be empty until the storyboard is done). Without `finished`, what may run now. With it
    (a stage in `done` that has just succeeded), only what that stage unlocks: nothing for a scene
    while others are still missing, the final video for the scene that finished last."""
    now = _runnable(job_id, scene_ids, done)
    if finished is None:
        return now
    before = _runnable(job_id, scene_ids, set(done) - {finished})
    return [stage for stage in now if stage not in before]


# ---------------------------------------------------------------- making a job


def readable_job_id(product: str, created_at: datetime | None = None, content: str = "") -> str:
    """`<product slug>-<yyyymmdd>-<short id>`: a job a person can tell apart in the UI's partition
    list. The short id is random unless `content` is given (then the same content names the same
    job, which is how a campaign brief is made exactly once)."""
    when = (created_at or datetime.now(UTC)).strftime("%Y%m%d")
    digest = hashlib.sha256(content.encode()).hexdigest()[:8] if content else secrets.token_hex(4)
    return f"{slug(product, limit=30, fallback='ad')}-{when}-{digest}"


def named(spec: JobSpec) -> JobSpec:
    """The spec with its job id: as given, or a readable one (readable_job_id). Callers that must
    clean up after a failed create_job name the spec first, so they know which folder to remove."""
    if "job_id" in spec.model_fields_set:
        return spec
    return spec.model_copy(update={"job_id": readable_job_id(spec.brief.product, spec.created_at)})


def create_job(spec: JobSpec, instance: DagsterInstance | None, store: ArtifactStore) -> JobSpec:
    """Write the job's request into the store and register its partition; returns the spec as
    created. A spec whose job_id was not given gets a readable one (readable_job_id). Idempotent
    for the same spec. Without an instance the partition is left to the caller: a sensor returns
    it as a dynamic-partitions request, which the daemon applies before the sensor's runs.
    A spec without a brand kit gets the one stored under its brief's brand_id (POST /brands), if any."""
    spec = named(spec)
    if spec.brand is None and (stored := load_brand(store_paths.brand_library(store), spec.brief.brand_id)):
        spec = JobSpec.model_validate({**spec.model_dump(), "brand": stored.model_dump()})
    write_model(store_paths.job_path(store, spec.job_id), spec)
    if instance is not None and not instance.has_dynamic_partition(JOBS.name, spec.job_id):
        instance.add_dynamic_partitions(JOBS.name, [spec.job_id])
    return spec
