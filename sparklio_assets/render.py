"""The frame renderer: scenes in, a stream of finished 1080x1920 frames out.

Frames are produced one at a time and handed straight to the encoder, so memory stays flat
whatever the ad's length (never a whole video in memory). Per frame the work is one sub-pixel
warp of the scene's key image (or one decoded frame of a generated clip), the scene's overlay
blended inside its bounding box only, a crossfade mix at scene boundaries and a BGR→I420
conversion: all in OpenCV, which runs vectorised and multi-threaded outside the GIL. That keeps
the renderer well under the H.264 encoder's own cost (see bench/render.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .models import MotionRecord
from .motion import affine, ease, pose
from .overlay import HEIGHT, WIDTH

CROSSFADE_FRAMES = 12  # 0.5 s at 24 fps
TEXT_FADE_FRAMES = 8


@dataclass
class SceneInput:
    """What the renderer needs of one scene: its length, how it moves, and its overlay layer."""

    frames: int
    motion: MotionRecord
    overlay_path: Path


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


@dataclass
class _Overlay:
    """An RGBA layer cut down to the box where it has any ink, with its blend weights ready."""

    y0: int
    y1: int
    x0: int
    x1: int
    color: np.ndarray
    alpha: np.ndarray  # float32 0..1

    @classmethod
    def load(cls, path: Path) -> _Overlay | None:
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.shape[2] != 4:
            raise ValueError(f"overlay {path} is not an RGBA image")
        ys, xs = np.nonzero(rgba[:, :, 3])
        if len(ys) == 0:
            return None
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = rgba[y0:y1, x0:x1]
        return cls(y0, y1, x0, x1, np.ascontiguousarray(crop[:, :, :3]), crop[:, :, 3].astype(np.float32) / 255)

    def apply(self, frame: np.ndarray, strength: float) -> None:
        fg = self.alpha * strength if strength < 1 else self.alpha
        roi = frame[self.y0:self.y1, self.x0:self.x1]
        frame[self.y0:self.y1, self.x0:self.x1] = cv2.blendLinear(self.color, roi, fg, 1 - fg)


@dataclass
class _LoadedScene:
    spec: SceneInput
    overlay: _Overlay | None
    image: np.ndarray | None = None
    glow: np.ndarray | None = None
    clip: Iterator[np.ndarray] | None = None
    clip_index: int = -1
    clip_frame: np.ndarray | None = None

    @classmethod
    def load(cls, spec: SceneInput) -> _LoadedScene:
        scene = cls(spec, _Overlay.load(spec.overlay_path))
        if spec.motion.clip_path:
            scene.clip = _decode(Path(spec.motion.clip_path))
        else:
            image = cv2.imread(spec.motion.image_path, cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"key image {spec.motion.image_path} is missing or unreadable")
            scene.image = cover(image)
            # The glow is a soft, slightly lifted copy of the picture: blending toward it blooms
            # the highlights without washing out a light background.
            small = cv2.resize(scene.image, (WIDTH // 4, HEIGHT // 4), interpolation=cv2.INTER_AREA)
            bloom = cv2.GaussianBlur(cv2.convertScaleAbs(small, alpha=1.08, beta=14), (0, 0), 7)
            scene.glow = cv2.resize(bloom, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        return scene

    def picture(self, local: int) -> np.ndarray:
        """The scene's own picture at a local frame index (may run a little past either end)."""
        spec = self.spec
        if self.clip is not None:
            target = min(max(local, 0), spec.frames - 1)
            while self.clip_index < target:  # clips are read forward only, once
                nxt = next(self.clip, None)
                if nxt is None:
                    break  # a clip shorter than the scene holds its last frame
                self.clip_frame, self.clip_index = nxt, self.clip_index + 1
            return self.clip_frame.copy()
        p = pose(spec.motion.motion_style, local / max(1, spec.frames - 1), spec.frames / spec.motion.fps)
        source = self.image
        if p.glow > 0.01:
            strength = 0.45 * p.glow
            source = cv2.addWeighted(self.image, 1 - strength, self.glow, strength, 0)
        return cv2.warpAffine(source, affine(p, WIDTH, HEIGHT), (WIDTH, HEIGHT),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)

    def frame(self, local: int) -> np.ndarray:
        out = self.picture(local)
        if self.overlay is not None:
            self.overlay.apply(out, ease((local + CROSSFADE_FRAMES // 2 + 1) / TEXT_FADE_FRAMES))
        return out


def _decode(path: Path) -> Iterator[np.ndarray]:
    import av  # PyAV: decodes generated clips without a second ffmpeg process

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield cover(frame.to_ndarray(format="bgr24"))


class Timeline:
    """Scene boundaries on the frame axis; crossfades are centred on each boundary so the total
    length is exactly the sum of the scene lengths."""

    def __init__(self, scenes: list[SceneInput], crossfade: int = CROSSFADE_FRAMES):
        self.scenes = scenes
        self.starts = np.cumsum([0] + [s.frames for s in scenes]).tolist()
        self.total = self.starts[-1]
        shortest = min(s.frames for s in scenes)
        self.crossfade = 0 if len(scenes) == 1 else min(crossfade, shortest // 2 * 2)

    def at(self, f: int) -> list[tuple[int, int, float]]:
        """[(scene index, local frame, weight)] contributing to frame f."""
        i = int(np.searchsorted(self.starts, f, side="right")) - 1
        half = self.crossfade // 2
        for j in (i, i + 1):  # the boundary that starts scene j
            if 0 < j < len(self.scenes) and self.starts[j] - half <= f < self.starts[j] + half:
                w = (f - (self.starts[j] - half) + 0.5) / self.crossfade
                return [(j - 1, f - self.starts[j - 1], 1 - w), (j, f - self.starts[j], w)]
        return [(i, f - self.starts[i], 1.0)]


def frames_bgr(scenes: list[SceneInput], crossfade: int = CROSSFADE_FRAMES) -> Iterator[np.ndarray]:
    """Every frame of the ad in order, as BGR arrays. Loads each scene when it first appears and
    drops it once it is behind, so at most two scenes are held at a time."""
    timeline = Timeline(scenes, crossfade)
    loaded: dict[int, _LoadedScene] = {}
    for f in range(timeline.total):
        parts = timeline.at(f)
        for index in list(loaded):
            if index < parts[0][0]:
                del loaded[index]
        pictures = []
        for index, local, weight in parts:
            if index not in loaded:
                loaded[index] = _LoadedScene.load(scenes[index])
            pictures.append((loaded[index].frame(local), weight))
        if len(pictures) == 1:
            yield pictures[0][0]
        else:
            (a, wa), (b, wb) = pictures
            yield cv2.addWeighted(a, wa, b, wb, 0)


def frames_i420(scenes: list[SceneInput], crossfade: int = CROSSFADE_FRAMES) -> Iterator[bytes]:
    """The same frames as raw yuv420p (BT.601 limited range), ready for the encoder's stdin."""
    for frame in frames_bgr(scenes, crossfade):
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes()
