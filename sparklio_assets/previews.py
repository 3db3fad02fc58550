"""Small animated previews of each scene and of the whole ad: where people look (the Dagster UI,
in place in the materialization's metadata) and beside the media in the store.

Animated WebP rather than GIF: browsers play it like a GIF (from the media server, or from a
`data:` URI in the event log), it keeps the brand's colours (GIF has 256), and it is a fraction of
the size, which matters because the embedded copy is stored in the run's event log.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .files import atomic_path
from .render import HEIGHT, WIDTH, SceneInput, frames_i420

PREVIEW_FPS = 8
SCENE_WIDTH = WIDTH // 4  # 270 x 480
AD_WIDTH = WIDTH // 6  # 180 x 320: the whole ad stays small enough to sit in the metadata
QUALITY = 60


def _save(frames: list[Image.Image], path: Path) -> None:
    with atomic_path(path) as tmp:
        frames[0].save(tmp, "WEBP", save_all=True, append_images=frames[1:], duration=1000 // PREVIEW_FPS,
                       loop=0, quality=QUALITY, method=2)  # method 2: as small as 4 here, twice as fast


def _small(frames_rgb: Iterable[np.ndarray], width: int) -> list[Image.Image]:
    """Pictures `width` wide (OpenCV's area averaging: many times faster than PIL's resize here)."""
    size = (width, round(width * HEIGHT / WIDTH))
    return [Image.fromarray(cv2.resize(f, size, interpolation=cv2.INTER_AREA)) for f in frames_rgb]


def write_scene_preview(scene: SceneInput, path: Path) -> Image.Image:
    """The scene as it will appear (copy and brand elements included, no crossfade), at
    PREVIEW_FPS and quarter size; returns its first frame."""
    step = max(1, scene.motion.fps // PREVIEW_FPS)
    frames = _small((cv2.cvtColor(f, cv2.COLOR_YUV2RGB_I420) for f in frames_i420([scene], crossfade=0, step=step)),
                    SCENE_WIDTH)
    _save(frames, path)
    return frames[0]


def write_still(image: Image.Image, path: Path) -> Path:
    """A picture (key image, first frame, thumbnail) at preview size, as a JPEG beside it."""
    small = image.convert("RGB").copy()
    small.thumbnail((SCENE_WIDTH, SCENE_WIDTH * 2))
    with atomic_path(path) as tmp:
        small.save(tmp, "JPEG", quality=80)
    return path


def write_ad_preview(scene_previews: list[Path], path: Path) -> None:
    """The whole ad, scene after scene, from the scenes' own previews (no second render; any
    still picture, such as the thumbnail, counts as one frame)."""
    frames: list[Image.Image] = []
    for preview in scene_previews:
        with Image.open(preview) as animation:
            for n in range(getattr(animation, "n_frames", 1)):
                animation.seek(n)
                frames.append(animation.convert("RGB"))
    _save(_small((np.asarray(f) for f in frames), AD_WIDTH), path)

