"""The API key and signed URLs.

With SPARKLIO_API_KEY set, each /video/* request carries `X-API-Key`. A browser cannot add a
header to `<video src>` or `new EventSource(url)`, so the download and event-stream URLs the API
hands out carry an expiring HMAC signature instead (`?expires=...&sig=...`) that is good for
that one path only. Anything that is not a well-formed signature is simply not one (401), never
an error of the server.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from urllib.parse import urlencode

from fastapi import Request
from fastapi.security import APIKeyHeader

from .settings import Settings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="Needed when the server sets SPARKLIO_API_KEY.")
EXPIRES = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also takes '²'
SIGNATURE = re.compile(r"[0-9a-f]{64}")  # hex SHA-256


def _signature(key: str, path: str, expires: int) -> str:
    return hmac.new(key.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def sign(settings: Settings, path: str) -> str:
    """Query string (with leading '?') that authorizes GET `path` without the header; '' without a key."""
    if not settings.api_key:
        return ""
    expires = int(time.time()) + settings.url_ttl_seconds
    return "?" + urlencode({"expires": expires, "sig": _signature(settings.api_key, path, expires)})


def signed_ok(settings: Settings, request: Request) -> bool:
    expires, sig = request.query_params.get("expires", ""), request.query_params.get("sig", "")
    if not (EXPIRES.fullmatch(expires) and SIGNATURE.fullmatch(sig)) or int(expires) < time.time():
        return False
    return hmac.compare_digest(sig.encode(), _signature(settings.api_key, request.url.path, int(expires)).encode())
