"""What the routes share, as FastAPI dependencies: the settings, the artifact store, the Dagster
instance, the API key check, the job a path names, and the URLs handed out. The app factory puts
the objects on `app.state`; routes ask for them here, so a test can swap any of them."""

from __future__ import annotations

import hmac
import os
import threading
from dataclasses import dataclass, field
from typing import Annotated

from dagster import DagsterInstance, Definitions
from fastapi import Depends, HTTPException, Request, Security
from fastapi import Path as PathParam

from resources.artifacts import ArtifactStore

from . import jobs
from .security import api_key_header, sign, signed_ok
from .settings import Settings

JobId = Annotated[str, PathParam(description="the job id (= storyboard_id)", examples=["3f9a1c2b7d4e"])]


@dataclass
class Runtime:
    """The process-wide objects the app factory makes once."""

    settings: Settings
    store: ArtifactStore
    instance: DagsterInstance
    dagster_home: str
    defs: Definitions  # what the in-process storyboard run materializes
    storyboard_lock: threading.Lock = field(default_factory=threading.Lock)  # one in-process storyboard at a time
    launch_lock: threading.Lock = field(default_factory=threading.Lock)  # check-then-launch is atomic
    streams: int = 0  # open event streams

    def worker_env(self) -> dict[str, str]:
        return {**os.environ, "SPARKLIO_HOME": str(self.store.folder), "DAGSTER_HOME": self.dagster_home}


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


def get_store(request: Request) -> ArtifactStore:
    return request.app.state.runtime.store


def get_instance(request: Request) -> DagsterInstance:
    return request.app.state.runtime.instance


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
InstanceDep = Annotated[DagsterInstance, Depends(get_instance)]


def has_key(settings: Settings, key: str | None) -> bool:
    return bool(settings.api_key) and key is not None and hmac.compare_digest(key.encode(), settings.api_key.encode())


async def require_api_key(request: Request, settings: SettingsDep, key: str | None = Security(api_key_header)) -> None:
    """The X-API-Key header, or a signed URL for GET/HEAD. Mounted only when the server has a key,
    so the OpenAPI schema asks for the header only then."""
    if not settings.api_key or has_key(settings, key):
        return
    if request.method in ("GET", "HEAD") and signed_ok(settings, request):
        return
    raise HTTPException(401, detail="missing or wrong X-API-Key header (or an expired signed URL)",
                        headers={"WWW-Authenticate": "APIKey"})


def load_job(runtime: Runtime, job_id: str) -> jobs.Job:
    try:
        return jobs.load(job_id, runtime.store, runtime.instance)
    except jobs.NotFound as error:
        raise HTTPException(404, detail=str(error)) from None


def existing_job(job_id: JobId, runtime: RuntimeDep) -> jobs.Job:
    return load_job(runtime, job_id)


JobDep = Annotated[jobs.Job, Depends(existing_job)]


@dataclass
class Links:
    """Absolute URLs for paths of this API: SPARKLIO_PUBLIC_URL, else the request's own host."""

    settings: Settings
    base: str

    def __call__(self, path: str, signed: bool = False) -> str:
        return f"{self.base}{path}{sign(self.settings, path) if signed else ''}"


def get_links(request: Request, settings: SettingsDep) -> Links:
    return Links(settings, settings.public_url or str(request.base_url).rstrip("/"))


LinksDep = Annotated[Links, Depends(get_links)]
