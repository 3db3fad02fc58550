"""The REST API (spec section 4), backed by the Dagster instance.

    uvicorn api.app:create_app --factory      or      sparklio serve [--host H --port P]

Jobs are Dagster runs tagged `sparklio/job_id` (visible in the Dagster UI); the storyboard is
materialized during `POST /video/storyboard`, everything after it by a detached `sparklio run-job`
worker. Status, progress and failures are read back from the instance, so restarting the API
loses nothing. Settings: see api/settings.py.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError

from resources.artifacts import ArtifactStore
from sparklio_assets.files import write_model
from resources.tts import TTSResource
from sparklio_assets import store_paths as layout
from sparklio_assets.checks import read_report
from sparklio_assets.formats import MASTER, SIZES
from sparklio_assets.models import JobSpec, Storyboard

from . import jobs, worker
from .schemas import (
    TERMINAL,
    EngineInfo,
    FieldError,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    NotReady,
    Problem,
    ResultMetadata,
    ResultResponse,
    SceneEdit,
    StatusResponse,
    StoryboardRequest,
    StoryboardResponse,
    ValidationProblem,
)
from .security import require_api_key, sign
from .settings import Settings

FILES = {"ad.mp4": ("video/mp4", layout.video_path), "thumbnail.jpg": ("image/jpeg", layout.thumbnail_path),
         **{layout.rendition_name(fmt): ("video/mp4", lambda store, job_id, fmt=fmt: layout.rendition_path(store, job_id, fmt))
            for fmt in SIZES if fmt != MASTER}}
NO_CLOUD = "no cloud engine is configured on this server; the built-in engines make the video"
CLOUD_ENGINES = ("openai", "anthropic", "comfyui")


def _engines() -> list[EngineInfo]:
    """Which engines this server's workers would use: configuration only (not probed), read the
    same way the Dagster resources read it at run time."""
    from resources.comfyui import ComfyUIResource
    from resources.ffmpeg import FFmpegRunner
    from resources.llm.router import LLMRouter

    try:
        ffmpeg = FFmpegRunner().exe()
        ffmpeg_ok = Path(ffmpeg).is_file()
    except Exception:  # report, don't fail: the health check shows it
        ffmpeg, ffmpeg_ok = "", False

    router = LLMRouter()
    off = router.disabled()
    engines = [EngineInfo(stage="storyboard", name="builtin", available=True,
                          detail="five-act planner; the last fallback of the LLM router")]
    for provider in router.providers().values():
        why = off or provider.unavailable
        engines.append(EngineInfo(stage="storyboard", name=provider.label, available=not why,
                                  detail=why or "configured (not probed)"))
    comfy = ComfyUIResource().base_url
    comfy_detail = comfy or "SPARKLIO_COMFYUI_URL not set: standard/premium jobs use the built-in engines"
    tts = TTSResource()
    no_tts = tts.unavailable()
    return engines + [
        EngineInfo(stage="image", name="builtin", available=True, detail="brand-colour key images (draft quality)"),
        EngineInfo(stage="image", name="comfyui", available=bool(comfy), detail=comfy_detail),
        EngineInfo(stage="motion", name="kenburns", available=True, detail="Ken Burns per motion style; the fallback"),
        EngineInfo(stage="motion", name="animatediff", available=bool(comfy), detail=comfy_detail),
        EngineInfo(stage="music", name="builtin synth", available=True, detail="music bed per bgm_mood"),
        EngineInfo(stage="narration", name=tts.engine, available=not no_tts,
                   detail=f"{no_tts}: ads get music only" if no_tts else "configured (not probed)"),
        EngineInfo(stage="assembly", name="ffmpeg", available=ffmpeg_ok, detail=Path(ffmpeg).name),
    ]



def _json(model: type, description: str) -> dict:
    """A JSON error response, also on routes whose success is not JSON (files, event stream)."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}


ERRORS = {401: _json(Problem, "X-API-Key missing or wrong (when the server has a key)"),
          422: _json(ValidationProblem, "a field is invalid; `detail` names it and the reason")}
NOT_FOUND = {404: _json(Problem, "no such job (or scene)")}
BODY = {400: _json(Problem, "the body could not be read (not UTF-8)"),
        413: _json(Problem, "request body over the limit")}
