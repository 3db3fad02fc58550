"""Key images and motion clips made by ComfyUI on the GPU worker (spec 3.2, 3.3).

Routing (spec 3.2/3.3 and the job's `quality`): draft always uses the built-in engines (Pillow
key image, Ken Burns motion); standard and premium use ComfyUI when a URL is configured, and the
built-in engines otherwise, so the product still works offline.

Key images: SDXL at the key size (768x1344, a native SDXL bucket near 9:16), then Lanczos upscale
and centre crop to 1080x1920. Scenes with brand elements get the brand LoRA. When the brand has a
packshot, scenes that show the product are generated *around* it: the packshot stands on the
canvas, the model redraws everything else (`sdxl_product_scene`), and the packshot is pasted back
at full resolution, so the product in the frame is the brand's own pixels; premium scenes take
the packshot (never another scene's picture) as the IPAdapter reference. Without a packshot a
`product_3d` scene is a ControlNet shot guided by a drawn pack outline. Optional models missing
on the worker (LoRA, ControlNet) are skipped with a note, never silently.

Motion: AnimateDiff-Evolved over the key image (motion module per motion style), 8 fps, RIFE ×3
to 24 fps, VHS mp4; with a packshot, the product layer is composited over every frame so the
product stays still and exact while the scene moves. The caller turns any failure into the Ken
Burns fallback (spec 8.2).

`preflight` is the worker check a standard/premium job runs once before its first GPU call.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFilter

from comfy_graphs import (
    KEY_SIZE,
    animatediff_clip,
    configured_graphs,
    motion_frames,
    sdxl_key_image,
    sdxl_product_scene,
    with_controlnet,
    with_ipadapter,
)
from resources.comfyui import ComfyError, ComfyModels, ComfyUIClient, ComfyUIResource, JobResult
from resources.comfyui.preflight import PreflightReport, check, needs_of

from .files import atomic_path, slug
from .models import FPS, BrandKit, KeyImageRecord, MotionRecord, Quality, Scene
from .overlay import HEIGHT, WIDTH

Log = Callable[[str], None]
Comfy = ComfyUIClient | ComfyUIResource


def use_comfy(quality: Quality | str, resource: ComfyUIResource | None) -> bool:
    """Draft → built-in engines; standard/premium → ComfyUI when a URL is configured."""
    return quality in ("standard", "premium") and resource is not None and resource.configured


@contextmanager
def _client(comfy: Comfy, log: Log | None,
            on_wait: Callable[[str], None] | None = None) -> Iterator[tuple[ComfyUIClient, float]]:
    """(client, motion deadline): a client we were given stays open; one we make is closed."""
    if isinstance(comfy, ComfyUIClient):
        yield comfy, comfy.timeout_s
        return
    client = comfy.client(log=log, on_wait=on_wait)
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


PRODUCT_PURPOSES = ("solution", "proof", "cta", "call to action", "benefit", "product", "offer")


def shows_product(scene: Scene) -> bool:
    """Scenes whose picture is built around the packshot (issue 13: Solution, Social Proof, CTA)."""
    purpose = scene.purpose.lower()
    return "product_3d" in scene.brand_elements or any(word in purpose for word in PRODUCT_PURPOSES)


def packshot_of(brand: BrandKit) -> tuple[Image.Image, Image.Image] | None:
    """The brand's first packshot as (RGBA image, mask), or None. A file without alpha is used
    whole (the brand kit's cutout is expected to have made it RGBA already)."""
    images = list(getattr(brand, "product_images", None) or [])
    if not images:
        return None
    with Image.open(images[0]) as source:
        source.load()
        rgba = source.convert("RGBA")
    return rgba, rgba.getchannel("A")


def product_box(size: tuple[int, int], frame: tuple[int, int] = (WIDTH, HEIGHT)) -> tuple[int, int, int, int]:
    """Where the packshot stands in the 1080x1920 frame: centred, its base at 80% of the height
    (the upper part stays free for the copy), at most 58% of the width and 40% of the height."""
    fw, fh = frame
    scale = min(fw * 0.58 / size[0], fh * 0.40 / size[1])
    w, h = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    return (fw - w) // 2, round(fh * 0.80) - h, w, h


def frame_to_key(box: tuple[int, int, int, int], key_size: tuple[int, int],
                 frame: tuple[int, int] = (WIDTH, HEIGHT)) -> tuple[int, int, int, int]:
    """The same box on the key-size canvas (the inverse of `cover_to_frame`'s scale and crop)."""
    scale = max(frame[0] / key_size[0], frame[1] / key_size[1])
    off_x = (max(frame[0], round(key_size[0] * scale)) - frame[0]) / 2
    off_y = (max(frame[1], round(key_size[1] * scale)) - frame[1]) / 2
    x, y, w, h = box
    return (round((x + off_x) / scale), round((y + off_y) / scale), max(1, round(w / scale)),
            max(1, round(h / scale)))


def _placed(product: Image.Image, mask: Image.Image, box: tuple[int, int, int, int],
            size: tuple[int, int]) -> Image.Image:
    """An RGBA layer of `size`: the packshot resized into `box`, alpha = its mask, clear elsewhere."""
    x, y, w, h = box
    item = product.convert("RGB").resize((w, h), Image.LANCZOS)
    alpha = mask.convert("L").resize((w, h), Image.LANCZOS)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste(Image.merge("RGBA", (*item.split(), alpha)), (x, y))
    return layer


def product_layer(product: Image.Image, mask: Image.Image,
                  frame: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    """The packshot at its place in the finished frame (RGBA, clear around it)."""
    return _placed(product, mask, product_box(product.size, frame), frame)


def product_canvas(product: Image.Image, mask: Image.Image, key_size: tuple[int, int], tone: str) -> Image.Image:
    """The canvas the scene is generated around: the packshot where it will stand, the brand's
    tone around it; alpha = the product mask (ComfyUI's LoadImage MASK is 1 − alpha)."""
    box = frame_to_key(product_box(product.size), key_size)
    layer = _placed(product, mask, box, key_size)
    canvas = Image.new("RGB", key_size, tone)
    canvas.paste(layer.convert("RGB"), mask=layer.getchannel("A"))
    canvas.putalpha(layer.getchannel("A"))
    return canvas


def make_key_image(comfy: Comfy, scene: Scene, brand_kit: BrandKit, product: str, seed: int | str, out_path: Path,
                   *, quality: Quality = "standard", job_id: str = "", style_reference: Path | None = None,
                   product_image: Image.Image | None = None, product_mask: Image.Image | None = None,
                   log: Log | None = None, on_wait: Callable[[str], None] | None = None) -> KeyImageRecord:
    """Generate the scene's key image on ComfyUI and write it (1080x1920 PNG) to out_path.

    With `product_image` (RGBA; `product_mask` defaults to its alpha) and a scene that shows the
    product, the scene is generated around the packshot and the packshot is pasted back at full
    resolution; its layer is written beside the key image for the motion step (`layer_path`)."""
    started = time.perf_counter()
    if product_image is not None and product_mask is None:
        product_mask = product_image.convert("RGBA").getchannel("A")
    packshot = product_image is not None and shows_product(scene)
    with _client(comfy, log, on_wait) as (client, _):
        models: ComfyModels = client.models or ComfyModels()
        notes: list[str] = []
        lora = None
        if scene.brand_elements and models.lora_for(brand_kit.brand_id):
            lora = models.lora_for(brand_kit.brand_id)
            if not _available(client, "LoraLoader", "lora_name", lora):
                notes.append(f"brand LoRA {lora} is not installed on the worker; made without it")
                lora = None
        steps = models.steps + models.premium_extra_steps if quality == "premium" else models.steps
        prompt = key_image_prompt(scene, brand_kit, product)
        prefix = f"sparklio/{slug(job_id)}/{scene.id}_key"
        engine = "comfyui_lora" if lora else "comfyui_sdxl"
        uploads: dict[str, Path] = {}
        with tempfile.TemporaryDirectory(prefix="sparklio-comfy-") as tmp:
            work = Path(tmp)
            if packshot:
                canvas_path = work / f"{slug(job_id)}_{scene.id}_canvas.png"
                product_canvas(product_image, product_mask, models.key_size, brand_kit.colors[-1]).save(canvas_path)
                g = sdxl_product_scene(prompt, canvas_path.name, seed, models, lora=lora, steps=steps,
                                       filename_prefix=prefix)
                uploads[g.id("product_canvas")] = canvas_path
                engine = "comfyui_packshot"
                if quality == "premium":  # the reference is the product itself, never another scene
                    reference = work / f"{slug(job_id)}_{scene.id}_packshot.png"
                    product_image.convert("RGB").save(reference)
                    with_ipadapter(g, reference.name, models, weight=models.style_reference_weight,
                                   weight_type="style transfer")
                    uploads[g.id("ipadapter_image")] = reference
                    notes.append("IPAdapter reference: the packshot")
            else:
                g = sdxl_key_image(prompt, seed, models, lora=lora, steps=steps, filename_prefix=prefix)
            if "product_3d" in scene.brand_elements and not packshot:
                if _available(client, "ControlNetLoader", "control_net_name", models.controlnet):
                    guide = work / f"{slug(job_id)}_{scene.id}_guide.png"
                    product_guide(models.key_size).save(guide, "PNG")
                    with_controlnet(g, guide.name, models)
                    uploads[g.id("control_image")] = guide
                    engine = "comfyui_controlnet"
                else:
                    notes.append(f"ControlNet {models.controlnet} is not installed on the worker; made without it")
            if style_reference is not None and Path(style_reference).is_file() and not packshot:
                with_ipadapter(g, Path(style_reference).name, models, weight=models.style_reference_weight,
                               weight_type="style transfer")
                uploads[g.id("ipadapter_image")] = Path(style_reference)
                notes.append(f"IPAdapter style reference {Path(style_reference).name}")
            result = client.run(g.build(), work / "out", uploads=uploads, label=f"{scene.id} key image")
            images = result.by_kind("images")
            if not images:
                raise ComfyError(f"ComfyUI job {result.prompt_id} returned no image for {scene.id}")
            with Image.open(images[0].path) as generated:
                generated.load()
                source_size = generated.size
                image = cover_to_frame(generated)
        if packshot:  # the brand's own pixels, at full resolution, over the generated scene
            layer = product_layer(product_image, product_mask)
            image = Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
            with atomic_path(layer_path(out_path)) as part:
                layer.save(part, "PNG")
            notes.append(f"packshot kept pixel-exact at {product_box(product_image.size)}; "
                         f"layer {layer_path(out_path).name}")
        else:
            layer_path(out_path).unlink(missing_ok=True)  # a re-made scene without the product: no stale layer
        with atomic_path(out_path) as part:
            image.save(part, "PNG")
    notes.insert(0, f"prompt_id {result.prompt_id}, {source_size[0]}x{source_size[1]} → {WIDTH}x{HEIGHT}, "
                    f"seed {g.inputs('sampler')['seed']}, {result.attempts} attempt(s)")
    return KeyImageRecord(scene_id=scene.id, path=str(out_path), engine=engine,
                          seconds=round(time.perf_counter() - started, 3), width=image.width, height=image.height,
                          note="; ".join(notes))


def layer_path(key_image_path: Path) -> Path:
    """Where a key image's product layer is kept (beside it), for the motion step."""
    path = Path(key_image_path)
    return path.with_name(f"{path.stem}_product_layer.png")


def make_motion_clip(comfy: Comfy, scene: Scene, key_image_path: Path, out_clip_path: Path, *, seed: int | str,
                     quality: Quality = "standard", job_id: str = "", log: Log | None = None,
                     product_layer_image: Image.Image | None = None,
                     on_wait: Callable[[str], None] | None = None) -> MotionRecord:
    """Animate the key image with AnimateDiff on ComfyUI; writes a 24 fps MP4 to out_clip_path.
    With a product layer (RGBA 1080x1920; by default the one the key image step wrote beside the
    key image) it is composited over every frame, so the packshot does not morph or drift."""
    started = time.perf_counter()
    if product_layer_image is None and layer_path(key_image_path).is_file():
        with Image.open(layer_path(key_image_path)) as layer:
            product_layer_image = layer.convert("RGBA")
    with _client(comfy, log, on_wait) as (client, deadline):
        models: ComfyModels = client.models or ComfyModels()
        frames = motion_frames(scene.frames, models=models)
        g = animatediff_clip(Path(key_image_path).name, scene.image_prompt, scene.motion_style, seed, models,
                             frames=frames, ipadapter=quality == "premium",
                             filename_prefix=f"sparklio/{slug(job_id)}/{scene.id}_motion")
        with tempfile.TemporaryDirectory(prefix="sparklio-comfy-") as tmp:
            result = client.run(g.build(), Path(tmp), uploads={g.id("key_image"): Path(key_image_path)},
                                timeout_s=deadline, label=f"{scene.id} AnimateDiff")
            _store_clip(result, out_clip_path, product_layer_image, models.motion_fps * models.rife_multiplier)
    count = _count_frames(out_clip_path)
    if count < 2:
        raise ComfyError(f"AnimateDiff clip for {scene.id} has {count} frame(s)")
    return MotionRecord(scene_id=scene.id, engine="animatediff", motion_style=scene.motion_style,
                        duration_seconds=scene.duration_seconds, fps=FPS, image_path=str(key_image_path),
                        clip_path=str(out_clip_path), seconds=round(time.perf_counter() - started, 3))


def _store_clip(result: JobResult, out_clip_path: Path, layer: Image.Image | None = None, fps: int = FPS) -> None:
    """VHS's mp4 (`gifs`) moves into place; a frames-only result is encoded to mp4 at 24 fps.
    With a product layer, every frame is covered to 1080x1920 and the layer laid over it."""
    videos = [f for f in result.by_kind("gifs") + result.by_kind("videos") if f.path.suffix.lower() in
              (".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp")]
    if videos and layer is None:
        with atomic_path(out_clip_path) as part:
            part.write_bytes(videos[0].path.read_bytes())
        return
    if videos:
        _encode_frames(_decoded(videos[0].path), out_clip_path, fps, layer)
        return
    frames = sorted(result.by_kind("images"), key=lambda f: f.remote.filename)
    if len(frames) < 2:
        raise ComfyError(f"ComfyUI job {result.prompt_id} returned no clip and {len(frames)} frame(s)")
    _encode_frames((_opened(f.path) for f in frames), out_clip_path, fps, layer)


def _opened(path: Path) -> Image.Image:
    with Image.open(path) as frame:
        return frame.convert("RGB")


def _decoded(path: Path) -> Iterator[Image.Image]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_image()


def _encode_frames(images: Iterable[Image.Image], out_path: Path, fps: int = FPS,
                   layer: Image.Image | None = None) -> None:
    with atomic_path(out_path) as part, av.open(str(part), "w", format="mp4") as container:
        stream = None
        for rgb in images:
            if layer is not None:
                rgb = Image.alpha_composite(cover_to_frame(rgb, *layer.size).convert("RGBA"), layer).convert("RGB")
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
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)  # it really decodes
            if first is None:
                return 0
            return stream.frames or 1 + sum(1 for _ in container.decode(stream))
    except (av.FFmpegError, OSError, IndexError) as error:
        raise ComfyError(f"clip {path} does not decode: {error}") from error


def preflight(comfy: Comfy, log: Log | None = None, on_wait: Callable[[str], None] | None = None) -> PreflightReport:
    """The worker check: every node class and model file the configured graphs need, against the
    worker's /object_info and /system_stats. The brand LoRA and the ControlNet are optional (the
    key image is made without them, with a note)."""
    with _client(comfy, log, on_wait) as (client, _):
        models: ComfyModels = client.models or ComfyModels()
        stats = client.retrying(client.system_stats, "preflight")  # a down worker is waited for
        info = client.retrying(lambda: client.object_info(refresh=True), "preflight")
        needs = needs_of(configured_graphs(models), optional_models=[models.brand_lora, *models.brand_loras.values(),
                                                                                models.controlnet])
        return check(client.url, stats, info, needs)


def missing_for(report: PreflightReport, quality: Quality | str, stage: str) -> list:
    """Required rows missing for a job of this quality at this stage ('key image' or 'motion'):
    premium-only graphs (IPAdapter) do not hold up a standard job."""
    return [r for r in report.missing
            if any(g.startswith(stage) and (quality == "premium" or "premium" not in g) for g in r.needed_by)]
