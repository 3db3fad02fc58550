"""Key images and motion clips made by ComfyUI on the GPU worker (spec 3.2, 3.3).

Routing (spec 3.2/3.3 and the job's `quality`): draft always uses the built-in engines (Pillow
key image, Ken Burns motion); standard and premium use ComfyUI when a URL is configured, and the
built-in engines otherwise, so the product still works offline.

Key images: SDXL at 768x1344 (a native SDXL bucket near 9:16), then Lanczos upscale and centre
crop to 1080x1920. Scenes with brand elements get the brand LoRA; a `product_3d` scene is a
ControlNet product shot guided by a drawn pack silhouette; premium scenes after the first take
the first scene's picture as an IPAdapter style reference, so the ad looks like one campaign.
Optional models missing on the worker (LoRA, ControlNet) are skipped with a note, never silently.

Motion: AnimateDiff-Evolved over the key image (motion module per motion style), 8 fps, RIFE ×3
to 24 fps, VHS mp4. The caller turns any failure into the Ken Burns fallback (spec 8.2).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from comfy_graphs import (
    KEY_SIZE,
    animatediff_clip,
    motion_frames,
    sdxl_key_image,
    with_controlnet,
    with_ipadapter,
)
from resources.comfyui import ComfyError, ComfyModels, ComfyUIClient, ComfyUIResource, JobResult

from .files import atomic_path, slug
from .models import FPS, BrandKit, KeyImageRecord, MotionRecord, Quality, Scene
from .overlay import HEIGHT, WIDTH

Log = Callable[[str], None]
Comfy = ComfyUIClient | ComfyUIResource


def use_comfy(quality: Quality | str, resource: ComfyUIResource | None) -> bool:
    """Draft → built-in engines; standard/premium → ComfyUI when a URL is configured."""
    return quality in ("standard", "premium") and resource is not None and resource.configured


@contextmanager
def _client(comfy: Comfy, log: Log | None) -> Iterator[tuple[ComfyUIClient, float]]:
    """(client, motion deadline): a client we were given stays open; one we make is closed."""
    if isinstance(comfy, ComfyUIClient):
        yield comfy, comfy.timeout_s
        return
    client = comfy.client(log=log)
    try:
        yield client, comfy.motion_timeout_s
    finally:
        client.close()


def key_image_prompt(scene: Scene, brand: BrandKit, product: str) -> str:
    """The positive prompt: the storyboard's image prompt plus the brand's mood and palette."""
    parts = [scene.image_prompt]
    if brand.tone_keywords:
        parts.append(", ".join(brand.tone_keywords) + " mood")
    parts.append("colour palette " + " ".join(brand.colors))
    if "product_3d" in scene.brand_elements:
        parts.append(f"the {product} pack as the hero, centred, studio product photography")
    parts.append("advertising photography, high detail, sharp focus, no text")
    return ", ".join(parts)


def product_guide(size: tuple[int, int] = KEY_SIZE) -> Image.Image:
    """A ControlNet (Canny-style) layout guide: white outline of a product pack, centred and
    low enough to leave the upper safe area for copy. Edges only, no text to imitate."""
    w, h = size
    img = Image.new("RGB", size, "black")
    d = ImageDraw.Draw(img)
    cx, base = w // 2, int(h * 0.78)
    body_w, body_h = int(w * 0.34), int(h * 0.30)
    cap_w, cap_h = int(body_w * 0.62), int(h * 0.06)
    line = max(3, w // 160)
    d.rounded_rectangle((cx - body_w // 2, base - body_h, cx + body_w // 2, base), radius=body_w // 6,
                        outline="white", width=line)
    d.rounded_rectangle((cx - cap_w // 2, base - body_h - cap_h, cx + cap_w // 2, base - body_h + line),
                        radius=cap_w // 8, outline="white", width=line)
    d.line((cx - body_w // 2 + line * 4, base - body_h * 0.62, cx + body_w // 2 - line * 4, base - body_h * 0.62),
           fill="white", width=line)
    d.ellipse((cx - body_w * 0.8, base - h * 0.012, cx + body_w * 0.8, base + h * 0.03), outline="white", width=line)
    return img


def cover_to_frame(image: Image.Image, width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """Scale (Lanczos) and centre-crop to fill width x height: 768x1344 → 1080x1920."""
    image = image.convert("RGB")
    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    resized = image.resize(size, Image.LANCZOS)
    if scale > 1.2:  # a gentle unsharp mask keeps upscaled detail crisp
        resized = resized.filter(ImageFilter.UnsharpMask(radius=1.2, percent=40, threshold=2))
    x, y = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((x, y, x + width, y + height))


def _available(client: ComfyUIClient, class_type: str, input_name: str, value: str) -> bool:
    """Whether the worker lists `value` for a loader input (its installed model files)."""
    info = client.retrying(client.object_info, "object_info").get(class_type)
    if not info:
        return False
    spec = {**info["input"].get("optional", {}), **info["input"].get("required", {})}.get(input_name)
    if not spec:
        return False
    choices = spec[0] if isinstance(spec[0], list) else (spec[1] or {}).get("options", [])
    return value in choices


def make_key_image(comfy: Comfy, scene: Scene, brand_kit: BrandKit, product: str, seed: int | str, out_path: Path,
                   *, quality: Quality = "standard", job_id: str = "", style_reference: Path | None = None,
                   log: Log | None = None) -> KeyImageRecord:
    """Generate the scene's key image on ComfyUI and write it (1080x1920 PNG) to out_path."""
    started = time.perf_counter()
    with _client(comfy, log) as (client, _):
        models: ComfyModels = client.models or ComfyModels()
        notes: list[str] = []
        lora = None
        if scene.brand_elements and models.lora_for(brand_kit.brand_id):
            lora = models.lora_for(brand_kit.brand_id)
            if not _available(client, "LoraLoader", "lora_name", lora):
                notes.append(f"brand LoRA {lora} is not installed on the worker; made without it")
                lora = None
        g = sdxl_key_image(key_image_prompt(scene, brand_kit, product), seed, models, lora=lora,
                           steps=models.steps + 10 if quality == "premium" else models.steps,
                           filename_prefix=f"sparklio/{slug(job_id)}/{scene.id}_key")
        engine = "comfyui_lora" if lora else "comfyui_sdxl"
        uploads: dict[str, Path] = {}
        with tempfile.TemporaryDirectory(prefix="sparklio-comfy-") as tmp:
            work = Path(tmp)
            if "product_3d" in scene.brand_elements:
                if _available(client, "ControlNetLoader", "control_net_name", models.controlnet):
                    guide = work / f"{slug(job_id)}_{scene.id}_guide.png"
                    product_guide().save(guide, "PNG")
                    with_controlnet(g, guide.name, models)
                    uploads[g.id("control_image")] = guide
                    engine = "comfyui_controlnet"
                else:
                    notes.append(f"ControlNet {models.controlnet} is not installed on the worker; made without it")
            if style_reference is not None and Path(style_reference).is_file():
                with_ipadapter(g, Path(style_reference).name, models, weight=0.5, weight_type="style transfer")
                uploads[g.id("ipadapter_image")] = Path(style_reference)
                notes.append(f"IPAdapter style reference {Path(style_reference).parent.name}")
            result = client.run(g.build(), work / "out", uploads=uploads, label=f"{scene.id} key image")
            images = result.by_kind("images")
            if not images:
                raise ComfyError(f"ComfyUI job {result.prompt_id} returned no image for {scene.id}")
            with Image.open(images[0].path) as generated:
                generated.load()
                source_size = generated.size
                image = cover_to_frame(generated)
        with atomic_path(out_path) as part:
            image.save(part, "PNG")
    notes.insert(0, f"prompt_id {result.prompt_id}, {source_size[0]}x{source_size[1]} → {WIDTH}x{HEIGHT}, "
                    f"seed {g.inputs('sampler')['seed']}, {result.attempts} attempt(s)")
    return KeyImageRecord(scene_id=scene.id, path=str(out_path), engine=engine,
                          seconds=round(time.perf_counter() - started, 3), width=image.width, height=image.height,
                          note="; ".join(notes))


