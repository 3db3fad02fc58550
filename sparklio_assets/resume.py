"""What an interrupted job already finished, so making it again picks up where it stopped.

An attempt at a job is everything materialized since its last finished video. A storyboard
materialized after the last final video belongs to the unfinished attempt and is kept; so is a
scene whose motion clip was materialized after both (and whose files are there). A job whose
video was finished is made again from the start. Read from the instance's materialization records,
so it works the same for the CLI, the API's worker and a job whose worker died.
"""

from __future__ import annotations

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from resources.artifacts import ArtifactStore

from . import store_paths as layout
from .models import JobSpec
from .partitions import scene_key


def _latest(instance: DagsterInstance, asset: str, partition: str) -> float | None:
    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1, ascending=False)
    return result.records[0].timestamp if result.records else None


def storyboard_current(instance: DagsterInstance, store: ArtifactStore, job_id: str) -> bool:
    """The job's storyboard is there and belongs to the unfinished attempt."""
    if not layout.storyboard_path(store, job_id).is_file():
        return False
    planned = _latest(instance, "storyboard", job_id)
    finished = _latest(instance, "final_video", job_id)
    return planned is not None and (finished is None or planned > finished)


def finished_scenes(instance: DagsterInstance, store: ArtifactStore, job_id: str, scene_ids: list[str]) -> set[str]:
    """The scenes of the unfinished attempt that are already made (key image and motion)."""
    planned = _latest(instance, "storyboard", job_id)
    if planned is None:
        return set()
    since = max(planned, _latest(instance, "final_video", job_id) or 0.0)
    done = set()
    for scene_id in scene_ids:
        made = _latest(instance, "scene_motion_clip", scene_key(job_id, scene_id))
        if made is not None and made > since and layout.motion_path(store, job_id, scene_id).is_file() \
                and layout.key_image_record_path(store, job_id, scene_id).is_file():
            done.add(scene_id)
    return done


def same_request(previous: JobSpec | None, spec: JobSpec) -> bool:
    """Whether `spec` asks for what the stored job asked for (its id and creation time aside)."""
    if previous is None:
        return False
    keep = {"brief", "brand", "quality", "engine_preference"}
    return previous.model_dump(include=keep) == spec.model_dump(include=keep)
