"""The artifact store: where a job's media lives on disk, one folder per job.

    <home>/jobs/<job_id>/job.json                     the request (brief, brand, quality)
                         storyboard.json
                         scenes/<scene_id>/key.png, overlay.png, motion.json, preview.gif, clip.mp4
                         audio/soundtrack.wav, soundtrack.json, voice/<hash>.speech.wav, voice/<scene>.wav
                         final/ad.mp4, final/thumbnail.jpg, final/video.json

Every write goes to a temporary file in the same folder and is renamed into place when complete,
so readers (the UI, the API, the next asset) only ever see whole files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from dagster import ConfigurableResource
from pydantic import BaseModel, Field

M = TypeVar("M", bound=BaseModel)


def default_home() -> str:
    return os.environ.get("SPARKLIO_HOME") or str(Path.home() / ".sparklio")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it vanishes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600: every output file gets the same mode as ffmpeg's
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_model(path: Path, model: BaseModel) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(model.model_dump_json(indent=2), encoding="utf-8")
    return path


class ArtifactStore(ConfigurableResource):
    """Media files of every job under one home folder (SPARKLIO_HOME, default ~/.sparklio)."""

    home: str = Field(default="", description="empty: $SPARKLIO_HOME when used, else ~/.sparklio")

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

    def read(self, path: Path, model: type[M]) -> M:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist yet: materialize the upstream asset first")
        return model.model_validate_json(path.read_text(encoding="utf-8"))

    def contains(self, path: Path) -> bool:
        """True when path is inside the store (for serving files without escaping it)."""
        try:
            path.resolve().relative_to(self.root)
            return True
        except ValueError:
            return False
