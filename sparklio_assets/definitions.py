"""Everything Dagster loads: assets, jobs, checks, sensors, the schedule, resources (the one
Definitions object). Nothing imports this module but Dagster itself and the faces (CLI, API):
the Celery workers reach it by name (distributed.DEFINITIONS_MODULE)."""

from __future__ import annotations

from dagster import Definitions

from resources.artifacts import ArtifactStore
from resources.comfyui.config import comfy_resource
from resources.ffmpeg import FFmpegRunner
from resources.llm import LLMRouter
from resources.tts import TTSResource
from sensors.campaigns import build_campaign_sensor, build_recurring_schedule
from sensors.chain import build_chain_sensor
from sensors.liveness import build_liveness_sensor

from .assets import final_video, scene_key_image, scene_motion_clip, soundtrack, storyboard
from .checks import ASSET_CHECKS
from .distributed import executor_from_env
from .jobs import ASSET_JOBS, final_video_job, scene_job, storyboard_job

defs = Definitions(
    assets=[storyboard, scene_key_image, scene_motion_clip, soundtrack, final_video],
    jobs=list(ASSET_JOBS),
    asset_checks=ASSET_CHECKS,
    sensors=[build_campaign_sensor(storyboard_job), build_chain_sensor(scene_job, final_video_job),
             build_liveness_sensor()],
    schedules=[build_recurring_schedule(storyboard_job)],
    executor=executor_from_env(),
    resources={"store": ArtifactStore(), "ffmpeg": FFmpegRunner(), "comfy": comfy_resource(), "llm": LLMRouter(),
               "tts": TTSResource()},
)
