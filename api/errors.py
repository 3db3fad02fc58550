"""Every error the API answers is JSON that names the field (or the cause) and the reason:
422 for bad input, 413 for a body over the limit, 507 for a full disk, and a JSON 500 for a bug,
never Starlette's plain-text page."""

from __future__ import annotations

import errno
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparklio_assets.files import json_depth
from sparklio_assets.models import validation_problems

from .schemas import FieldError, Problem, ValidationProblem

log = logging.getLogger("sparklio.api")
LOCATIONS = ("body", "path", "query", "header", "cookie")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
MAX_JSON_DEPTH = 32  # no request body of this API nests deeper than 4


def field_errors(errors: list[dict], location: str = "body") -> list[FieldError]:
    """FastAPI's or pydantic's errors as FieldErrors; the first part of FastAPI's `loc` (body,
    query, ...) becomes the location."""
    out = []
    for item in errors:
        loc = [str(p) for p in item.get("loc", ())]
        where = loc[0] if loc and loc[0] in LOCATIONS else location
        parts = loc[1:] if loc and loc[0] == where else loc
        (field, reason), = validation_problems([{**item, "loc": parts}], root="(body)")
        out.append(FieldError(field=field, location=where, reason=reason))
    return out


def problem_422(errors: list[FieldError]) -> JSONResponse:
    body = ValidationProblem(detail="; ".join(f"{e.field}: {e.reason}" for e in errors), errors=errors)
    return JSONResponse(body.model_dump(), status_code=422)


def body_problem(reason: str) -> JSONResponse:
    return problem_422([FieldError(field="(body)", location="body", reason=reason)])


def disk_full(error: Exception) -> bool:
    """An OSError of a full disk or quota, or a stage failure whose reason is one."""
    return getattr(error, "errno", None) in DISK_FULL or "No space left on device" in str(error)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen[key] = value
    return seen


class DuplicateKey(ValueError):
    pass


def check_json(body: bytes) -> str | None:
    """Why a JSON body cannot be taken as it is (None when it can, or when it is not JSON at all,
    which FastAPI's own 422 then names). FastAPI would keep the last of two equal keys and could
    only guess at undecodable bytes, so both are refused here."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return (f"body is not UTF-8: byte 0x{body[error.start]:02x} at position {error.start} "
                f"({error.reason}); send JSON encoded as UTF-8")
    if text.startswith("\ufeff"):
        return "body starts with a byte-order mark (BOM); send JSON encoded as UTF-8 without one"
    if json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        json.loads(text, object_pairs_hook=_no_duplicates)
    except DuplicateKey as error:
        return f"duplicate JSON key {str(error)!r}: each field may appear once"
    except ValueError:
        return None  # not JSON: FastAPI's 422 says where
    return None


class BodyCheck:
    """ASGI middleware in front of every route: a body over the limit gets 413 (at once for a
    declared Content-Length, else as soon as the bytes received pass it), and a JSON body that is
    not UTF-8, repeats a key or nests absurdly deep gets 422 saying why. The body is read here
    (it is at most the limit) and handed on unchanged."""

    def __init__(self, app, max_body_bytes: int, uploads: tuple[str, int] | None = None) -> None:
        """`uploads`: (path prefix, limit) for the routes that take files (POST /brands)."""
        self.app, self.max_body_bytes, self.uploads = app, max_body_bytes, uploads

    def _limit(self, scope) -> int:
        if self.uploads and scope.get("path", "").startswith(self.uploads[0]):
            return self.uploads[1]
        return self.max_body_bytes

    @staticmethod
    def _too_big(size: str, limit: int) -> JSONResponse:
        body = Problem(detail=f"request body is {size} bytes; the limit is {limit}")
        return JSONResponse(body.model_dump(), status_code=413)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self._too_big(str(int(length)), limit)(scope, receive, send)
            return
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > limit:
                await self._too_big(f"over {limit}", limit)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and b"json" in headers.get(b"content-type", b"").lower():
            reason = check_json(body)
            if reason:
                await body_problem(reason)(scope, receive, send)
                return
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
    return problem_422(field_errors(list(error.errors())))


async def _os_error(request: Request, error: OSError) -> JSONResponse:
    if disk_full(error):
        log.error("disk full during %s %s: %s", request.method, request.url.path, error)
        return JSONResponse(Problem(detail=f"the server's disk is full ({error.strerror or error}); "
                                           "nothing was saved, try again later").model_dump(), status_code=507)
    return await _internal(request, error)


async def _internal(request: Request, error: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse(Problem(detail=f"internal error ({type(error).__name__}); see the server log").model_dump(),
                        status_code=500)


async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
    """FastAPI's own 400 (a body it could not parse, such as broken multipart form data) is an
    undecodable body like any other: 422 saying why. Every other HTTP error as FastAPI sends it."""
    if error.status_code == 400:
        return body_problem(f"the body could not be parsed: {error.detail}")
    return await http_exception_handler(request, error)


def install(app: FastAPI) -> None:
    """The exception handlers: validation → 422, full disk → 507, anything else → JSON 500."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _internal)

