"""The REST API (spec section 4), backed by the Dagster instance.

    uvicorn api.app:create_app --factory      or      sparklio serve [--host H --port P]

Laid out as FastAPI's "bigger applications": this factory only assembles; the routes live in
`api/routers/` (one module per area), what they share in `api/dependencies.py`, the error bodies
in `api/errors.py`, and a job's status is the pure function `api/status.status`. Jobs are Dagster
runs tagged `sparklio/job_id` (visible in the Dagster UI); the storyboard is materialized during
`POST /video/storyboard`, everything after it by a detached `sparklio run-job` worker. Status,
progress and failures are read back from the instance, so restarting the API loses nothing.
Settings: see api/settings.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dagster import DagsterInstance
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from resources.artifacts import ArtifactStore
from sparklio_assets.pipeline import ensure_dagster_home

from . import docs, errors
from .dependencies import Runtime, require_api_key
from .routers import brands, events, files, health, video
from .routers.health import package_version
from .routers.responses import DISK_FULL, INVALID, UNAUTHORIZED
from .schemas import Problem, ValidationProblem
from .settings import Settings

DESCRIPTION = ("Brief in, vertical ad out (spec section 4). Every stage is a Dagster run tagged "
               "`sparklio/job_id`; see them in the Dagster UI. Flow: `POST /video/storyboard` → "
               "`POST /video/generate` → `GET /video/status/{job_id}` (or the event stream) → "
               "`GET /video/result/{job_id}` → download `video_url`.")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    store = ArtifactStore(**({"home": settings.home} if settings.home else {}))
    if settings.home:  # the in-process storyboard run reads the media folder from the environment
        os.environ["SPARKLIO_HOME"] = str(store.folder)
    dagster_home = ensure_dagster_home(store.folder)
    # Imported here, not at the top: the Definitions read the settings file and the executor from
    # the environment as they are built, which `sparklio serve --config` sets just before this.
    from sparklio_assets.definitions import defs

    runtime = Runtime(settings=settings, store=store, instance=DagsterInstance.get(), dagster_home=str(dagster_home),
                      defs=defs)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        runtime.instance.dispose()

    app = FastAPI(title="Sparklio Studio API", version=package_version(), description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime

    # Added first = innermost: CORS wraps the body check, so its 413s and 422s carry CORS headers too.
    app.add_middleware(errors.BodyCheck, max_body_bytes=settings.max_body_bytes,
                       uploads=("/brands", settings.max_upload_bytes))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=["*"] if "*" in settings.cors_origins else list(settings.cors_origins),
            allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
            allow_headers=["X-API-Key", "Content-Type", "Range", "Last-Event-ID", "Cache-Control"],
            expose_headers=["Content-Range", "Accept-Ranges", "Content-Length", "ETag", "Last-Modified", "Retry-After"])
    errors.install(app)

    # The key is part of the schema (and checked) only when the server has one.
    keyed = {"dependencies": [Depends(require_api_key)], "responses": {**UNAUTHORIZED}} if settings.api_key else {}
    app.include_router(health.router, responses={**DISK_FULL})
    for area in (video.router, files.router, events.router, brands.router):
        app.include_router(area, **{**keyed, "responses": {**keyed.get("responses", {}), **INVALID, **DISK_FULL}})
    docs.mount(app)
    app.openapi = _openapi(app)
    return app


def _openapi(app: FastAPI):
    default = app.openapi

    def openapi() -> dict:
        """The generated schema plus the error bodies that `responses.json_error` refers to."""
        if app.openapi_schema is None:
            schema = default()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Problem, ValidationProblem):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
