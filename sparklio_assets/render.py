"""The frame renderer: scenes in, a stream of finished frames out (1080x1920 for the master; any
even size for a rendition laid out on its own, renditions.py).

Frames are produced one at a time and handed straight to the encoder, so memory stays flat
whatever the ad's length (never a whole video in memory). Everything is composited in the
encoder's own pixel format, planar YUV 4:2:0 (I420): the key image is converted once per scene,
and per frame the work is one sub-pixel warp per plane (the two chroma planes are a quarter of
the pixels, so this costs about 40% of a BGR warp), the overlay blended inside its bounding box
only, and a crossfade mix at scene boundaries; no colour conversion per frame. All in OpenCV,
which runs vectorised outside the GIL. That keeps the renderer a small fraction of the H.264
encoder's own cost (see bench/render.py).

Blending in YUV equals blending in RGB because the conversion is affine; the overlay's chroma is
averaged over each 2x2 block with premultiplied alpha, as the encoder's own conversion would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av  # PyAV: decodes generated clips without a second ffmpeg process
import cv2
import numpy as np

from .geometry import HEIGHT, WIDTH, Box
from .models import MotionRecord
from .motion import affine, ease, pose_at

CROSSFADE_FRAMES = 12  # 0.5 s at 24 fps
TEXT_FADE_FRAMES = 8
FILL_DIM = 0.55  # the soft fill beside a fitted picture keeps 55% of its light


@dataclass
class SceneInput:
    """What the renderer needs of one scene: its length, how it moves, and its overlay layer (the
    frame's size). `picture_box`: where the whole picture (or clip) goes when it is not to cover
    the frame, over a soft fill made from itself (a 9:16 picture in a 16:9 frame)."""

    frames: int
    motion: MotionRecord
    overlay_path: Path
    picture_box: Box | None = None


def cover(img: np.ndarray, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Scale and centre-crop a picture to fill the frame (no letterboxing)."""
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    scale = max(width / w, height / h)
    resized = cv2.resize(img, (max(width, round(w * scale)), max(height, round(h * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    y, x = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[y:y + height, x:x + width])


def place_picture(img: np.ndarray, width: int, height: int, box: Box | None = None) -> np.ndarray:
    """The picture as a width x height frame: covering it, or (with `box`) whole inside the box
    over a blurred, dimmed fill made from itself, so a picture of another shape keeps all it shows."""
    if box is None:
        return cover(img, width, height)
    small = cover(img, max(2, width // 8), max(2, height // 8))
    fill = cv2.GaussianBlur(small, (0, 0), 3)
    fill = cv2.convertScaleAbs(fill, alpha=FILL_DIM)
    out = cv2.resize(fill, (width, height), interpolation=cv2.INTER_LINEAR)
    h, w = img.shape[:2]
    scale = min(box.width / w, box.height / h)
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    x, y = box.left + (box.width - pw) // 2, box.top + (box.height - ph) // 2
    out[y:y + ph, x:x + pw] = cv2.resize(img, (pw, ph), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return out


def to_i420(bgr: np.ndarray) -> np.ndarray:
    """An even-sized BGR picture as one I420 buffer (height*3/2 rows of width bytes)."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


def planes(i420: np.ndarray, width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y (height x width), U and V (half size) planes of an I420 buffer."""
    flat = i420.reshape(-1)
    luma, quarter = width * height, (width // 2) * (height // 2)
    return (flat[:luma].reshape(height, width), flat[luma:luma + quarter].reshape(height // 2, width // 2),
            flat[luma + quarter:].reshape(height // 2, width // 2))


def _yuv_planes(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes of a BGR picture of any even size."""
    height, width = bgr.shape[:2]
    return planes(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), width, height)


def chroma_affine(m: np.ndarray) -> np.ndarray:
    """The frame affine for the half-resolution chroma planes. A chroma sample c sits at full
    resolution 2c + 0.5, so the translation becomes (t + (A - I)·0.5) / 2."""
    half = m.copy()
    half[:, 2] = (m[:, 2] + (m[:, :2] - np.eye(2)) @ np.array([0.5, 0.5])) / 2
    return half


def _half(plane: np.ndarray) -> np.ndarray:
    return cv2.resize(plane, (plane.shape[1] // 2, plane.shape[0] // 2), interpolation=cv2.INTER_AREA)


@dataclass
class _Overlay:
    """An RGBA layer cut down to the (even-aligned) box where it has any ink, as YUV planes with
    their blend weights ready: luma at full resolution, chroma per 2x2 block."""

    y0: int
    y1: int
    x0: int
    x1: int
    luma: np.ndarray
    alpha: np.ndarray  # float32 0..1, full resolution
    u: np.ndarray
    v: np.ndarray
    alpha_half: np.ndarray  # float32 0..1, chroma resolution
    size: tuple[int, int]  # the whole layer's (= the frame's) width, height

    @classmethod
    def load(cls, path: Path) -> _Overlay | None:
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.shape[2] != 4:
            raise ValueError(f"overlay {path} is not an RGBA image")
        x, y, w, h = cv2.boundingRect(rgba[:, :, 3])
        if w == 0:
            return None
        y0, x0 = y // 2 * 2, x // 2 * 2
        y1, x1 = min(rgba.shape[0], (y + h + 1) // 2 * 2), min(rgba.shape[1], (x + w + 1) // 2 * 2)
        box = rgba[y0:y1, x0:x1]
        alpha = box[:, :, 3].astype(np.float32) / 255
        bgr = np.ascontiguousarray(box[:, :, :3])
        luma = _yuv_planes(bgr)[0]
        # Per-pixel chroma (the I420 conversion of a 2x nearest upscale), then averaged over each
        # 2x2 block weighted by alpha, so transparent pixels' colour never bleeds into the text.
        _, full_u, full_v = _yuv_planes(cv2.resize(bgr, (bgr.shape[1] * 2, bgr.shape[0] * 2),
                                                   interpolation=cv2.INTER_NEAREST))
        alpha_half = _half(alpha)
        safe = np.maximum(alpha_half, 1e-6)
        u = np.clip(_half(full_u.astype(np.float32) * alpha) / safe + 0.5, 0, 255).astype(np.uint8)
        v = np.clip(_half(full_v.astype(np.float32) * alpha) / safe + 0.5, 0, 255).astype(np.uint8)
        return cls(y0, y1, x0, x1, luma.copy(), alpha, u, v, alpha_half, (rgba.shape[1], rgba.shape[0]))

    def apply(self, frame: np.ndarray, strength: float) -> None:
        """Blend into an I420 frame (of the layer's size) in place, `strength` 0..1 (the copy's fade-in)."""
        y, u, v = planes(frame, *self.size)
        full = self.alpha * strength if strength < 1 else self.alpha
        half = self.alpha_half * strength if strength < 1 else self.alpha_half
        roi = y[self.y0:self.y1, self.x0:self.x1]
        roi[:] = cv2.blendLinear(self.luma, roi, full, 1 - full)
        h0, h1, w0, w1 = self.y0 // 2, self.y1 // 2, self.x0 // 2, self.x1 // 2
        for plane, color in ((u, self.u), (v, self.v)):
            roi = plane[h0:h1, w0:w1]
            roi[:] = cv2.blendLinear(color, roi, half, 1 - half)


@dataclass
class _LoadedScene:
    spec: SceneInput
    overlay: _Overlay | None
    size: tuple[int, int]
    image: np.ndarray | None = None  # I420
    glow: np.ndarray | None = None  # I420
    clip: Iterator[np.ndarray] | None = None
    clip_index: int = -1
    clip_frame: np.ndarray | None = None

    @classmethod
    def load(cls, spec: SceneInput, size: tuple[int, int]) -> _LoadedScene:
        width, height = size
        scene = cls(spec, _Overlay.load(spec.overlay_path), size)
        if scene.overlay is not None and scene.overlay.size != size:
            raise ValueError(f"overlay {spec.overlay_path} is {scene.overlay.size}, the frame {size}")
        if spec.motion.clip_path:
            scene.clip = _decode(Path(spec.motion.clip_path), size, spec.picture_box)
        else:
            image = cv2.imread(spec.motion.image_path, cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"key image {spec.motion.image_path} is missing or unreadable")
            image = place_picture(image, width, height, spec.picture_box)
            scene.image = to_i420(image)
            # The glow is a soft, slightly lifted copy of the picture: blending toward it blooms
            # the highlights without washing out a light background.
            small = cv2.resize(image, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
            bloom = cv2.GaussianBlur(cv2.convertScaleAbs(small, alpha=1.08, beta=14), (0, 0), 7)
            scene.glow = to_i420(cv2.resize(bloom, (width, height), interpolation=cv2.INTER_LINEAR))
        return scene

    def picture(self, local: int) -> np.ndarray:
        """The scene's own picture (I420) at a local frame index (may run a little past either end)."""
        spec = self.spec
        if self.clip is not None:
            target = min(max(local, 0), spec.frames - 1)
            while self.clip_index < target:  # clips are read forward only, once
                nxt = next(self.clip, None)
                if nxt is None:
                    break  # a clip shorter than the scene holds its last frame
                self.clip_frame, self.clip_index = nxt, self.clip_index + 1
            return self.clip_frame.copy()
        p = pose_at(spec.motion.motion_style, local, spec.frames, spec.motion.fps)
        source = self.image
        if p.glow > 0.01:
            strength = 0.45 * p.glow
            source = cv2.addWeighted(self.image, 1 - strength, self.glow, strength, 0)
        width, height = self.size
        m = affine(p, width, height)
        out = np.empty_like(source)
        chroma = (width // 2, height // 2)
        for src, dst, matrix, size in zip(planes(source, width, height), planes(out, width, height),
                                          (m, chroma_affine(m), chroma_affine(m)), (self.size, chroma, chroma)):
            cv2.warpAffine(src, matrix, size, dst=dst, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        return out

    def frame(self, local: int) -> np.ndarray:
        out = self.picture(local)
        if self.overlay is not None:
            self.overlay.apply(out, ease((local + CROSSFADE_FRAMES // 2 + 1) / TEXT_FADE_FRAMES))
        return out


def _decode(path: Path, size: tuple[int, int], box: Box | None) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield to_i420(place_picture(frame.to_ndarray(format="bgr24"), *size, box))


class Timeline:
    """Scene boundaries on the frame axis; crossfades are centred on each boundary so the total
    length is exactly the sum of the scene lengths."""

    def __init__(self, scenes: list[SceneInput], crossfade: int = CROSSFADE_FRAMES):
        self.scenes = scenes
        self.starts = np.cumsum([0] + [s.frames for s in scenes]).tolist()
        self.total = self.starts[-1]
        shortest = min(s.frames for s in scenes)
        self.crossfade = 0 if len(scenes) == 1 else min(crossfade, shortest // 2 * 2)

    def segments(self) -> list[tuple[int, int, list[int]]]:
        """[(first frame, end frame, scenes it shows)]: one segment per scene, from the start of the
        crossfade into it to the start of the crossfade out of it, so every crossfade lies inside
        one segment and a segment shows at most two scenes (itself and the one fading out)."""
        half, last = self.crossfade // 2, len(self.scenes) - 1
        return [(self.starts[i] - half if i else 0, self.starts[i + 1] - half if i < last else self.total,
                 [i - 1, i] if i and half else [i]) for i in range(len(self.scenes))]

    def at(self, f: int) -> list[tuple[int, int, float]]:
        """[(scene index, local frame, weight)] contributing to frame f."""
        i = int(np.searchsorted(self.starts, f, side="right")) - 1
        half = self.crossfade // 2
        for j in (i, i + 1):  # the boundary that starts scene j
            if 0 < j < len(self.scenes) and self.starts[j] - half <= f < self.starts[j] + half:
                w = (f - (self.starts[j] - half) + 0.5) / self.crossfade
                return [(j - 1, f - self.starts[j - 1], 1 - w), (j, f - self.starts[j], w)]
        return [(i, f - self.starts[i], 1.0)]


def frames_i420(scenes: list[SceneInput], crossfade: int = CROSSFADE_FRAMES, start: int = 0,
                stop: int | None = None, step: int = 1,
                size: tuple[int, int] = (WIDTH, HEIGHT)) -> Iterator[np.ndarray]:
    """The ad's frames start..stop (default: all; every `step`th) in order, as I420 buffers (BT.601
    limited range) of `size` (the scenes' overlays are laid out for it) ready for the encoder's
    stdin. A frame depends only on its index, so a range is pixel for pixel the same frames as in
    the whole (what segmented encoding relies on), and a preview need not render the frames it
    skips. Loads each scene when it first appears and drops it once it is behind, so at most two
    scenes are held at a time."""
    timeline = Timeline(scenes, crossfade)
    loaded: dict[int, _LoadedScene] = {}
    for f in range(start, timeline.total if stop is None else stop, step):
        parts = timeline.at(f)
        for index in list(loaded):
            if index < parts[0][0]:
                del loaded[index]
        pictures = []
        for index, local, weight in parts:
            if index not in loaded:
                loaded[index] = _LoadedScene.load(scenes[index], size)
            pictures.append((loaded[index].frame(local), weight))
        if len(pictures) == 1:
            yield pictures[0][0]
        else:
            (a, wa), (b, wb) = pictures
            yield cv2.addWeighted(a, wa, b, wb, 0)


def frames_bgr(scenes: list[SceneInput], crossfade: int = CROSSFADE_FRAMES) -> Iterator[np.ndarray]:
    """The same frames as BGR pictures (OpenCV's order), for tests."""
    for frame in frames_i420(scenes, crossfade):
        yield cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
