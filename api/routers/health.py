"""GET /health: for load balancers and people; needs no key, shows internal URLs only with it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import dagster
from fastapi import APIRouter, Request

from .. import worker
from ..dependencies import RuntimeDep, has_key
from ..engines import engines
from ..schemas import HealthResponse

router = APIRouter(tags=["service"])


def package_version() -> str:
    try:
        return version("sparklio-studio")
    except PackageNotFoundError:
        return "0+unknown"


@router.get("/health", response_model=HealthResponse, summary="Service health")
def health(request: Request, runtime: RuntimeDep) -> HealthResponse:
    """Whether the Dagster instance answers and ffmpeg is there, and the engines each stage would
    use. Engine URLs are shown only to a caller with the API key (or when the server has none)."""
    instance = runtime.instance
    info: dict = {"run_storage": type(instance.run_storage).__name__,
                  "event_log_storage": type(instance.event_log_storage).__name__}
    try:
        info["runs"] = instance.get_runs_count()
        info["reachable"] = True
    except Exception as error:  # report, don't fail: that is what a health check is for
        info["reachable"], info["error"] = False, type(error).__name__
    settings = runtime.settings
    # the header is read by hand: declared as Security, the schema would ask every caller for it
    found = engines(show_urls=not settings.api_key or has_key(settings, request.headers.get("x-api-key")))
    ffmpeg_ok = all(e.available for e in found if e.stage == "assembly")
    busy = worker.busy_slots(runtime.store.folder)
    ok = info["reachable"] and ffmpeg_ok
    return HealthResponse(status="ok" if ok else "degraded", version=package_version(),
                          dagster_version=dagster.__version__, instance=info, engines=found,
                          auth="api_key" if settings.api_key else "none", workers_running=busy)
