"""Feed renditions with their own layouts. A 4:5, 1:1 or 16:9 rendition is not the 9:16 master
cropped or a band over a blurred fill: each scene is laid out again for the format (composition.py
with the format's frame and safe area), its copy re-fitted to the new boxes, and rendered at the
format's own size by the same renderer as the master.

What the picture can be depends on who made it. The built-in engine paints each scene again for
the format (its packshot and shapes placed by the format's layout). A generated picture or clip
(ComfyUI) cannot be re-composed: where covering the format keeps most of it (4:5, 1:1) it covers
the frame; where it would keep under half (a 9:16 picture in 16:9) it is shown whole, beside the
copy column where the layout has one, over a soft fill made from itself (render.place_picture).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .composition import layout_scene
from .files import atomic_path
from .formats import file_tag
from .geometry import SIZES, Box
from .image_engine import render_key_image
from .language import language_of
from .models import JobSpec, KeyImageRecord, Storyboard
from .overlay import render_overlay
from .render import SceneInput, place_picture

MIN_COVER_SHARE = 0.5  # cover the frame only when that keeps at least half of the picture's width and height


def picture_box(source: tuple[int, int], fmt: str, product: Box | None) -> Box | None:
    """Where a generated picture of `source` size goes in `fmt`: None (cover) when covering keeps
    most of it; else the frame's full height, in the layout's picture half when it has one."""
    width, height = SIZES[fmt]
    aspect, target = source[0] / source[1], width / height
    if min(aspect / target, target / aspect) >= MIN_COVER_SHARE:
        return None
    if product is not None and width > height:  # landscape: copy on the left, the picture on the right
        return Box(width // 2, 0, width, height)
    return Box(0, 0, width, height)


def relaid_inputs(job: JobSpec, plan: Storyboard, master: list[SceneInput], keys: list[KeyImageRecord], fmt: str,
                  folder: Path) -> list[SceneInput]:
    """SceneInputs laid out for `fmt` (overlays of its size), beside the master's; a built-in scene is
    painted again with the seed its master key image was made with."""
    folder.mkdir(parents=True, exist_ok=True)
    brand, language = job.brand_kit, language_of(job.brief)
    width, height = SIZES[fmt]
    out = []
    for scene, spec, key in zip(plan.scenes, master, keys):
        name = f"{scene.id}_{file_tag(fmt)}"
        motion, box = spec.motion, None
        if key.engine == "builtin" and not motion.clip_path:
            seed = key.seed or f"{job.job_id}/{scene.id}"
            backdrop = render_key_image(scene, brand, job.brief.product, seed=seed, fmt=fmt)
            key_path = folder / f"{name}_key.png"
            with atomic_path(key_path) as tmp:
                backdrop.save(tmp, "PNG")
            motion = motion.model_copy(update={"image_path": str(key_path)})
        else:  # a generated picture or clip: the key image stands in for the clip's frames under the copy
            picture = cv2.imread(motion.image_path, cv2.IMREAD_COLOR)
            if picture is None:
                raise FileNotFoundError(f"key image {motion.image_path} is missing or unreadable")
            box = picture_box((picture.shape[1], picture.shape[0]), fmt, layout_scene(scene, brand, fmt).product)
            backdrop = Image.fromarray(np.ascontiguousarray(place_picture(picture, width, height, box)[:, :, ::-1]))
        layer, _ = render_overlay(scene, brand, job.brief.product, language, backdrop=backdrop, fmt=fmt)
        overlay_path = folder / f"{name}_overlay.png"
        with atomic_path(overlay_path) as tmp:
            layer.save(tmp, "PNG")
        out.append(SceneInput(spec.frames, motion, overlay_path, box))
    return out
