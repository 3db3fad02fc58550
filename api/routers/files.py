"""Downloads: the MP4, its renditions and the thumbnail, with HTTP range requests. Only the
files named here are served, and only from inside the media folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from resources.artifacts import ArtifactStore
from sparklio_assets import store_paths as layout
from sparklio_assets.formats import MASTER, SIZES

from .. import jobs
from ..dependencies import JobId, StoreDep
from .responses import NOT_FOUND

router = APIRouter(prefix="/video", tags=["video"])

FILES = {"ad.mp4": ("video/mp4", layout.video_path), "thumbnail.jpg": ("image/jpeg", layout.thumbnail_path),
         **{layout.rendition_name(fmt): ("video/mp4",
                                         lambda store, job_id, fmt=fmt: layout.rendition_path(store, job_id, fmt))
            for fmt in SIZES if fmt != MASTER}}
FileName = Annotated[str, PathParam(description="ad.mp4, thumbnail.jpg, or a rendition (ad_4x5.mp4, ad_1x1.mp4, "
                                                "ad_16x9.mp4) when the brief's channels asked for it",
                                    examples=["ad.mp4"])]
HEADERS = {"Cache-Control": "no-cache"}


def media_file(store: ArtifactStore, job_id: str, name: str) -> tuple[Path, str]:
    if name not in FILES or not jobs.JOB_ID.match(job_id):
        raise HTTPException(404, detail=f"no file {name!r} for job {job_id!r}")
    media_type, where = FILES[name]
    path = where(store, job_id)
    if not store.contains(path) or not path.is_file():
        raise HTTPException(404, detail=f"job {job_id} has no {name} (yet)")
    return path.resolve(), media_type


@router.get("/files/{job_id}/{name}", response_class=FileResponse, summary="Download the MP4 or thumbnail",
            responses={**NOT_FOUND, 200: {"content": {"video/mp4": {}, "image/jpeg": {}}, "description": "the file"},
                       206: {"description": "the requested byte range (`Range: bytes=...`)"},
                       416: {"description": "range not satisfiable"}})
def download(job_id: JobId, name: FileName, store: StoreDep):
    """Supports HTTP range requests (206 Partial Content), so a browser's `<video>` can seek."""
    path, media_type = media_file(store, job_id, name)
    return FileResponse(path, media_type=media_type, filename=f"{job_id}-{name}", content_disposition_type="inline",
                        headers=HEADERS)


@router.head("/files/{job_id}/{name}", include_in_schema=False)
def download_head(job_id: str, name: str, store: StoreDep):
    path, media_type = media_file(store, job_id, name)
    return FileResponse(path, media_type=media_type, headers=HEADERS)
