"""Where each of a job's files lives inside the artifact store: one definition, used by the
assets, the CLI, the API and the tests alike. (Paths in the store; OverlayLayout is the on-screen layout.)"""

from __future__ import annotations

from pathlib import Path

from resources.artifacts import ArtifactStore

from .formats import file_tag
from .models import JobSpec, Storyboard


def brand_library(store: ArtifactStore) -> Path:
    """Stored brand kits, one folder per brand id (brand_library.py)."""
    return store.folder / "brands"


def job_path(store: ArtifactStore, job_id: str) -> Path:
    return store.job_dir(job_id) / "job.json"


def storyboard_path(store: ArtifactStore, job_id: str) -> Path:
    return store.job_dir(job_id) / "storyboard.json"


def key_image_path(store: ArtifactStore, job_id: str, scene_id: str) -> Path:
    return store.scene_dir(job_id, scene_id) / "key.png"


def key_preview_path(store: ArtifactStore, job_id: str, scene_id: str) -> Path:
    """A small copy of the key image for the Dagster UI (the PNG is 1080 x 1920)."""
    return store.scene_dir(job_id, scene_id) / "key_preview.jpg"


def key_image_record_path(store: ArtifactStore, job_id: str, scene_id: str) -> Path:
    return store.scene_dir(job_id, scene_id) / "key.json"


def overlay_path(store: ArtifactStore, job_id: str, scene_id: str) -> Path:
    return store.scene_dir(job_id, scene_id) / "overlay.png"


def motion_path(store: ArtifactStore, job_id: str, scene_id: str) -> Path:
    return store.scene_dir(job_id, scene_id) / "motion.json"


def preview_path(store: ArtifactStore, job_id: str, scene_id: str) -> Path:
    """The scene's animated preview (previews.py)."""
    return store.scene_dir(job_id, scene_id) / "preview.webp"


def first_frame_path(store: ArtifactStore, job_id: str, scene_id: str) -> Path:
    """The scene's first frame as it will appear, small, for the Dagster UI."""
    return store.scene_dir(job_id, scene_id) / "first_frame.jpg"


def clip_path(store: ArtifactStore, job_id: str, scene_id: str) -> Path:
    return store.scene_dir(job_id, scene_id) / "clip.mp4"


def failure_log_path(store: ArtifactStore, job_id: str, stage: str, run_id: str) -> Path:
    """The full story of a failed run (each failed step's error with its traceback and causes): the
    terminal and the API show one line, this file the rest."""
    return store.job_dir(job_id) / "logs" / f"{stage}-{run_id[:8]}.log"


def ad_preview_path(store: ArtifactStore, job_id: str) -> Path:
    """The whole ad as a small animated preview (previews.py), published with the video."""
    return store.final_dir(job_id) / "preview.webp"


def soundtrack_path(store: ArtifactStore, job_id: str) -> Path:
    """The mixed soundtrack (WAV) muxed into every MP4; narration lines are cached beside it in voice/."""
    return store.job_dir(job_id) / "audio" / "soundtrack.wav"


def soundtrack_record_path(store: ArtifactStore, job_id: str) -> Path:
    return store.job_dir(job_id) / "audio" / "soundtrack.json"


def video_path(store: ArtifactStore, job_id: str) -> Path:
    return store.final_dir(job_id) / "ad.mp4"


def rendition_name(fmt: str) -> str:
    """Another format of the ad (formats.py): ad_16x9.mp4 and so on."""
    return f"ad_{file_tag(fmt)}.mp4"


def rendition_path(store: ArtifactStore, job_id: str, fmt: str) -> Path:
    return store.final_dir(job_id) / rendition_name(fmt)


def thumbnail_path(store: ArtifactStore, job_id: str) -> Path:
    return store.final_dir(job_id) / "thumbnail.jpg"


def thumbnail_preview_path(store: ArtifactStore, job_id: str) -> Path:
    """A small copy of the thumbnail for the Dagster UI."""
    return store.final_dir(job_id) / "thumbnail_preview.jpg"


def video_record_path(store: ArtifactStore, job_id: str) -> Path:
    return store.final_dir(job_id) / "video.json"


def read_job(store: ArtifactStore, job_id: str) -> JobSpec:
    return store.read(job_path(store, job_id), JobSpec)


def read_storyboard(store: ArtifactStore, job_id: str) -> Storyboard:
    return store.read(storyboard_path(store, job_id), Storyboard)


def checks_path(store: ArtifactStore, job_id: str) -> Path:
    """The quality checks of the job's final video (spec 7), for the API: written by checks.py."""
    return store.final_dir(job_id) / "checks.json"
