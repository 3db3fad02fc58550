"""Everything Dagster loads: assets, jobs, resources (the one Definitions object)."""

from __future__ import annotations

from dagster import Definitions, define_asset_job

from resources.artifacts import ArtifactStore
from resources.comfyui import ComfyUIResource
from resources.ffmpeg import FFmpegRunner
from resources.llm import LLMRouter
from resources.tts import TTSResource

from sensors.campaigns import build_campaign_sensor, build_recurring_schedule
from sensors.chain import build_chain_sensor
from sensors.liveness import build_liveness_sensor

from .assets import final_video, scene_key_image, scene_motion_clip, soundtrack, storyboard
from .checks import ASSET_CHECKS
from .distributed import executor_from_env

# Each job's partitioning (JOBS, or SCENES for scene_job) is inferred from the assets it selects.
storyboard_job = define_asset_job("storyboard_job", selection=[storyboard], description="Plan one job's scenes.")
scene_job = define_asset_job("scene_job", selection=[scene_key_image, scene_motion_clip],
                             description="Make (or re-make) one scene: key image, then motion.")
final_video_job = define_asset_job("final_video_job", selection=[soundtrack, final_video],
                                   description="Mix the soundtrack and assemble one job's current scenes into "
                                               "the finished MP4.")

defs = Definitions(
    assets=[storyboard, scene_key_image, scene_motion_clip, soundtrack, final_video],
    jobs=[storyboard_job, scene_job, final_video_job],
    asset_checks=ASSET_CHECKS,
    sensors=[build_campaign_sensor(storyboard_job), build_chain_sensor(scene_job, final_video_job),
             build_liveness_sensor()],
    schedules=[build_recurring_schedule(storyboard_job)],
    executor=executor_from_env(),
    resources={"store": ArtifactStore(), "ffmpeg": FFmpegRunner(), "comfy": ComfyUIResource(), "llm": LLMRouter(),
               "tts": TTSResource()},
)
