"""Partitions: one dynamic partition per job, and job × scene for the per-scene assets.

Why multi-partitions rather than composite dynamic keys ("job|scene_001"): Dagster maps a
multi-partition to one of its dimensions natively (MultiToSingleDimensionPartitionMapping), so
lineage is exact per partition (storyboard[J] → scene_key_image[J, s] → final_video[J]) and the UI
shows each job as a row of scenes that can be re-made one at a time. The scene dimension is static
(scene_001..scene_012, the storyboard's maximum); a job with fewer scenes simply never fills the
rest, and materializing one of those reports that the scene does not exist.
"""

from __future__ import annotations

import warnings

from dagster import (
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
)

from .models import MAX_SCENES

JOBS = DynamicPartitionsDefinition(name="jobs")
SCENE_IDS = [f"scene_{i:03d}" for i in range(1, MAX_SCENES + 1)]
SCENES = MultiPartitionsDefinition({"job": JOBS, "scene": StaticPartitionsDefinition(SCENE_IDS)})
with warnings.catch_warnings():  # beta since 1.x, stable in practice; don't print it on every load
    warnings.simplefilter("ignore")
    SCENES_TO_JOB = MultiToSingleDimensionPartitionMapping(partition_dimension_name="job")


def scene_key(job_id: str, scene_id: str) -> MultiPartitionKey:
    return MultiPartitionKey({"job": job_id, "scene": scene_id})
