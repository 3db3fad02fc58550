"""Quality checks on `final_video` (spec 7): what the finished MP4 really is, measured from the file.

    duration        within one frame (1/24 s) of the storyboard's duration
    resolution      1080x1920 (9:16)
    fps             24
    bitrate         5-10 Mbps
    brand_palette   the brand's colours appear in sampled frames, each within ±5% per RGB channel
    logo_placement  the logo is found (template match of the brand's logo pill) in every scene whose
                    storyboard asks for it, where it asks for it (logo_bottom_right → bottom-right of
                    the safe area; logo → anywhere inside the safe area)
    text_contrast   text readability (spec 7.2), every block on its own: its ink inside the safe area
                    and the frame, and its glyphs against the pixels around them at WCAG ≥ 4.5:1
                    measured in the frame (no share of blocks may fail)
    product_present the brand's packshot found in every scene that composes it: SIFT features +
                    RANSAC homography, or (for a built-in scene, whose placement is known) the
                    packshot's own pixels correlating where the layout and the motion put them
                    (flat artwork has too few features for SIFT alone)
    soundtrack      an AAC track as long as the video, at -14 ±1 LUFS with true peak ≤ -0.5 dBTP
                    (the mix's -1 dBTP plus the encoder's overshoot), decoded from the MP4

Frames are sampled once per scene, at 60% of its length (copy fully faded in, away from the
crossfades), and scaled to the format's design grid so a wrong-sized video is still measured.

Every rendition the brief's channels ask for (4:5, 1:1, 16:9) is held to the same checks with its
own layout (duration, size, frame rate, palette, logo, text, product); the bitrate and the
soundtrack are the master's. A check passes only when it passes in every format; its summary is
the master's, followed by any rendition that fails, and its details list each rendition's own.

One step evaluates all nine (the video is decoded once) and yields one AssetCheckResult each, with
the measurements as metadata, so a failing check shows in the Dagster UI with its numbers. The same
results go to `final/checks.json` beside the video (`layout.checks_path`) for the API.
"""


import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import av
import cv2
import numpy as np
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    multi_asset_check,
)
from PIL import Image

from resources.artifacts import ArtifactStore

from . import store_paths as layout
from .colour_roles import contrast, hex_rgb
from .composition import layout_scene, shows_product
from .files import atomic_path
from .formats import renditions_for
from .geometry import MASTER, SAFE_AREAS, SIZES, Box, frame_box
from .image_engine import paste_clipped, product_placement, scene_packshot, sprite_origin
from .language import language_of
from .models import FPS, FRAME, BrandKit, JobSpec, KeyImageRecord, MotionRecord, Scene, Storyboard
from .motion import affine, pose_at
from .overlay import render_overlay
from .partitions import JOBS
from .soundtrack import SAMPLE_RATE, TARGET_LUFS, loudness, read_audio, true_peak_dbtp
from .video_probe import VideoInfo, probe

BITRATE_RANGE = (5_000_000, 10_000_000)
PALETTE_TOLERANCE = 0.05  # ±5% of full scale, per channel
PALETTE_MIN_COVERAGE = 0.002  # a colour is "present" on ≥ 0.2% of the sampled pixels
LOGO_MIN_SCORE = 0.6  # normalised cross-correlation of the logo pill template
WCAG_AA = 4.5
PRIMARY_MIN_COVERAGE = 0.01  # the primary colour fills ≥ 1% of the sampled pixels: visibly used
PRODUCT_MIN_INLIERS = 10
PRODUCT_MIN_CORRELATION = 0.8  # the placed packshot's own pixels (masked normalised cross-correlation)
PRODUCT_SEARCH_PX = 16  # how far from where it was placed the packshot is looked for (encoder, rounding)
SAMPLE_AT = 0.6
LOUDNESS_TOLERANCE_LU = 1.0
PEAK_MAX_DBTP = -0.5
AUDIO_LENGTH_TOLERANCE_S = 0.05  # AAC frames are 21 ms

