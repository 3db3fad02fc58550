"""Ken Burns motion: each spec motion style as a smooth function of time.

A style maps the scene's normalised time t (0 at the first frame, 1 at the last; slightly outside
during crossfades) to a camera pose (zoom, rotation, pan) and a glow strength. Poses become float
affine matrices for OpenCV's warpAffine, which samples with sub-pixel bilinear interpolation: no
integer rounding, so no jitter (the classic zoompan artefact). Every pose keeps the zoom high
enough that the frame never shows the picture's edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .models import MotionStyle


@dataclass(frozen=True)
class Pose:
    zoom: float = 1.0
    angle: float = 0.0  # degrees, counter-clockwise
    pan_x: float = 0.0  # fraction of the width the picture is shifted right
    pan_y: float = 0.0
    glow: float = 0.0  # 0..1, strength of the soft bloom


def ease(t: float) -> float:
    """Smoothstep clamped to [0, 1]: starts and ends at rest, so cuts and fades never jerk."""
    t = min(1.0, max(0.0, t))
    return t * t * (3 - 2 * t)


def pose(style: MotionStyle, t: float, duration: float) -> Pose:
    e = ease(t)
    if style == "slow zoom-in":
        return Pose(zoom=1.0 + 0.12 * e, pan_y=-0.01 * e)
    if style == "parallax movement":
        # A lateral dolly: the camera slides while pushing in a little.
        return Pose(zoom=1.12 + 0.03 * e, pan_x=0.045 - 0.09 * e)
    if style == "rotation + glow effect":
        return Pose(zoom=1.13 + 0.03 * e, angle=-2.0 + 4.0 * e, glow=0.5 - 0.5 * math.cos(math.pi * 2 * e))
    if style == "slide transition":
        # Enters from the right and settles, with an ease-out.
        out = 1 - (1 - min(1.0, max(0.0, t * 1.6))) ** 3
        return Pose(zoom=1.16, pan_x=0.065 * (1 - out) - 0.01 * e)
    if style == "pulse effect":
        beat = 0.5 - 0.5 * math.cos(2 * math.pi * t * duration / 0.9)  # a beat every 0.9 s
        return Pose(zoom=1.04 + 0.035 * beat, glow=0.35 * beat)
    raise ValueError(f"unknown motion_style {style!r}")


def pose_at(style: MotionStyle, local: int, frames: int, fps: int) -> Pose:
    """The pose at frame `local` of a scene `frames` long (what the renderer draws, and what the
    product check expects to see)."""
    return pose(style, local / max(1, frames - 1), frames / fps)


def min_cover_zoom(angle_deg: float, width: int, height: int) -> float:
    """Smallest zoom at which a picture rotated by angle still covers the whole frame."""
    a = math.radians(abs(angle_deg))
    c, s = math.cos(a), math.sin(a)
    return max((width * c + height * s) / width, (width * s + height * c) / height)


def affine(p: Pose, width: int, height: int) -> np.ndarray:
    """2x3 matrix mapping source pixels to frame pixels for warpAffine."""
    zoom = max(p.zoom, min_cover_zoom(p.angle, width, height) + abs(p.pan_x) * 2 + abs(p.pan_y) * 2)
    a = math.radians(p.angle)
    cos, sin = math.cos(a) * zoom, math.sin(a) * zoom
    cx, cy = width / 2, height / 2
    tx = cx + p.pan_x * width - (cos * cx + sin * cy)
    ty = cy + p.pan_y * height - (-sin * cx + cos * cy)
    return np.array([[cos, sin, tx], [-sin, cos, ty]], dtype=np.float64)
