"""The artifact store: where a job's media lives on disk, one folder per job.

    <home>/jobs/<job_id>/job.json                     the request (brief, brand, quality)
                         storyboard.json
                         scenes/<scene_id>/key.png, key_preview.jpg, overlay.png, motion.json, preview.webp, clip.mp4
                         audio/soundtrack.wav, soundtrack.json, voice/<hash>.speech.wav, voice/<scene>.wav
                         final/ad.mp4, thumbnail.jpg, preview.webp, video.json

Every write goes to a temporary file in the same folder and is renamed into place when complete
(sparklio_assets/files.py), so readers (the UI, the API, the next asset) only ever see whole files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from dagster import ConfigurableResource
from pydantic import BaseModel, Field

from sparklio_assets.files import write_model

M = TypeVar("M", bound=BaseModel)


MEDIA_URL_ENV = "SPARKLIO_MEDIA_URL"
MEDIA_PORT = 3001  # `sparklio ui` serves the media folder here, beside the Dagster UI on 3000


def default_home() -> str:
    return os.environ.get("SPARKLIO_HOME") or str(Path.home() / ".sparklio")


def default_media_url() -> str:
    return os.environ.get(MEDIA_URL_ENV) or f"http://127.0.0.1:{MEDIA_PORT}"


class ArtifactStore(ConfigurableResource):
    """Media files of every job under one home folder (SPARKLIO_HOME, default ~/.sparklio)."""

    home: str = Field(default="", description="empty: $SPARKLIO_HOME when used, else ~/.sparklio")
    media_url: str = Field(default="", description="where the media folder's previews and videos are served "
                                                   "for the Dagster UI (`sparklio ui` serves them); empty: "
                                                   f"${MEDIA_URL_ENV} when used, else http://127.0.0.1:{MEDIA_PORT}")

    @property
    def folder(self) -> Path:
        """The home folder. Resolved when used, not when the resource is built: Definitions are
        built at import, before a CLI option, an API setting or a test has set SPARKLIO_HOME."""
        return Path(self.home or default_home()).expanduser().resolve()

    @property
    def root(self) -> Path:
        return self.folder / "jobs"

    def job_dir(self, job_id: str) -> Path:
        path = (self.root / job_id).resolve()
        if path.parent != self.root:
            raise ValueError(f"job_id {job_id!r} is not a plain folder name")
        return path

    def scene_dir(self, job_id: str, scene_id: str) -> Path:
        return self.job_dir(job_id) / "scenes" / scene_id

    def final_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "final"

    def url(self, path: Path) -> str:
        """The URL a browser reaches a file of the store at (media_url + its path under jobs/)."""
        base = (self.media_url or default_media_url()).rstrip("/")
        return f"{base}/{quote(path.resolve().relative_to(self.root).as_posix())}"

    def read(self, path: Path, model: type[M]) -> M:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist yet: materialize the upstream asset first")
        return model.model_validate_json(path.read_text(encoding="utf-8"))

    def write(self, path: Path, model: BaseModel) -> Path:
        """The model as JSON at path (inside the store), written atomically."""
        return write_model(path, model)

    def contains(self, path: Path) -> bool:
        """True when path is inside the store (for serving files without escaping it)."""
        try:
            path.resolve().relative_to(self.root)
            return True
        except ValueError:
            return False
