"""Builders of ComfyUI API-format graphs, from the JSON templates beside this file.

The templates are the reference's validated graphs (not the spec's, which ComfyUI rejects), with
each node titled by its role (`_meta.title`, ignored by ComfyUI), so builders find nodes by role
rather than by id. Everything variable (prompts, seeds, sizes, model names) is put into the graph
by dict assignment: user text is data and can never change the graph's structure.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from functools import cache
from importlib.resources import files
from typing import Any, Literal

from resources.comfyui import ComfyModels, Graph

# The spec's defaults; each is a field of ComfyModels (the `comfy` resource), which the builders read.
_DEFAULTS = ComfyModels()
KEY_SIZE = _DEFAULTS.key_size  # an SDXL training bucket close to 9:16; covered to 1080x1920 afterwards
MOTION_SIZE = {"sd15": _DEFAULTS.motion_size("sd15"), "sdxl": _DEFAULTS.motion_size("sdxl")}  # exact 9:16
MOTION_FPS = _DEFAULTS.motion_fps  # AnimateDiff's native rate (spec 3.3: 24 frames at 8 fps)
RIFE_MULTIPLIER = _DEFAULTS.rife_multiplier  # 8 fps x3 → 24 fps
MIN_MOTION_FRAMES = _DEFAULTS.min_motion_frames
MAX_MOTION_FRAMES = _DEFAULTS.max_motion_frames
SEED_MAX = 2 ** 53 - 1  # ComfyUI takes 0..2^64-1 (never -1); stay JSON-safe everywhere

NEGATIVE = ("blurry, lowres, jpeg artifacts, watermark, text, letters, caption, logo, signature, "
            "deformed, disfigured, bad anatomy, extra fingers, oversaturated")
MOTION_NEGATIVE = "blurry, flicker, jitter, morphing, deformed, watermark, text, letters"

# Motion style → (camera words for the prompt, AnimateDiff motion scale).
MOTION_STYLES: dict[str, tuple[str, float]] = {
    "slow zoom-in": ("slow steady camera push-in towards the subject", 0.7),
    "parallax movement": ("gentle parallax camera drift, layered foreground and background", 0.9),
    "rotation + glow effect": ("slow orbit around the subject, soft glowing highlights", 0.8),
    "slide transition": ("smooth sideways camera slide", 0.9),
    "pulse effect": ("subtle pulsing light, gentle breathing motion", 0.6),
}


@cache
def _template_text(name: str) -> str:
    return (files("comfy_graphs") / "templates" / f"{name}.json").read_text(encoding="utf-8")


class GraphBuilder:
    """A mutable copy of a template, addressed by node role."""

    def __init__(self, nodes: Graph):
        self.nodes: Graph = copy.deepcopy(nodes)

    @classmethod
    def template(cls, name: str) -> GraphBuilder:
        return cls(json.loads(_template_text(name)))

    def id(self, role: str) -> str:
        for node_id, node in self.nodes.items():
            if node.get("_meta", {}).get("title") == role:
                return node_id
        raise KeyError(f"graph has no node titled {role!r}")

    def out(self, role: str, index: int = 0) -> list[Any]:
        return [self.id(role), index]

    def inputs(self, role: str) -> dict[str, Any]:
        return self.nodes[self.id(role)]["inputs"]

    def set(self, role: str, **values: Any) -> GraphBuilder:
        self.inputs(role).update(values)
        return self

    def add(self, role: str, class_type: str, **inputs: Any) -> str:
        node_id = str(max((int(k) for k in self.nodes if k.isdigit()), default=0) + 1)
        self.nodes[node_id] = {"class_type": class_type, "_meta": {"title": role}, "inputs": dict(inputs)}
        return node_id

    def relink(self, old: list[Any], new: list[Any], only: set[str] | None = None) -> None:
        """Point every input linked to `old` at `new` (optionally only in nodes `only`)."""
        for node_id, node in self.nodes.items():
            if only is not None and node_id not in only:
                continue
            for name, value in node["inputs"].items():
                if isinstance(value, list) and value == old:
                    node["inputs"][name] = list(new)

    def remove(self, role: str, rewire: dict[int, list[Any]]) -> None:
        node_id = self.id(role)
        for index, replacement in rewire.items():
            self.relink([node_id, index], replacement)
        del self.nodes[node_id]

    def build(self) -> Graph:
        return copy.deepcopy(self.nodes)


def seed_of(value: int | str) -> int:
    """A valid ComfyUI seed from an int or a stable string (e.g. 'job/scene')."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value % (SEED_MAX + 1)
    return int(hashlib.sha256(str(value).encode()).hexdigest(), 16) % (SEED_MAX + 1)


