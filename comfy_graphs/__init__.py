"""ComfyUI API-format graph templates (templates/*.json) and the builders that fill them in."""

from .builders import (
    KEY_SIZE,
    MOTION_FPS,
    MOTION_SIZE,
    MOTION_STYLES,
    RIFE_MULTIPLIER,
    GraphBuilder,
    animatediff_clip,
    configured_graphs,
    motion_family,
    motion_frames,
    sdxl_key_image,
    sdxl_product_scene,
    seed_of,
    with_controlnet,
    with_ipadapter,
)

__all__ = ["KEY_SIZE", "MOTION_FPS", "MOTION_SIZE", "MOTION_STYLES", "RIFE_MULTIPLIER", "GraphBuilder",
           "animatediff_clip", "configured_graphs", "motion_family", "motion_frames", "sdxl_key_image",
           "sdxl_product_scene", "seed_of", "with_controlnet", "with_ipadapter"]