# name → (description, severity of a failure)
CHECKS: dict[str, tuple[str, AssetCheckSeverity]] = {
    "duration": ("Duration within one frame of the storyboard's duration.", AssetCheckSeverity.ERROR),
    "resolution": ("1080x1920 (9:16); each rendition its format's size.", AssetCheckSeverity.ERROR),
    "fps": (f"{FPS} frames per second.", AssetCheckSeverity.ERROR),
    "bitrate": ("Video bitrate 5-10 Mbps.", AssetCheckSeverity.ERROR),
    "brand_palette": ("The brand colours appear in sampled frames within ±5%, the primary on ≥ 1% of the pixels "
                      "(spec 7.1).", AssetCheckSeverity.WARN),
    "logo_placement": ("The logo is where the storyboard puts it, in every scene that asks for it (spec 7.2).",
                       AssetCheckSeverity.ERROR),
    "text_contrast": ("Every text block inside the safe area and the frame, each at WCAG ≥ 4.5:1 against what "
                      "it sits on (spec 7.2).", AssetCheckSeverity.ERROR),
    "product_present": ("The brand's packshot is found in every scene that shows it.", AssetCheckSeverity.ERROR),
    "soundtrack": ("An AAC soundtrack as long as the video at -14 ±1 LUFS, true peak ≤ -0.5 dBTP.",
                   AssetCheckSeverity.ERROR),
}


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    summary: str
    details: dict = field(default_factory=dict)

    @property
    def severity(self) -> AssetCheckSeverity:
        return CHECKS[self.name][1]


# ---------------------------------------------------------------- measurements


def sample_local(scene: Scene) -> int:
    """The frame sampled within a scene (counted from its start)."""
    return int(scene.frames * SAMPLE_AT)


def scene_sample_frames(plan: Storyboard) -> dict[str, int]:
    """scene id → the frame index sampled for it."""
    out, start = {}, 0
    for scene in plan.scenes:
        out[scene.id] = start + sample_local(scene)
        start += scene.frames
    return out


def decode_frames(path: Path, indices: set[int], size: tuple[int, int] = SIZES[MASTER]) -> dict[int, np.ndarray]:
    """RGB frames at the given indices, scaled to the format's design grid (`size`)."""
    frames: dict[int, np.ndarray] = {}
    if not indices:
        return frames
    last = max(indices)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in indices:
                rgb = frame.to_ndarray(format="rgb24")
                if rgb.shape[:2] != (size[1], size[0]):
                    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                frames[i] = rgb
            if i >= last:
                break
    return frames


def palette_coverage(frames: list[np.ndarray], colors: list[str]) -> dict[str, float]:
    """Share of sampled pixels within ±5% (per channel) of each brand colour."""
    tol = PALETTE_TOLERANCE * 255
    out = {}
    for color in colors:
        rgb = np.array(hex_rgb(color), np.int16)
        hits = sum(int((np.abs(f[::2, ::2].astype(np.int16) - rgb).max(axis=2) <= tol).sum()) for f in frames)
        total = sum(f[::2, ::2].shape[0] * f[::2, ::2].shape[1] for f in frames)
        out[color] = round(hits / total, 5) if total else 0.0
    return out


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def logo_template(scene: Scene, brand: BrandKit, product: str, language: str,
                  fmt: str = MASTER) -> tuple[np.ndarray, Box] | None:
    """The logo (the brand's image, or its wordmark pill) exactly as the overlay draws it for this
    scene, laid over the scene's background colour, and its box."""
    only_logo = [e for e in scene.brand_elements if e in ("logo_bottom_right", "logo")][:1]
    if not only_logo:
        return None
    bare = scene.model_copy(update={"onscreen_text": "", "brand_elements": only_logo})
    layer, placed = render_overlay(bare, brand, product, language, fmt=fmt)
    box = placed.logo_box
    if box is None:
        return None
    ground = np.array(layout_scene(scene, brand, fmt).scheme.background, np.float32)
    crop = np.asarray(layer.crop((box.left, box.top, box.right, box.bottom)), np.float32)
    alpha = crop[:, :, 3:4] / 255.0
    rgb = crop[:, :, :3] * alpha + ground * (1 - alpha)
    return _gray(rgb.astype(np.uint8)), box


def logo_in_place(found: Box, elements: list[str], fmt: str = MASTER) -> bool:
    """Inside the format's safe area (a few pixels of slack for the match); for logo_bottom_right,
    also centred in its bottom-right quarter (a long logo may reach left of the middle)."""
    slack, safe = 6, SAFE_AREAS[fmt]
    inside = safe.contains(Box(found.left + slack, found.top + slack, found.right - slack, found.bottom - slack))
    if "logo_bottom_right" not in elements:
        return inside
    cx, cy = (found.left + found.right) / 2, (found.top + found.bottom) / 2
    return inside and cx >= safe.center[0] and cy >= safe.top + safe.height * 3 / 4


