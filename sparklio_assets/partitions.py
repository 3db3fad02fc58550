"""Partitions: one dynamic partition per job, and job × scene for the per-scene assets.

Why multi-partitions rather than composite dynamic keys ("job|scene_001"): Dagster maps a
multi-partition to one of its dimensions natively (MultiToSingleDimensionPartitionMapping), so
lineage is exact per partition (storyboard[J] → scene_key_image[J, s] → final_video[J]) and the UI
shows each job as a row of scenes that can be re-made one at a time.

Why the scene dimension is dynamic, and how far that goes: a job's storyboard adds the scene keys
it needs (register_scenes: scene_001..scene_N, in order, never more than the longest storyboard so
far), so an instance whose jobs have five scenes shows five columns, not the twelve a storyboard may
have. A multi-partition is still a cross product, though: once one job has seven scenes, a
five-scene job shows two "Missing" cells (materializing one reports that the scene does not exist).
Truly per-job keys ("<job>/scene_001" in a single dynamic dimension) would need a PartitionMapping
of our own from a scene key to its job; Dagster deprecates non-built-in mappings ("will not work
with asset reconciliation") and does not send them to the webserver or the daemon (only built-in
mappings are in the AssetNodeSnap, remote_representation/external_data.py), which would then map
scene → final video by identity, i.e. not at all: the UI's lineage and its "Unsynced" after a
re-made scene would be lost. Exact lineage and staleness are worth more than two empty cells.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from dagster import (
    DagsterInstance,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
)
from sqlalchemy.exc import IntegrityError

JOBS = DynamicPartitionsDefinition(name="jobs")
SCENE_NUMBERS = DynamicPartitionsDefinition(name="scenes")
SCENES = MultiPartitionsDefinition({"job": JOBS, "scene": SCENE_NUMBERS})
with warnings.catch_warnings():  # beta since 1.x, stable in practice; don't print it on every load
    warnings.simplefilter("ignore")
    SCENES_TO_JOB = MultiToSingleDimensionPartitionMapping(partition_dimension_name="job")


def scene_key(job_id: str, scene_id: str) -> MultiPartitionKey:
    return MultiPartitionKey({"job": job_id, "scene": scene_id})


def register_scenes(instance: DagsterInstance, scene_ids: Sequence[str]) -> None:
    """Add the storyboard's scene keys the instance lacks, in order (the UI lists dynamic keys in
    the order they were added). Dagster skips keys it has: Postgres by an upsert; SQLite checks,
    then inserts, so storyboards finishing together can collide on the keys' unique index in
    between, and the loser simply tries again (it then adds only what is still missing)."""
    for attempt in range(5):
        try:
            instance.add_dynamic_partitions(SCENE_NUMBERS.name, list(scene_ids))
            return
        except IntegrityError:
            if attempt == 4:
                raise
