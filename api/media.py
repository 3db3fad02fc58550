"""The media folder over HTTP for the Dagster UI: `sparklio ui` runs this beside `dagster dev`, and
the materializations' previews, key images, thumbnails and videos point here (ArtifactStore.url).

Why a server of its own rather than the API's /video/files: the UI shows small markdown inline
(under 1,000 characters; a data: URI only behind "[Show Markdown]"), so a preview must be a URL
that stays valid, and the API's file URLs are signed and expire when it has a key. This one is
read-only, serves pictures and videos only (never job.json, the storyboard or logs, never a
half-written `.part` file), never outside the store's jobs folder, and has no key, like the Dagster
UI it serves: it is bound to the same host as the UI."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

from resources.artifacts import ArtifactStore

MEDIA_TYPES = {".webp": "image/webp", ".jpg": "image/jpeg", ".png": "image/png", ".mp4": "video/mp4"}


def create_media_app(store: ArtifactStore | None = None) -> FastAPI:
    store = store or ArtifactStore()
    app = FastAPI(title="Sparklio media", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/{path:path}", response_class=FileResponse)
    def media(path: str):
        """A picture or video of a job; FileResponse answers Range requests, so a <video> can seek."""
        file = store.root / path
        media_type = MEDIA_TYPES.get(file.suffix.lower())
        if media_type is None or file.name.startswith(".") or not store.contains(file) or not file.is_file():
            raise HTTPException(404, detail=f"no picture or video at {path!r}")
        return FileResponse(file.resolve(), media_type=media_type, headers={"Cache-Control": "no-cache"})

    return app