def sdxl_key_image(prompt: str, seed: int | str, models: ComfyModels | None = None, *, lora: str | None = None,
                   negative: str = NEGATIVE, size: tuple[int, int] | None = None, steps: int | None = None,
                   filename_prefix: str = "sparklio/key") -> GraphBuilder:
    """SDXL text-to-image, with the brand LoRA on MODEL and CLIP when `lora` is given (the LoRA's
    text-encoder half is used only if CLIP comes from the LoraLoader)."""
    models = models or ComfyModels()
    g = GraphBuilder.template("sdxl_t2i")
    g.set("checkpoint", ckpt_name=models.checkpoint)
    if lora:
        g.set("brand_lora", lora_name=lora, strength_model=models.lora_strength, strength_clip=models.lora_strength)
    else:
        checkpoint = g.id("checkpoint")
        g.remove("brand_lora", rewire={0: [checkpoint, 0], 1: [checkpoint, 1]})
    g.set("positive", text=prompt)
    g.set("negative", text=negative)
    width, height = size or models.key_size
    g.set("latent", width=width, height=height, batch_size=1)
    g.set("sampler", seed=seed_of(seed), steps=steps or models.steps, cfg=models.cfg,
          sampler_name=models.sampler, scheduler=models.scheduler, denoise=1.0)
    g.set("save", filename_prefix=filename_prefix)
    return g


def with_controlnet(g: GraphBuilder, control_image: str, models: ComfyModels | None = None,
                    strength: float | None = None, end_percent: float | None = None) -> GraphBuilder:
    """Product shot: the sampler's conditioning goes through ControlNetApplyAdvanced with a layout
    guide (e.g. the Canny edges of the built-in composition), released at `end_percent` so the
    model finishes the details freely. `control_image` is the uploaded name (set again on upload)."""
    models = models or ComfyModels()
    image = g.add("control_image", "LoadImage", image=control_image)
    loader = g.add("controlnet", "ControlNetLoader", control_net_name=models.controlnet)
    apply = g.add("apply_controlnet", "ControlNetApplyAdvanced", positive=g.out("positive"),
                  negative=g.out("negative"), control_net=[loader, 0], image=[image, 0],
                  strength=models.controlnet_strength if strength is None else strength,
                  start_percent=0.0, end_percent=models.controlnet_end_percent if end_percent is None else end_percent,
                  vae=[g.id("checkpoint"), 2])
    sampler = {g.id("sampler")}
    g.relink(g.out("positive"), [apply, 0], only=sampler)
    g.relink(g.out("negative"), [apply, 1], only=sampler)
    return g


def with_ipadapter(g: GraphBuilder, reference: list[Any] | str, models: ComfyModels | None = None,
                   weight: float = 0.6, weight_type: str = "style transfer") -> GraphBuilder:
    """Brand consistency: IPAdapter on the sampler's MODEL, conditioned on a reference picture
    (an uploaded file name, or a link to an IMAGE already in the graph)."""
    models = models or ComfyModels()
    if isinstance(reference, str):
        reference = [g.add("ipadapter_image", "LoadImage", image=reference), 0]
    # AnimateDiff: IPAdapter goes on the model *before* ADE_UseEvolvedSampling (reference §4).
    target_role = "evolved_sampling" if "evolved_sampling" in _roles(g) else "sampler"
    model_in = g.inputs(target_role)["model"]
    loader = g.add("ipadapter_loader", "IPAdapterUnifiedLoader", model=model_in, preset=models.ipadapter_preset)
    apply = g.add("ipadapter", "IPAdapterAdvanced", model=[loader, 0], ipadapter=[loader, 1], image=reference,
                  weight=weight, weight_type=weight_type, combine_embeds="concat", start_at=0.0, end_at=1.0,
                  embeds_scaling="V only")
    g.set(target_role, model=[apply, 0])
    return g


def _roles(g: GraphBuilder) -> set[str]:
    return {n.get("_meta", {}).get("title", "") for n in g.nodes.values()}


def motion_family(module: str) -> Literal["sd15", "sdxl"]:
    """The SD family a motion module needs its checkpoint to be (a mismatch fails only at run time)."""
    name = module.lower()
    return "sdxl" if any(tag in name for tag in ("sdxl", "hsxl", "hotshot")) else "sd15"


def motion_frames(scene_frames: int, fps: int = 24, multiplier: int | None = None,
                  models: ComfyModels | None = None) -> int:
    """Frames to generate at the motion rate: at least `min_motion_frames` (spec 3.3: 24), enough
    that after RIFE (N−1)·m+1 frames cover the whole scene at 24 fps."""
    models = models or _DEFAULTS
    multiplier = multiplier or models.rife_multiplier
    needed = math.ceil((scene_frames * 24 / fps - 1) / multiplier) + 1
    return max(models.min_motion_frames, min(models.max_motion_frames, needed))


