"""The API key and signed URLs.

With SPARKLIO_API_KEY set, each /video/* request carries `X-API-Key`. A browser cannot add a
header to `<video src>` or `new EventSource(url)`, so the download and event-stream URLs the API
hands out carry an expiring HMAC signature instead (`?expires=...&sig=...`) that is good for
that one path only.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from .settings import Settings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Needed when the server sets SPARKLIO_API_KEY.")


def _signature(key: str, path: str, expires: int) -> str:
    return hmac.new(key.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def sign(settings: Settings, path: str) -> str:
    """Query string (with leading '?') that authorizes GET `path` without the header; '' without a key."""
    if not settings.api_key:
        return ""
    expires = int(time.time()) + settings.url_ttl_seconds
    return "?" + urlencode({"expires": expires, "sig": _signature(settings.api_key, path, expires)})


def _signed_ok(settings: Settings, request: Request) -> bool:
    expires, sig = request.query_params.get("expires"), request.query_params.get("sig")
    if not (expires and sig and expires.isdigit()) or int(expires) < time.time():
        return False
    return hmac.compare_digest(sig, _signature(settings.api_key, request.url.path, int(expires)))


async def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> None:
    settings: Settings = request.app.state.settings
    if not settings.api_key:
        return
    if key is not None and hmac.compare_digest(key.encode(), settings.api_key.encode()):
        return
    if request.method in ("GET", "HEAD") and _signed_ok(settings, request):
        return
    raise HTTPException(401, detail="missing or wrong X-API-Key header (or an expired signed URL)",
                        headers={"WWW-Authenticate": "APIKey"})