def find_logo(frame: np.ndarray, template: np.ndarray) -> tuple[float, Box]:
    """Best match of the template in the frame (at half size, for speed): score and where."""
    small = cv2.resize(_gray(frame), (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    th, tw = template.shape
    tmpl = cv2.resize(template, (max(1, tw // 2), max(1, th // 2)), interpolation=cv2.INTER_AREA)
    scores = cv2.matchTemplate(small, tmpl, cv2.TM_CCOEFF_NORMED)
    _, best, _, (x, y) = cv2.minMaxLoc(scores)
    return float(best), Box(2 * x, 2 * y, 2 * x + tw, 2 * y + th)


def block_contrast(frame: np.ndarray, block) -> float:
    """WCAG contrast between a block's glyphs and the pixels right around them, in the frame.
    The glyph mask comes from the layout; its core (eroded) gives the ink colour, a ring just
    outside it (dilated, minus the glyphs) the ground colour: medians, so anti-aliasing and
    the odd stray pixel do not move the result."""
    ink = block.ink
    if block.mask is None or ink.width <= 0 or ink.height <= 0:
        return 1.0
    pad = 12
    top, left = max(0, ink.top - pad), max(0, ink.left - pad)
    bottom, right = min(frame.shape[0], ink.bottom + pad), min(frame.shape[1], ink.right + pad)
    glyphs = np.zeros((bottom - top, right - left), np.uint8)
    gy, gx = ink.top - top, ink.left - left
    h = min(block.mask.shape[0], glyphs.shape[0] - gy)
    w = min(block.mask.shape[1], glyphs.shape[1] - gx)
    if h <= 0 or w <= 0:
        return 1.0
    glyphs[gy:gy + h, gx:gx + w] = block.mask[:h, :w].astype(np.uint8)
    core = cv2.erode(glyphs, np.ones((3, 3), np.uint8)) > 0
    if core.sum() < 20:
        core = glyphs > 0
    ring = (cv2.dilate(glyphs, np.ones((13, 13), np.uint8)) > 0) & ~(cv2.dilate(glyphs, np.ones((5, 5), np.uint8)) > 0)
    region = frame[top:bottom, left:right]
    if core.sum() < 5 or ring.sum() < 5:
        return 1.0
    text = np.median(region[core], axis=0)
    ground = np.median(region[ring], axis=0)
    return round(contrast(tuple(int(v) for v in text), tuple(int(v) for v in ground)), 2)


def text_block_contrast(frame: np.ndarray, box: Box) -> float:
    """WCAG contrast between the brightest and the median pixels of a box (for a box with no layout)."""
    inset = 10
    region = frame[box.top + inset:box.bottom - inset, box.left + inset:box.right - inset].reshape(-1, 3)
    if len(region) < 100:
        return 1.0
    lum = region.astype(np.float32) @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    order = np.argsort(lum)
    text = region[order[int(len(order) * 0.98):]].mean(axis=0)
    mid = len(order) // 2
    plate = region[order[int(mid * 0.6):int(mid * 1.2)]].mean(axis=0)
    return round(contrast(tuple(int(v) for v in text), tuple(int(v) for v in plate)), 2)


def _features(gray: np.ndarray, mask: np.ndarray | None = None):
    sift = cv2.SIFT_create(nfeatures=1500)
    return sift.detectAndCompute(gray, mask)


def product_match(frame: np.ndarray, packshot_rgba: np.ndarray) -> int:
    """How many of the packshot's SIFT features land in the frame consistently with one
    homography (RANSAC inliers): the product check's measurement."""
    template = packshot_rgba
    frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)  # speed
    scale = min(1.0, 480 / max(template.shape[:2]))
    if scale < 1:
        template = cv2.resize(template, (int(template.shape[1] * scale), int(template.shape[0] * scale)),
                              interpolation=cv2.INTER_AREA)
    gray_t = cv2.cvtColor(np.ascontiguousarray(template[:, :, :3]), cv2.COLOR_RGB2GRAY)
    mask = (template[:, :, 3] > 128).astype(np.uint8) * 255 if template.shape[2] == 4 else None
    kp_t, des_t = _features(gray_t, mask)
    kp_f, des_f = _features(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    if des_t is None or des_f is None or len(kp_t) < 4 or len(kp_f) < 4:
        return 0
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_t, des_f, k=2)
    good = [m for m, *rest in matches if rest and m.distance < 0.75 * rest[0].distance]
    if len(good) < 4:
        return len(good) // 2
    src = np.float32([kp_t[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
    dst = np.float32([kp_f[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
    _, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 6.0)
    return int(inliers.sum()) if inliers is not None else 0


def placed_product_correlation(frame: np.ndarray, scene: Scene, brand: BrandKit, fmt: str = MASTER,
                               moved_by: np.ndarray | None = None) -> float:
    """How well the frame's pixels match the packshot where a built-in scene put it: the sprite is
    placed as the key-image engine places it (image_engine.product_placement), moved by the frame's
    Ken Burns affine (`moved_by`; None: the key image at rest), and correlated (masked, normalised)
    within a few pixels of there. About 1.0 when the packshot is on screen as composed; near 0
    when something else is."""
    placed = product_placement(scene, brand, fmt)
    if placed is None:
        return 0.0
    sprite, box = placed
    width, height = SIZES[fmt]
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    paste_clipped(canvas, sprite, *sprite_origin(sprite, box))
    moved = np.asarray(canvas)
    if moved_by is not None:
        moved = cv2.warpAffine(moved, moved_by, (width, height), flags=cv2.INTER_LINEAR)
    mask = moved[:, :, 3] > 200
    if mask.sum() < 400:
        return 0.0
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    pad = PRODUCT_SEARCH_PX
    region = frame[max(0, y0 - pad):min(height, y1 + pad), max(0, x0 - pad):min(width, x1 + pad)]
    template = np.ascontiguousarray(moved[y0:y1, x0:x1, :3])
    scores = cv2.matchTemplate(_gray(region), _gray(template), cv2.TM_CCOEFF_NORMED,
                               mask=mask[y0:y1, x0:x1].astype(np.uint8))
    return round(float(np.nan_to_num(scores, nan=-1.0, posinf=-1.0, neginf=-1.0).max()), 3)


# ---------------------------------------------------------------- the checks


@dataclass
class _Made:
    """What the checks compare a job's videos with: the request, the storyboard and each scene's
    records (which engine made its picture, how it moves)."""

    job: JobSpec
    plan: Storyboard
    samples: dict[str, int]  # scene id → the frame index sampled for it
    motions: dict[str, MotionRecord]
    engines: dict[str, str]  # scene id → key-image engine

    @property
    def language(self) -> str:
        return language_of(self.job.brief)


def inspect_video(store: ArtifactStore, job_id: str) -> list[CheckOutcome]:
    """All nine checks for one job's current final video and its renditions."""
    job: JobSpec = layout.read_job(store, job_id)
    plan: Storyboard = layout.read_storyboard(store, job_id)
    motions, engines = {}, {}
    for scene in plan.scenes:
        if layout.motion_path(store, job_id, scene.id).is_file():
            motions[scene.id] = store.read(layout.motion_path(store, job_id, scene.id), MotionRecord)
        if layout.key_image_record_path(store, job_id, scene.id).is_file():
            engines[scene.id] = store.read(layout.key_image_record_path(store, job_id, scene.id), KeyImageRecord).engine
    made = _Made(job, plan, scene_sample_frames(plan), motions, engines)
    paths = {MASTER: layout.video_path(store, job_id),
             **{fmt: layout.rendition_path(store, job_id, fmt) for fmt in renditions_for(job.brief.channels)}}
    infos = {fmt: probe(path) if path.is_file() else None for fmt, path in paths.items()}
    frames = {fmt: decode_frames(path, set(made.samples.values()), SIZES[fmt]) if infos[fmt] else {}
              for fmt, path in paths.items()}

    def each(name: str, measure) -> CheckOutcome:
        return _in_every_format(name, {fmt: _missing(name, fmt) if infos[fmt] is None else measure(fmt)
                                       for fmt in paths})

    return [
        each("duration", lambda fmt: _duration(infos[fmt], plan)),
        each("resolution", lambda fmt: _resolution(infos[fmt], fmt)),
        each("fps", lambda fmt: _fps(infos[fmt])),
        _bitrate(infos[MASTER]),
        each("brand_palette", lambda fmt: _palette(frames[fmt], job.brand_kit)),
        each("logo_placement", lambda fmt: _logo(frames[fmt], made, fmt)),
        each("text_contrast", lambda fmt: _text(frames[fmt], made, fmt)),
        each("product_present", lambda fmt: _product(frames[fmt], made, fmt)),
        _soundtrack(paths[MASTER], infos[MASTER]),
    ]


def _missing(name: str, fmt: str) -> CheckOutcome:
    return CheckOutcome(name, False, f"the {fmt} video is missing", {})


def _in_every_format(name: str, outcomes: dict[str, CheckOutcome]) -> CheckOutcome:
    """One outcome from the master's and each rendition's: passed in all; the master's summary and
    details, then each failing rendition's summary, and every rendition's own under `renditions`."""
    master, others = outcomes[MASTER], {fmt: o for fmt, o in outcomes.items() if fmt != MASTER}
    failing = [fmt for fmt, o in others.items() if not o.passed]
    summary = master.summary + "".join(f"; {fmt}: {others[fmt].summary}" for fmt in failing)
    if others and not failing:
        summary += f" (renditions {', '.join(others)} pass too)"
    details = {**master.details, **({"renditions": {fmt: {"passed": o.passed, "summary": o.summary, **o.details}
                                                    for fmt, o in others.items()}} if others else {})}
    return CheckOutcome(name, all(o.passed for o in outcomes.values()), summary, details)


def _duration(info: VideoInfo, plan: Storyboard) -> CheckOutcome:
    off = info.duration - plan.duration_seconds
    ok = abs(off) <= FRAME + 1e-6
    return CheckOutcome("duration", ok, f"{info.duration:.3f} s vs storyboard {plan.duration_seconds:g} s "
                                        f"({off * FPS:+.2f} frames; limit ±1)",
                        {"duration": info.duration, "storyboard_duration": plan.duration_seconds,
                         "frames": info.frames, "storyboard_frames": sum(s.frames for s in plan.scenes)})


def _resolution(info: VideoInfo, fmt: str) -> CheckOutcome:
    width, height = SIZES[fmt]
    ok = (info.width, info.height) == (width, height)
    return CheckOutcome("resolution", ok, f"{info.width}x{info.height} (want {width}x{height})",
                        {"width": info.width, "height": info.height})


def _fps(info: VideoInfo) -> CheckOutcome:
    ok = abs(info.fps - FPS) < 0.01
    return CheckOutcome("fps", ok, f"{info.fps:g} fps (want {FPS})", {"fps": info.fps})


def _bitrate(info: VideoInfo | None) -> CheckOutcome:
    if info is None:
        return _missing("bitrate", MASTER)
    low, high = BITRATE_RANGE
    ok = low <= info.bit_rate <= high
    return CheckOutcome("bitrate", ok, f"{info.bit_rate / 1e6:.2f} Mbps (want {low / 1e6:g}-{high / 1e6:g})",
                        {"bitrate_mbps": round(info.bit_rate / 1e6, 3)})


def _palette(frames: dict[int, np.ndarray], brand: BrandKit) -> CheckOutcome:
    """Present = on ≥ 0.2% of sampled pixels within ±5%. Passes when the primary colour and at least
    half of the palette are present: accents beyond the light/dark pair may rightly be unused."""
    coverage = palette_coverage(list(frames.values()), brand.colors)
    present = [c for c, share in coverage.items() if share >= PALETTE_MIN_COVERAGE]
    primary = brand.colors[0]
    primary_ok = coverage.get(primary, 0.0) >= PRIMARY_MIN_COVERAGE
    ok = bool(frames) and primary_ok and len(present) >= math.ceil(len(brand.colors) / 2)
    missing = [c for c in brand.colors if c not in present]
    summary = (f"{len(present)}/{len(brand.colors)} brand colours present within ±5%"
               + (f"; missing {', '.join(missing)}" if missing else "")
               + f"; primary {primary} on {coverage.get(primary, 0.0):.1%} of pixels"
               + ("" if primary_ok else f" (want ≥ {PRIMARY_MIN_COVERAGE:.0%})"))
    return CheckOutcome("brand_palette", ok, summary,
                        {"coverage": coverage, "min_coverage": PALETTE_MIN_COVERAGE,
                         "tolerance": PALETTE_TOLERANCE, "frames_sampled": len(frames)})


def _logo(frames: dict[int, np.ndarray], made: _Made, fmt: str) -> CheckOutcome:
    job = made.job
    scenes, problems = {}, []
    for scene in made.plan.scenes:
        template_box = logo_template(scene, job.brand_kit, job.brief.product, made.language, fmt)
        if template_box is None:
            continue
        template, designed = template_box
        where = "bottom_right" if "logo_bottom_right" in scene.brand_elements else "safe_area"
        frame = frames.get(made.samples[scene.id])
        if frame is None:
            scenes[scene.id] = {"expected": where, "found": False, "reason": "frame missing from the video"}
            problems.append(f"{scene.id}: frame {made.samples[scene.id]} is missing from the video")
            continue
        score, found = find_logo(frame, template)
        inside = logo_in_place(found, scene.brand_elements, fmt)
        scenes[scene.id] = {"expected": where, "score": round(score, 3), "found_at": [found.left, found.top],
                            "designed_at": [designed.left, designed.top], "in_region": inside}
        if score < LOGO_MIN_SCORE:
            problems.append(f"{scene.id}: logo not found (match {score:.2f} < {LOGO_MIN_SCORE})")
        elif not inside:
            problems.append(f"{scene.id}: logo found at ({found.left}, {found.top}), not in the {where} region")
    ok = not problems and bool(frames)
    summary = "; ".join(problems) if problems else f"logo found where the storyboard says in {len(scenes)} scene(s)"
    return CheckOutcome("logo_placement", ok, summary, {"scenes": scenes, "min_score": LOGO_MIN_SCORE})


def _text(frames: dict[int, np.ndarray], made: _Made, fmt: str) -> CheckOutcome:
    job, safe, whole = made.job, SAFE_AREAS[fmt], frame_box(fmt)
    blocks, problems = [], []
    for scene in made.plan.scenes:
        frame = frames.get(made.samples[scene.id])
        # Where the ink sits does not depend on the picture under it (only the plates do).
        _, placed = render_overlay(scene, job.brand_kit, job.brief.product, made.language, fmt=fmt)
        for block in placed.blocks:
            ratio = block_contrast(frame, block) if frame is not None else 1.0
            inside = safe.contains(block.ink) and whole.contains(block.ink)
            blocks.append({"scene": scene.id, "kind": block.kind, "text": block.text[:40], "ratio": ratio,
                           "ink": [block.ink.left, block.ink.top, block.ink.right, block.ink.bottom],
                           "inside_safe_area": inside, "shortened": block.shortened})
            if ratio < WCAG_AA:
                problems.append(f"{scene.id} {block.kind} {ratio}:1 < {WCAG_AA}:1")
            if not inside:
                problems.append(f"{scene.id} {block.kind} ink at {blocks[-1]['ink']} outside the safe area")
    ok = not problems
    worst = min(blocks, key=lambda b: b["ratio"]) if blocks else None
    summary = ("; ".join(problems[:4]) + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else "")
               if problems else f"{len(blocks)}/{len(blocks)} text blocks inside the safe area at ≥ {WCAG_AA}:1"
               + (f"; lowest {worst['ratio']}:1 ({worst['scene']} {worst['kind']})" if worst else ""))
    return CheckOutcome("text_contrast", ok, summary, {"blocks": blocks, "min_ratio": WCAG_AA})


def _product(frames: dict[int, np.ndarray], made: _Made, fmt: str) -> CheckOutcome:
    brand = made.job.brand_kit
    showing = [s for s in made.plan.scenes if shows_product(s, brand)]
    if not showing:
        return CheckOutcome("product_present", True, "no scene shows a packshot (the brand kit has no product_images)",
                            {"scenes": {}})
    scenes, problems = {}, []
    for scene in showing:
        shot = scene_packshot(scene, brand)
        frame = frames.get(made.samples[scene.id])
        inliers = product_match(frame, np.asarray(shot.image)) if frame is not None else 0
        motion = made.motions.get(scene.id)
        correlation = None
        if (frame is not None and made.engines.get(scene.id) == "builtin" and motion is not None
                and not motion.clip_path):
            m = affine(pose_at(motion.motion_style, sample_local(scene), scene.frames, motion.fps), *SIZES[fmt])
            correlation = placed_product_correlation(frame, scene, brand, fmt, m)
        scenes[scene.id] = {"inliers": inliers, "correlation": correlation}
        if inliers < PRODUCT_MIN_INLIERS and (correlation or 0.0) < PRODUCT_MIN_CORRELATION:
            problems.append(f"{scene.id}: packshot not found ({inliers} matching features < {PRODUCT_MIN_INLIERS}"
                            + (f", correlation {correlation:.2f} < {PRODUCT_MIN_CORRELATION} where it was placed)"
                               if correlation is not None else ")"))
    summary = "; ".join(problems) or f"packshot found in {len(scenes)} scene(s)"
    return CheckOutcome("product_present", not problems and bool(frames), summary,
                        {"scenes": scenes, "min_inliers": PRODUCT_MIN_INLIERS,
                         "min_correlation": PRODUCT_MIN_CORRELATION})


# ---------------------------------------------------------------- the report for the API


def _soundtrack(path: Path, info: VideoInfo) -> CheckOutcome:
    if info.audio_codec is None:
        return CheckOutcome("soundtrack", False, "no audio track", {"codec": None})
    audio = read_audio(path)
    seconds, lufs, peak = len(audio) / SAMPLE_RATE, loudness(audio), true_peak_dbtp(audio)
    problems = [f"codec {info.audio_codec} (want aac)"] if info.audio_codec != "aac" else []
    if abs(seconds - info.duration) > AUDIO_LENGTH_TOLERANCE_S:
        problems.append(f"{seconds:.3f} s of audio for {info.duration:.3f} s of video")
    if not abs(lufs - TARGET_LUFS) <= LOUDNESS_TOLERANCE_LU:
        problems.append(f"{lufs:.1f} LUFS (want {TARGET_LUFS:g} ±{LOUDNESS_TOLERANCE_LU:g})")
    if peak > PEAK_MAX_DBTP:
        problems.append(f"true peak {peak:.2f} dBTP (want ≤ {PEAK_MAX_DBTP:g})")
    summary = "; ".join(problems) or f"aac, {lufs:.1f} LUFS, true peak {peak:.2f} dBTP, {seconds:.3f} s"
    return CheckOutcome("soundtrack", not problems, summary,
                        {"codec": info.audio_codec, "sample_rate": info.audio_sample_rate, "seconds": round(seconds, 4),
                         "loudness_lufs": round(lufs, 2), "true_peak_dbtp": round(peak, 2)})


def write_report(store: ArtifactStore, job_id: str, outcomes: list[CheckOutcome]) -> Path:
    path = layout.checks_path(store, job_id)
    report = {
        "job_id": job_id,
        "checked_at": datetime.now(UTC).isoformat(),
        "video_path": str(layout.video_path(store, job_id)),
        "passed": all(o.passed for o in outcomes),
        "failed": [o.name for o in outcomes if not o.passed],
        "checks": [{**asdict(o), "severity": o.severity.value} for o in outcomes],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def read_report(store: ArtifactStore, job_id: str) -> dict | None:
    """The last checks of the job's video, or None when they have not run yet."""
    path = layout.checks_path(store, job_id)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# ---------------------------------------------------------------- Dagster

with warnings.catch_warnings():  # partitioned check specs are a preview feature in 1.13
    warnings.simplefilter("ignore")
    SPECS = [AssetCheckSpec(name, asset="final_video", description=description, partitions_def=JOBS)
             for name, (description, _) in CHECKS.items()]


@multi_asset_check(specs=SPECS, name="final_video_quality", compute_kind="python",
                   description="Spec 7 quality checks of the finished MP4 (one decode, nine results).")
def final_video_quality(context: AssetCheckExecutionContext, store: ArtifactStore):
    job_id = context.partition_key
    outcomes = inspect_video(store, job_id)
    report = write_report(store, job_id, outcomes)
    failed = [o.name for o in outcomes if not o.passed]
    (context.log.warning if failed else context.log.info)(
        f"job {job_id}: {len(outcomes) - len(failed)}/{len(outcomes)} checks passed"
        + (f"; failed: {', '.join(failed)}" if failed else "") + f" (report {report})")
    for outcome in outcomes:
        yield AssetCheckResult(
            asset_key="final_video", check_name=outcome.name, passed=outcome.passed, severity=outcome.severity,
            description=outcome.summary,
            metadata={"summary": outcome.summary, "details": MetadataValue.json(outcome.details),
                      "report": MetadataValue.path(str(report))})


ASSET_CHECKS = [final_video_quality]