def animatediff_clip(key_image: str, prompt: str, motion_style: str, seed: int | str,
                     models: ComfyModels | None = None, *, frames: int | None = None,
                     negative: str = MOTION_NEGATIVE, output: Literal["mp4", "frames"] = "mp4",
                     ipadapter: bool = False, steps: int | None = None,
                     filename_prefix: str = "sparklio/clip") -> GraphBuilder:
    """AnimateDiff-Evolved image-to-motion (Gen2 nodes): the key image repeated `frames` times,
    re-noised (denoise ~0.65) under the style's motion module, RIFE ×3 to 24 fps, then VHS mp4
    (`gifs` output) or, with output="frames", a SaveImage of every frame (`images` output)."""
    models = models or ComfyModels()
    module = models.motion_modules.get(motion_style)
    if not module:
        raise ValueError(f"no motion module configured for motion style {motion_style!r}")
    family = motion_family(module)
    width, height = models.motion_size(family)
    frames = frames or models.min_motion_frames
    camera, scale = MOTION_STYLES.get(motion_style, ("gentle camera motion", 0.7))
    g = GraphBuilder.template("animatediff_img2vid")
    g.set("checkpoint", ckpt_name=models.motion_checkpoint_sdxl if family == "sdxl" else models.motion_checkpoint_sd15)
    g.set("key_image", image=key_image)
    g.set("fit", width=width, height=height)
    g.set("frames", amount=frames)
    g.set("motion_module", model_name=module)
    g.set("motion_scale", float_val=scale)
    g.set("evolved_sampling", beta_schedule="linear (AnimateDiff-SDXL)" if family == "sdxl" else "autoselect")
    g.set("positive", text=f"{prompt}, {camera}")
    g.set("negative", text=negative)
    g.set("sampler", seed=seed_of(seed), steps=steps or models.motion_steps, sampler_name=models.sampler,
          scheduler=models.scheduler, denoise=models.motion_denoise)
    g.set("interpolate", ckpt_name=models.rife, multiplier=models.rife_multiplier)
    if output == "mp4":
        g.set("video", frame_rate=models.motion_fps * models.rife_multiplier, filename_prefix=filename_prefix)
    else:
        video = g.id("video")
        del g.nodes[video]
        g.nodes[video] = {"class_type": "SaveImage", "_meta": {"title": "frames_out"},
                          "inputs": {"images": g.out("interpolate"), "filename_prefix": filename_prefix}}
    if ipadapter:
        with_ipadapter(g, g.out("fit"), models, weight=models.motion_ipadapter_weight, weight_type="linear")
    return g


def sdxl_product_scene(prompt: str, canvas: str, seed: int | str, models: ComfyModels | None = None, *,
                       lora: str | None = None, negative: str = NEGATIVE, steps: int | None = None,
                       filename_prefix: str = "sparklio/key") -> GraphBuilder:
    """The scene generated around the brand's real packshot (outpainting with the product mask).

    `canvas` is an uploaded RGBA PNG at the key size: the packshot where it will stand (alpha 1),
    a plain tone around it (alpha 0). Only nodes every ComfyUI has (and the reference schemas
    list) are used: LoadImage gives the picture and its MASK (1 − alpha: 1 around the product),
    VAEEncode → KSampler (denoise `product_denoise`) redraws the surroundings with the product
    in place as the composition's anchor, and ImageCompositeMasked puts the canvas's own product
    pixels back where the mask is 0, so the saved image carries the packshot unchanged.
    """
    models = models or ComfyModels()
    g = sdxl_key_image(prompt, seed, models, lora=lora, negative=negative, steps=steps,
                       filename_prefix=filename_prefix)
    del g.nodes[g.id("latent")]
    checkpoint = g.id("checkpoint")
    image = g.add("product_canvas", "LoadImage", image=canvas)
    encoded = g.add("canvas_latent", "VAEEncode", pixels=[image, 0], vae=[checkpoint, 2])
    g.set("sampler", latent_image=[encoded, 0], denoise=models.product_denoise)
    keep = g.add("keep_product", "ImageCompositeMasked", destination=[image, 0], source=g.out("decode"),
                 x=0, y=0, resize_source=False, mask=[image, 1])
    g.set("save", images=[keep, 0])
    return g


def configured_graphs(models: ComfyModels | None = None) -> dict[str, Graph]:
    """Every graph the pipeline can send with these settings, by name: what the worker preflight
    checks node classes and model files against (placeholder image names; uploads are new)."""
    models = models or ComfyModels()
    lora = models.brand_lora or None
    graphs: dict[str, Graph] = {}
    graphs["key image (standard)"] = sdxl_key_image("preflight", 0, models, lora=lora).build()
    graphs["key image (product_3d, ControlNet)"] = with_controlnet(
        sdxl_key_image("preflight", 0, models, lora=lora), "guide.png", models).build()
    graphs["key image (packshot)"] = sdxl_product_scene("preflight", "canvas.png", 0, models, lora=lora).build()
    graphs["key image (packshot, premium IPAdapter)"] = with_ipadapter(
        sdxl_product_scene("preflight", "canvas.png", 0, models, lora=lora), "packshot.png", models,
        weight=models.style_reference_weight).build()
    for style in sorted(models.motion_modules):
        graphs[f"motion '{style}'"] = animatediff_clip("key.png", "preflight", style, 0, models).build()
        graphs[f"motion '{style}' (premium IPAdapter)"] = animatediff_clip(
            "key.png", "preflight", style, 0, models, ipadapter=True).build()
    return graphs
