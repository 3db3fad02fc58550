"""Versions for Dagster's staleness: a code version per asset (a digest of the modules whose code
decides its output, so it changes exactly when that code does, with nobody to forget a bump) and a
data version per materialization (a digest of what it made, so a scene re-made into the same pixels
leaves the final video up to date, and a changed one marks it stale: "Unsynced" in the UI until it
is assembled again)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import (
    brand_assets,
    colour_roles,
    composition,
    copy_fit,
    copy_safety,
    image_engine,
    models,
    motion,
    music,
    overlay,
    planner,
    previews,
    render,
    renditions,
    segments,
    soundtrack,
    typography,
)
from .files import source_version


def content_version(*parts: Path | str | bytes | None) -> str:
    """A digest of files (by content), strings and bytes, in order; None stands for "nothing here"."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        elif part is not None:
            digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]



# asset → a digest of the pure modules whose code decides what it makes
CODE_VERSIONS: dict[str, str] = {
    "storyboard": source_version(planner, copy_safety, models),
    "scene_key_image": source_version(image_engine, composition, colour_roles, brand_assets),
    "scene_motion_clip": source_version(overlay, typography, copy_fit, motion, previews),
    "soundtrack": source_version(soundtrack, music),
    "final_video": source_version(render, segments, renditions, previews),
}
