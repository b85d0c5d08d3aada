"""The API's one error shape, and the handlers that give every failure that shape.

    {"error": {"code": "not_found", "message": "epoch 7 does not exist", "details": null}}

Routes raise `ApiError` (or a subclass); FastAPI's own HTTP and validation errors, and any
unexpected exception, are rewritten to the same body so clients parse one shape only.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine code, a sentence for people, optional specifics."""

    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class ApiError(Exception):
    """A failure the API reports to the client with `status` and a stable `code`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


class NotFoundError(ApiError):
    """The addressed resource does not exist."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(404, "not_found", message, details)


class InvalidParameterError(ApiError):
    """A parameter is well-formed for the schema but not acceptable (e.g. a bad cursor)."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(400, "bad_request", message, details)


class UnavailableError(ApiError):
    """The server lacks what the request needs (deployment manifest, optional module)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "unavailable", message)


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON response with the error body."""
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details)}}
    return JSONResponse(body, status_code=status, headers=headers)


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"model": ErrorBody, "description": _CODES.get(status, "error")}
        for status in statuses
    }


#: Error responses every route may give (documented so clients and fuzzers know them).
COMMON_ERRORS = _error_responses(400, 404, 422, 429, 500, 503)
#: Error responses of the admin routes on top of the common ones.
AUTH_ERRORS = _error_responses(401, 403)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the one body shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        return error_response(
            exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return error_response(422, "invalid_request", "request validation failed", details)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal server error")
