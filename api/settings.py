"""API settings, read from the environment once per app.

    SPARKLIO_API_KEY          when set, every /video/* request needs `X-API-Key: <key>` (or a signed URL)
    SPARKLIO_CORS_ORIGINS     comma-separated origins allowed to call the API from a browser ("*" = any)
    SPARKLIO_MAX_BODY_BYTES   request body limit, default 65536 (larger bodies get 413)
    SPARKLIO_PUBLIC_URL       base of the URLs the API hands out (default: the request's own host)
    SPARKLIO_URL_TTL          seconds a signed download / events URL stays valid, default 86400
    SPARKLIO_HOME, DAGSTER_HOME   media folder and Dagster instance (see resources/artifacts.py)
    SPARKLIO_MAX_WORKERS      renders that run at once; more requests wait as `queued` (default 2)
    SPARKLIO_MAX_QUEUED       jobs that may wait for a worker; beyond it generate answers 429 (default 8)
    SPARKLIO_MAX_STREAMS      event streams open at once; beyond it 429 (default 64)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 64 * 1024
    max_upload_bytes: int = 20 * 1024 * 1024  # POST /brands: a kit with its logo, packshots and fonts
    public_url: str | None = None
    url_ttl_seconds: int = 24 * 3600
    events_interval_seconds: float = 1.0
    max_queued: int = 8
    max_streams: int = 64
    retry_after_seconds: int = 30
    home: str | None = field(default=None, metadata={"doc": "media folder; default $SPARKLIO_HOME or ~/.sparklio"})

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        env = os.environ
        origins = tuple(o.strip().rstrip("/") for o in env.get("SPARKLIO_CORS_ORIGINS", "").split(",") if o.strip())
        values = dict(
            api_key=env.get("SPARKLIO_API_KEY") or None,
            cors_origins=origins,
            max_body_bytes=int(env.get("SPARKLIO_MAX_BODY_BYTES") or 64 * 1024),
            max_upload_bytes=int(env.get("SPARKLIO_MAX_UPLOAD_BYTES") or 20 * 1024 * 1024),
            public_url=(env.get("SPARKLIO_PUBLIC_URL") or "").rstrip("/") or None,
            url_ttl_seconds=int(env.get("SPARKLIO_URL_TTL") or 24 * 3600),
            max_queued=int(env.get("SPARKLIO_MAX_QUEUED") or 8),
            max_streams=int(env.get("SPARKLIO_MAX_STREAMS") or 64),
        )
        values.update(overrides)
        return cls(**values)
