"""Feed renditions with their own layouts. A 4:5 or 1:1 rendition is not the 9:16 master cropped
or a band over a blurred fill: each scene is laid out again for the format (composition.py with
the format's frame and safe area), its copy re-fitted to the new boxes, and rendered by the same
renderer as the master. So the renderer stays one size, the format's picture and overlay sit in a
band of a 1080x1920 canvas (the edges carry the background on), and `render.reframe` crops that
band out.

16:9 is wider than the master's canvas, so it keeps the master-band rendition for now.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .geometry import HEIGHT, SIZES, WIDTH
from .image_engine import render_key_image
from .language import language_of
from .models import JobSpec, Storyboard
from .overlay import render_overlay
from .render import SceneInput

RELAID = ("4:5", "1:1")


def band_top(fmt: str) -> int:
    """Where the format's band sits in the 1080x1920 canvas (even, centred)."""
    return (HEIGHT - SIZES[fmt][1]) // 2 // 2 * 2


def _canvas(picture: Image.Image, top: int) -> Image.Image:
    """The format's picture in the middle of a master-sized canvas; above and below, its own edge
    rows stretched out, so Ken Burns motion never pulls in anything foreign."""
    arr = np.asarray(picture.convert("RGB"))
    out = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    out[:top] = arr[:1]
    out[top:top + arr.shape[0]] = arr
    out[top + arr.shape[0]:] = arr[-1:]
    return Image.fromarray(out)


def relaid_inputs(job: JobSpec, plan: Storyboard, master: list[SceneInput], engines: list[str], fmt: str,
                  folder: Path) -> list[SceneInput] | None:
    """SceneInputs whose pictures and overlays are laid out for `fmt`, or None when the format is not
    re-laid (16:9) or a scene has a generated clip (its picture cannot be re-composed)."""
    if fmt not in RELAID or any(s.motion.clip_path for s in master):
        return None
    top = band_top(fmt)
    folder.mkdir(parents=True, exist_ok=True)
    brand, language = job.brand_kit, language_of(job.brief)
    out = []
    for scene, spec, engine in zip(plan.scenes, master, engines):
        if engine != "builtin":  # a generated picture: the same picture, covered to the format
            with Image.open(spec.motion.image_path) as src:
                key = _cover(src.convert("RGB"), SIZES[fmt])
        else:
            key = render_key_image(scene, brand, job.brief.product, seed=f"{job.job_id}/{scene.id}", fmt=fmt)
        layer, _ = render_overlay(scene, brand, job.brief.product, language, backdrop=key, fmt=fmt)
        tag = fmt.replace(":", "x")
        key_path, overlay_path = folder / f"{scene.id}_{tag}_key.png", folder / f"{scene.id}_{tag}_overlay.png"
        _canvas(key, top).save(key_path)
        canvas = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
        canvas.alpha_composite(layer, (0, top))
        canvas.save(overlay_path)
        motion = spec.motion.model_copy(update={"image_path": str(key_path)})
        out.append(SceneInput(spec.frames, motion, overlay_path))
    return out


def _cover(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    w, h = size
    scale = max(w / img.width, h / img.height)
    resized = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    left, top = (resized.width - w) // 2, (resized.height - h) // 2
    return resized.crop((left, top, left + w, top + h))