BUSY = {409: _json(Problem, "the job is not in a state that allows this")}


JobId = Annotated[str, PathParam(description="the job id (= storyboard_id)", examples=["3f9a1c2b7d4e"])]
SceneId = Annotated[str, PathParam(description="scene_001 ...", examples=["scene_003"])]
FileName = Annotated[str, PathParam(description="ad.mp4, thumbnail.jpg, or a rendition (ad_4x5.mp4, ad_1x1.mp4, "
                                                "ad_16x9.mp4) when the brief's channels asked for it",
                                    examples=["ad.mp4"])]
Interval = Annotated[float, Query(ge=0.2, le=30, description="seconds between checks")]


def _package_version() -> str:
    try:
        return version("sparklio-studio")
    except PackageNotFoundError:
        return "0+unknown"


def _field_errors(errors: list[dict], skip_body_root: bool = True) -> list[FieldError]:
    out = []
    for item in errors:
        loc = [str(p) for p in item.get("loc", ())]
        where = loc[0] if loc and loc[0] in ("body", "path", "query", "header", "cookie") else "body"
        parts = loc[1:] if loc and loc[0] == where else loc
        message = item.get("msg", "invalid").removeprefix("Value error, ")
        raw = item.get("input")
        if item.get("type") not in ("missing", "extra_forbidden", "json_invalid") and raw is not None \
                and not isinstance(raw, (dict, list)) and len(repr(raw)) <= 80:
            message += f" (got {raw!r})"
        if item.get("type") == "json_invalid":
            parts, message = [], f"body is not valid JSON: {item.get('ctx', {}).get('error', message)}"
        out.append(FieldError(field=".".join(parts) or "(body)", location=where, reason=message))
    return out


