"""The `comfy` Dagster resource: where the GPU worker is, how long to wait for it, and every
generation setting the graph builders use (spec values as defaults)."""

from __future__ import annotations

import os
from typing import Literal

from dagster import Config, ConfigurableResource
from pydantic import Field

from .client import ComfyUIClient, WaitHook
from .protocol import URL_ENV, Log

MOTION_MODULES: dict[str, str] = {  # spec 3.3, with the real file names
    "slow zoom-in": "mm_sdxl_v10_beta.ckpt",
    "parallax movement": "mm_sd_v15_v2.ckpt",
    "rotation + glow effect": "mm_sdxl_v10_beta.ckpt",
    "slide transition": "mm_sd_v15_v2.ckpt",
    "pulse effect": "mm_sdxl_v10_beta.ckpt",
}


class ComfyModels(Config):
    """Model file names and every generation setting the graph builders use (names as on the
    server; defaults are the spec's values). The `comfy` resource is one of these, so each one is
    set in `sparklio.yaml` or Dagster config like any other resource field."""

    checkpoint: str = Field(default="sd_xl_base_1.0.safetensors", description="SDXL checkpoint for key images")
    brand_lora: str = Field(default="brand_style_sdxl.safetensors", description="empty = no LoRA")
    brand_loras: dict[str, str] = Field(default_factory=dict, description="brand_id → LoRA; falls back to brand_lora")
    lora_strength: float = 0.8
    controlnet: str = "controlnet-canny-sdxl-1.0.safetensors"
    controlnet_strength: float = 0.55
    controlnet_end_percent: float = Field(default=0.6, description="ControlNet released here; the model finishes")
    ipadapter_preset: str = "PLUS (high strength)"
    style_reference_weight: float = Field(default=0.5, description="IPAdapter weight of the product reference")
    motion_ipadapter_weight: float = Field(default=0.8, description="premium motion: IPAdapter on the key image")
    motion_modules: dict[str, str] = Field(default_factory=lambda: dict(MOTION_MODULES),
                                           description="motion style → AnimateDiff motion module")
    motion_checkpoint_sd15: str = "sd15_base.safetensors"
    motion_checkpoint_sdxl: str = "sd_xl_base_1.0.safetensors"
    rife: str = "rife49.pth"
    sampler: str = "dpmpp_2m_sde_gpu"
    scheduler: str = "karras"
    steps: int = Field(default=30, ge=1, le=200, description="key-image sampling steps (spec 3.2)")
    premium_extra_steps: int = Field(default=10, ge=0, le=200, description="premium adds these steps")
    cfg: float = Field(default=6.5, ge=0.0, le=100.0)
    key_width: int = Field(default=768, ge=64, le=4096, multiple_of=8, description="SDXL bucket near 9:16")
    key_height: int = Field(default=1344, ge=64, le=4096, multiple_of=8)
    product_denoise: float = Field(default=0.9, gt=0.0, le=1.0,
                                   description="packshot scenes: how much of the canvas around the product is redrawn")
    motion_steps: int = Field(default=20, ge=1, le=200)
    motion_denoise: float = Field(default=0.65, gt=0.0, le=1.0, description="AnimateDiff img2img strength")
    motion_width_sd15: int = Field(default=432, ge=64, le=2048, multiple_of=8)
    motion_height_sd15: int = Field(default=768, ge=64, le=2048, multiple_of=8)
    motion_width_sdxl: int = Field(default=576, ge=64, le=2048, multiple_of=8)
    motion_height_sdxl: int = Field(default=1024, ge=64, le=2048, multiple_of=8)
    motion_fps: int = Field(default=8, ge=1, le=60, description="AnimateDiff's frame rate before RIFE")
    rife_multiplier: int = Field(default=3, ge=1, le=8, description="RIFE ×N: 8 fps ×3 = 24 fps")
    min_motion_frames: int = Field(default=24, ge=2, le=4096, description="spec 3.3: at least 24 frames")
    max_motion_frames: int = Field(default=241, ge=2, le=4096)

    def lora_for(self, brand_id: str) -> str:
        return self.brand_loras.get(brand_id, self.brand_lora)

    @property
    def key_size(self) -> tuple[int, int]:
        return self.key_width, self.key_height

    def motion_size(self, family: str) -> tuple[int, int]:
        return ((self.motion_width_sdxl, self.motion_height_sdxl) if family == "sdxl"
                else (self.motion_width_sd15, self.motion_height_sd15))

    def settings(self) -> ComfyModels:
        """Just the generation settings (a resource is also one of these)."""
        return ComfyModels(**{name: getattr(self, name) for name in ComfyModels.model_fields})


class ComfyUIResource(ConfigurableResource, ComfyModels):
    """The GPU worker's ComfyUI. `url` empty (and SPARKLIO_COMFYUI_URL unset) = not configured:
    every quality then uses the built-in engines, so the product works offline. Every field of
    ComfyModels (steps, cfg, sizes, strengths, ...) is a field of this resource too."""

    url: str = Field(default="", description=f"e.g. http://gpu-worker:8188; empty → ${URL_ENV}; both empty = off")
    timeout_s: float = Field(default=300.0, description="deadline per key-image job once it runs (spec 8.1)")
    motion_timeout_s: float = Field(default=300.0, description="deadline per AnimateDiff job once it runs")
    queue_timeout_s: float = Field(default=900.0, description="longest a job waits behind others on a busy worker")
    worker_wait_s: float = Field(default=600.0, ge=0.0,
                                 description="longest a job waits for a down GPU worker to come back (spec 8.2)")
    cancel_confirm_s: float = Field(default=60.0, description="how long a cancel is followed until the prompt "
                                                              "has left the worker's queue")
    max_attempts: int = Field(default=3, description="submissions per job when the worker loses it (spec 8.1)")
    backoff_s: float = Field(default=2.0, description="first retry delay; doubles each time, at most 15 s")
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    poll_interval_s: float = 2.0
    use_env_proxy: bool = Field(default=False, description="honour HTTP(S)_PROXY for the worker (LAN: no)")
    key_image_fallback: Literal["fail", "builtin"] = Field(
        default="fail", description="worker not ready (preflight): fail the job, or make built-in key images")

    @property
    def base_url(self) -> str:
        """Resolved at run time, so the env var can be set after the code location loads."""
        return (self.url or os.environ.get(URL_ENV, "")).strip()

    @property
    def configured(self) -> bool:
        return bool(self.base_url)

    def models(self) -> ComfyModels:
        return self.settings()

    def client(self, log: Log | None = None, on_wait: WaitHook | None = None) -> ComfyUIClient:
        return ComfyUIClient(self.base_url, timeout_s=self.timeout_s, queue_timeout_s=self.queue_timeout_s,
                             worker_wait_s=self.worker_wait_s, cancel_confirm_s=self.cancel_confirm_s,
                             max_attempts=self.max_attempts, backoff_s=self.backoff_s,
                             connect_timeout_s=self.connect_timeout_s, read_timeout_s=self.read_timeout_s,
                             poll_interval_s=self.poll_interval_s, use_env_proxy=self.use_env_proxy, log=log,
                             on_wait=on_wait, models=self.settings())
