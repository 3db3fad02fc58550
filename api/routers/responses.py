"""The error responses the routes declare in the OpenAPI schema."""

from __future__ import annotations

from ..schemas import Problem, ValidationProblem


def json_error(model: type, description: str) -> dict:
    """A JSON error response, also on routes whose success is not JSON (files, event stream)."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}


UNAUTHORIZED = {401: json_error(Problem, "X-API-Key missing or wrong")}
INVALID = {422: json_error(ValidationProblem, "a field is invalid; `detail` names it and the reason")}
NOT_FOUND = {404: json_error(Problem, "no such job (or scene)")}
BODY = {413: json_error(Problem, "request body over the limit")}
BUSY = {409: json_error(Problem, "the job is not in a state that allows this")}
TOO_MANY = {429: json_error(Problem, "too many jobs waiting (or event streams open); retry after `Retry-After` s")}
DISK_FULL = {507: json_error(Problem, "the server's disk is full")}