def _problem_422(errors: list[FieldError]) -> JSONResponse:
    body = ValidationProblem(detail="; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)
    return JSONResponse(body.model_dump(), status_code=422)


class BodyLimit:
    """413 with a JSON body when a request body is over the limit: at once for a declared
    Content-Length, else as soon as the bytes received pass it (chunked uploads)."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    def _problem(self, size: str) -> str:
        return f"request body is {size} bytes; the limit is {self.max_body_bytes}"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            body = Problem(detail=self._problem(str(int(length))))
            await JSONResponse(body.model_dump(), status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:  # an HTTPException: FastAPI answers it as JSON
                    raise HTTPException(413, detail=self._problem(f"over {self.max_body_bytes}"))
            return message

        await self.app(scope, counted, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    from dagster import DagsterInstance

    from sparklio_assets.pipeline import ensure_dagster_home

    store = ArtifactStore(**({"home": settings.home} if settings.home else {}))
    dagster_home = ensure_dagster_home(store.folder)
    instance = DagsterInstance.get()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        instance.dispose()

    app = FastAPI(
        title="Sparklio Studio API", version=_package_version(), lifespan=lifespan,
        description="Brief in, vertical ad out (spec section 4). Every stage is a Dagster run tagged "
                    "`sparklio/job_id`; see them in the Dagster UI. Flow: `POST /video/storyboard` → "
                    "`POST /video/generate` → `GET /video/status/{job_id}` (or the event stream) → "
                    "`GET /video/result/{job_id}` → download `video_url`.")
    app.state.settings = settings
    app.state.store = store
    app.state.instance = instance
    storyboard_lock = threading.Lock()  # one in-process storyboard run at a time
    launch_lock = threading.Lock()

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=["*"] if "*" in settings.cors_origins else list(settings.cors_origins),
            allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
            allow_headers=["X-API-Key", "Content-Type", "Range", "Last-Event-ID", "Cache-Control"],
            expose_headers=["Content-Range", "Accept-Ranges", "Content-Length", "ETag", "Last-Modified"])

    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return _problem_422(_field_errors(list(error.errors())))

    def url(request: Request, path: str, signed: bool = False) -> str:
        base = settings.public_url or str(request.base_url).rstrip("/")
        return f"{base}{path}{sign(settings, path) if signed else ''}"

    def load(job_id: str) -> jobs.Job:
        try:
            return jobs.load(job_id, store, instance)
        except jobs.NotFound as error:
            raise HTTPException(404, detail=str(error)) from None

    def existing_job(job_id: JobId) -> jobs.Job:
        return load(job_id)

    def worker_env() -> dict[str, str]:
        return {**os.environ, "SPARKLIO_HOME": str(store.folder), "DAGSTER_HOME": str(dagster_home)}

    def estimate(plan: Storyboard) -> int:
        return round(jobs.expected_total_s(plan) * jobs.instance_pace(instance, store))

    @app.get("/health", response_model=HealthResponse, tags=["service"], summary="Service health")
    def health() -> HealthResponse:
        import dagster

        info: dict = {"run_storage": type(instance.run_storage).__name__,
                      "event_log_storage": type(instance.event_log_storage).__name__}
        try:
            info["runs"] = instance.get_runs_count()
            info["reachable"] = True
        except Exception as error:  # report, don't fail: that is what a health check is for
            info["reachable"], info["error"] = False, type(error).__name__
        engines = _engines()
        ffmpeg_ok = all(e.available for e in engines if e.stage == "assembly")
        busy = worker.busy_slots(store.folder)
        ok = info["reachable"] and ffmpeg_ok
        return HealthResponse(status="ok" if ok else "degraded", version=_package_version(),
                              dagster_version=dagster.__version__, instance=info, engines=engines,
                              auth="api_key" if settings.api_key else "none", workers_running=busy)

    video = APIRouter(prefix="/video", tags=["video"], dependencies=[Depends(require_api_key)],
                      responses={**ERRORS})

    @video.post("/storyboard", response_model=StoryboardResponse, responses={**BODY},
                summary="Brief → storyboard (spec 4.1)")
    def make_storyboard(request: Request, body: StoryboardRequest) -> StoryboardResponse:
        """Creates a job and materializes its `storyboard` asset (a Dagster run tagged with the job
        id). The returned `storyboard_id` is the job id used by every other endpoint."""
        from sparklio_assets.definitions import defs
        from sparklio_assets.pipeline import PipelineError, create_job, make_storyboard

        spec = JobSpec(brief=body.brief(), brand=body.brand_kit(), quality="standard")
        spec = create_job(spec, instance, store)
        try:
            with storyboard_lock:
                run_id = make_storyboard(spec.job_id, defs, instance, store)
        except PipelineError as error:
            raise HTTPException(500, detail=str(error)) from None
        plan = layout.read_storyboard(store, spec.job_id)
        return StoryboardResponse(storyboard_id=spec.job_id, storyboard=plan, estimated_cost=jobs.total_cost(plan),
                                  estimated_time=estimate(plan), dagster_run_id=run_id,
                                  status_url=url(request, f"/video/status/{spec.job_id}"))

    def launch(request: Request, job: jobs.Job, kind: str, args: list[str], scene_id: str | None,
               warnings: list[str]) -> GenerateResponse:
        try:
            worker.launch(job.dir, kind, args, worker_env(), scene_id=scene_id)
        except worker.WorkerBusy as error:
            raise HTTPException(409, detail=str(error)) from None
        if job.plan is None:
            seconds = 60
        elif kind == "regenerate":
            scene = job.plan.scene(scene_id)
            seconds = jobs.STARTUP_S + jobs.expected_scene_s(scene.frames) + jobs.expected_final_s(
                sum(s.frames for s in job.plan.scenes))
            seconds *= jobs.instance_pace(instance, store)
        else:
            seconds = estimate(job.plan)
        events = f"/video/events/{job.job_id}"
        return GenerateResponse(
            job_id=job.job_id, status="queued",
            estimated_completion=datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=round(seconds)),
            status_url=url(request, f"/video/status/{job.job_id}"), events_url=url(request, events, signed=True),
            warnings=warnings)

    def ensure_idle(job: jobs.Job) -> None:
        current = jobs.status(job)
        if current.status in ("queued", "processing"):
            raise HTTPException(409, detail=f"job {job.job_id} is already {current.status} "
                                            f"({current.current_step}); cancel it first or wait")

    @video.post("/generate", response_model=GenerateResponse, status_code=202, responses={**NOT_FOUND, **BUSY, **BODY},
                summary="Storyboard → video, in a detached worker (spec 4.2)")
    def generate(request: Request, body: GenerateRequest) -> GenerateResponse:
        """Records the engine preference and quality in the job and starts `sparklio run-job` in its
        own process group; it materializes each scene and the final video as Dagster runs. Calling
        it again for a failed or canceled job makes the video again."""
        with launch_lock:
            job = load(body.storyboard_id)
            if job.plan is None:
                raise HTTPException(409, detail=f"job {job.job_id} has no storyboard yet")
            ensure_idle(job)
            jobs.write_spec(job, quality=body.quality, engine_preference=body.engine_preference)
            cloud = [e for e in _engines() if e.available and e.name.split(":")[0] in CLOUD_ENGINES]
            warnings = [NO_CLOUD] if body.engine_preference in ("cloud", "hybrid") and not cloud else []
            return launch(request, job, "generate", [job.job_id], None, warnings)

    @video.get("/status/{job_id}", response_model=StatusResponse, responses={**NOT_FOUND},
               summary="Progress of a job (spec 4.3)")
    def get_status(job_id: JobId) -> StatusResponse:
        """Derived from the job's Dagster runs: `storyboard_ready` (generate not called yet),
        `queued`, `processing`, `completed`, `failed` (with `error`: stage, step, reason) or `canceled`."""
        return jobs.status(load(job_id))

    @video.get("/result/{job_id}", response_model=ResultResponse,
               responses={**NOT_FOUND, 409: {"model": NotReady, "description": "the video is not finished"}},
               summary="The finished video (spec 4.4)")
    def get_result(request: Request, job_id: JobId):
        job = load(job_id)
        current = jobs.status(job)
        if current.status != "completed":
            earlier = url(request, f"/video/files/{job_id}/ad.mp4", signed=True) if job.has_video() else None
            reason = f": {current.error.reason}" if current.error else ""
            body = NotReady(detail=f"job {job_id} is {current.status}{reason}", job_id=job_id, status=current.status,
                            progress=current.progress, video_url=earlier)
            return JSONResponse(body.model_dump(mode="json"), status_code=409)
        record = jobs.video_record(job)
        checks = read_report(store, job_id)
        return ResultResponse(
            job_id=job_id, video_url=url(request, f"/video/files/{job_id}/ad.mp4", signed=True),
            thumbnail_url=url(request, f"/video/files/{job_id}/thumbnail.jpg", signed=True),
            metadata=ResultMetadata(duration=record.duration, resolution=record.resolution,
                                    scenes_count=record.scenes_count, total_cost=jobs.total_cost(job.plan, record),
                                    generation_time=jobs.generation_time(job), engines=record.engines, fps=record.fps,
                                    bitrate=record.bitrate, size_bytes=record.size_bytes,
                                    checks=checks, audio=record.audio,
                                    renditions={fmt: url(request, f"/video/files/{job_id}/{layout.rendition_name(fmt)}",
                                                         signed=True) for fmt in record.renditions}))

    def media_file(job_id: str, name: str) -> tuple[Path, str]:
        if name not in FILES or not jobs.JOB_ID.match(job_id):
            raise HTTPException(404, detail=f"no file {name!r} for job {job_id!r}")
        media_type, where = FILES[name]
        path = where(store, job_id)
        if not store.contains(path) or not path.is_file():
            raise HTTPException(404, detail=f"job {job_id} has no {name} (yet)")
        return path.resolve(), media_type

    @video.get("/files/{job_id}/{name}", response_class=FileResponse, summary="Download the MP4 or thumbnail",
               responses={**NOT_FOUND, 200: {"content": {"video/mp4": {}, "image/jpeg": {}},
                                             "description": "the file"},
                          206: {"description": "the requested byte range (`Range: bytes=...`)"},
                          416: {"description": "range not satisfiable"}})
    def download(job_id: JobId, name: FileName):
        """Supports HTTP range requests (206 Partial Content), so a browser's `<video>` can seek."""
        path, media_type = media_file(job_id, name)
        return FileResponse(path, media_type=media_type, filename=f"{job_id}-{name}", content_disposition_type="inline",
                            headers={"Cache-Control": "no-cache"})

    @video.head("/files/{job_id}/{name}", include_in_schema=False)
    def download_head(job_id: str, name: str):
        path, media_type = media_file(job_id, name)
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})

    @video.post("/cancel/{job_id}", response_model=StatusResponse, responses={**NOT_FOUND, **BUSY},
                summary="Cancel a queued or running job")
    def cancel(job_id: JobId) -> StatusResponse:
        """Kills the job's worker (its whole process group), marks its unfinished Dagster runs
        CANCELED and reports `canceled`. A video the job already had is kept."""
        with launch_lock:
            job = load(job_id)
            current = jobs.status(job)
            if current.status == "canceled":
                return current
            if current.status not in ("queued", "processing"):
                raise HTTPException(409, detail=f"job {job_id} is {current.status}; there is nothing to cancel")
            if job.record is None:
                raise HTTPException(409, detail=f"job {job_id} is run by another process (the sparklio CLI), "
                                                "not by this API; stop it there")
            job.record.canceled_at = datetime.now(timezone.utc).isoformat()
            worker.write_record(job.dir, job.record)
            worker.kill(job.dir, job.record)
            jobs.cancel_runs(job, "canceled through the Sparklio API")
            worker.clean_partial_files(job.dir)
            return jobs.status(load(job_id))

    @video.post("/regenerate/{job_id}/scenes/{scene_id}", response_model=GenerateResponse, status_code=202,
                responses={**NOT_FOUND, **BUSY, **BODY}, summary="Re-make one scene and re-assemble")
    def regenerate(request: Request, job_id: JobId,
                   scene_id: SceneId,
                   edit: Annotated[SceneEdit | None, Body()] = None) -> GenerateResponse:
        """Re-makes one scene of a finished job (optionally with new copy, prompt or motion first)
        and re-assembles the video, in a detached worker. The other scenes are not touched."""
        with launch_lock:
            job = load(job_id)
            if job.plan is None or scene_id not in {s.id for s in job.plan.scenes}:
                raise HTTPException(404, detail=f"job {job_id} has no scene {scene_id!r}")
            ensure_idle(job)
            missing = [s.id for s in job.plan.scenes if s.id != scene_id
                       and not layout.motion_path(store, job_id, s.id).is_file()]
            if missing:
                raise HTTPException(409, detail=f"job {job_id}: scenes {', '.join(missing)} are not made yet; "
                                                "generate the video first")
            changes = edit.model_dump(exclude_none=True) if edit else {}
            if changes:
                data = job.plan.model_dump()
                index = [s.id for s in job.plan.scenes].index(scene_id)
                data["scenes"][index].update(changes)
                try:
                    plan = Storyboard.model_validate(data)
                except ValidationError as error:
                    return _problem_422([FieldError(field=e.field.replace(f"scenes.{index}.", ""), location="body",
                                                    reason=e.reason) for e in _field_errors(list(error.errors()))])
                write_model(layout.storyboard_path(store, job_id), plan)
                job.plan = plan
            return launch(request, job, "regenerate", [job_id, "--scene", scene_id], scene_id, [])

    @video.get("/events/{job_id}", response_class=EventSourceResponse, responses={**NOT_FOUND},
               summary="Progress as server-sent events")
    async def events(job_id: JobId, interval: Interval = 1.0,
                     _exists: jobs.Job = Depends(existing_job)) -> AsyncIterator[ServerSentEvent]:
        """`event: status` with a status snapshot (as `GET /video/status`) whenever it changes, until
        the job is completed, failed or canceled. `new EventSource(events_url)` in a page."""
        seen = None
        count = 0
        started = time.monotonic()
        while True:
            snapshot = await anyio.to_thread.run_sync(lambda: jobs.status(load(job_id)))
            if seen and snapshot.status in ("queued", "processing"):  # a progress bar never moves back
                snapshot.progress = max(snapshot.progress, seen[-1])
            key = (snapshot.status, snapshot.current_step, snapshot.current_scene, snapshot.scenes_completed,
                   round(snapshot.progress, 2))
            if key != seen:
                seen = key
                count += 1
                yield ServerSentEvent(data=snapshot.model_dump(mode="json"), event="status", id=str(count),
                                      retry=2000)
            if snapshot.status in TERMINAL or time.monotonic() - started > 3600:
                return
            await asyncio.sleep(interval)

    app.include_router(video)

    default_openapi = app.openapi

    def openapi() -> dict:
        """The generated schema plus the error bodies that `_json` refers to."""
        if app.openapi_schema is None:
            schema = default_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Problem, ValidationProblem):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
