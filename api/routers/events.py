"""GET /video/events/{job_id}: the job's status as server-sent events, for a progress bar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from .. import jobs
from ..dependencies import JobDep, RuntimeDep, load_job
from ..schemas import TERMINAL
from ..status import status
from .responses import NOT_FOUND, TOO_MANY

router = APIRouter(prefix="/video", tags=["video"])

Interval = Annotated[float, Query(ge=0.2, le=30, description="seconds between checks")]
MAX_STREAM_SECONDS = 3600


def stream_capacity(runtime: RuntimeDep) -> None:
    """429 before the stream starts when SPARKLIO_MAX_STREAMS streams are open (a dependency: once
    the generator runs, the response has begun)."""
    if runtime.streams >= runtime.settings.max_streams:
        raise HTTPException(429, detail=f"{runtime.streams} event streams are open (the limit is "
                                        f"{runtime.settings.max_streams}); poll /video/status or retry later",
                            headers={"Retry-After": str(runtime.settings.retry_after_seconds)})


@router.get("/events/{job_id}", response_class=EventSourceResponse, responses={**NOT_FOUND, **TOO_MANY},
            summary="Progress as server-sent events", dependencies=[Depends(stream_capacity)])
async def events(job: JobDep, runtime: RuntimeDep, interval: Interval = 1.0) -> AsyncIterator[ServerSentEvent]:
    """`event: status` with a status snapshot (as `GET /video/status`) whenever it changes, until
    the job is completed, failed or canceled (or an hour has passed). `new EventSource(events_url)`
    in a page. At most SPARKLIO_MAX_STREAMS streams are open at once; beyond that 429."""
    runtime.streams += 1
    try:
        seen = None
        count = 0
        started = time.monotonic()
        current = job
        while True:
            snapshot = jobs.remember_progress(current, status(current))
            if seen and snapshot.status in ("queued", "processing"):  # a progress bar never moves back
                snapshot.progress = max(snapshot.progress, seen[-1])
            key = (snapshot.status, snapshot.current_step, snapshot.current_scene, snapshot.scenes_completed,
                   round(snapshot.progress, 2))
            if key != seen:
                seen = key
                count += 1
                yield ServerSentEvent(data=snapshot.model_dump(mode="json"), event="status", id=str(count),
                                      retry=2000)
            if snapshot.status in TERMINAL or time.monotonic() - started > MAX_STREAM_SECONDS:
                return
            await asyncio.sleep(interval)
            current = await anyio.to_thread.run_sync(load_job, runtime, job.job_id)
    finally:
        runtime.streams -= 1