def make_motion_clip(comfy: Comfy, scene: Scene, key_image_path: Path, out_clip_path: Path, *, seed: int | str,
                     quality: Quality = "standard", job_id: str = "", log: Log | None = None) -> MotionRecord:
    """Animate the key image with AnimateDiff on ComfyUI; writes a 24 fps MP4 to out_clip_path."""
    started = time.perf_counter()
    with _client(comfy, log) as (client, deadline):
        models: ComfyModels = client.models or ComfyModels()
        frames = motion_frames(scene.frames)
        g = animatediff_clip(Path(key_image_path).name, scene.image_prompt, scene.motion_style, seed, models,
                             frames=frames, ipadapter=quality == "premium",
                             filename_prefix=f"sparklio/{slug(job_id)}/{scene.id}_motion")
        with tempfile.TemporaryDirectory(prefix="sparklio-comfy-") as tmp:
            result = client.run(g.build(), Path(tmp), uploads={g.id("key_image"): Path(key_image_path)},
                                timeout_s=deadline, label=f"{scene.id} AnimateDiff")
            _store_clip(result, out_clip_path)
    count = _count_frames(out_clip_path)
    if count < 2:
        raise ComfyError(f"AnimateDiff clip for {scene.id} has {count} frame(s)")
    return MotionRecord(scene_id=scene.id, engine="animatediff", motion_style=scene.motion_style,
                        duration_seconds=scene.duration_seconds, fps=FPS, image_path=str(key_image_path),
                        clip_path=str(out_clip_path), seconds=round(time.perf_counter() - started, 3))


def _store_clip(result: JobResult, out_clip_path: Path) -> None:
    """VHS's mp4 (`gifs`) moves into place; a frames-only result is encoded to mp4 at 24 fps."""
    videos = [f for f in result.by_kind("gifs") + result.by_kind("videos") if f.path.suffix.lower() in
              (".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp")]
    if videos:
        with atomic_path(out_clip_path) as part:
            part.write_bytes(videos[0].path.read_bytes())
        return
    frames = sorted(result.by_kind("images"), key=lambda f: f.remote.filename)
    if len(frames) < 2:
        raise ComfyError(f"ComfyUI job {result.prompt_id} returned no clip and {len(frames)} frame(s)")
    _encode_frames([f.path for f in frames], out_clip_path)


def _encode_frames(paths: list[Path], out_path: Path, fps: int = FPS) -> None:
    import av

    with atomic_path(out_path) as part:
        with av.open(str(part), "w", format="mp4") as container:
            stream = None
            for path in paths:
                with Image.open(path) as frame:
                    rgb = frame.convert("RGB")
                if stream is None:
                    stream = container.add_stream("libx264", rate=fps)
                    stream.width, stream.height = rgb.width // 2 * 2, rgb.height // 2 * 2
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": "18", "preset": "veryfast"}
                rgb = rgb.crop((0, 0, stream.width, stream.height))
                for packet in stream.encode(av.VideoFrame.from_image(rgb)):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def _count_frames(path: Path) -> int:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)  # it really decodes
            if first is None:
                return 0
            return stream.frames or 1 + sum(1 for _ in container.decode(stream))
    except (av.FFmpegError, OSError, IndexError) as error:
        raise ComfyError(f"clip {path} does not decode: {error}") from error
