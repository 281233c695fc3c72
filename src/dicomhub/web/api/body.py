"""Reading and checking JSON request bodies (bounded size, known fields, typed values)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

from dicomhub.domain.uids import is_valid_uid
from dicomhub.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from dicomhub.web.context import archive_of


async def read_object(request: Request, allowed: Iterable[str]) -> dict[str, Any]:
    """The request's JSON object body, with only ``allowed`` members.

    Raises:
        UnsupportedMediaType: the body is not ``application/json``.
        PayloadTooLarge: the body exceeds ``DICOMHUB_API_MAX_BODY_BYTES``.
        InvalidInput: malformed JSON, not an object, or an unknown member.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType("the request body must be application/json")
    limit = archive_of(request).settings.api_max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the JSON body exceeds {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"the JSON body exceeds {limit} bytes")
    try:
        body = json.loads(bytes(data))
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("the request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown member {unknown[0][:64]!r}")
    return body


def string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    """A string member (``None`` when absent and not required)."""
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"{name!r} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name!r} must be a string")
    return value


def integer(body: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    """An integer member (booleans are not integers)."""
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"{name!r} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name!r} must be an integer")
    return value


def uid(value: Any, what: str) -> str:
    """A UID (PS3.5 §9.1) given as a JSON string."""
    if not isinstance(value, str) or not is_valid_uid(value):
        raise InvalidInput(f"{what} must be a valid UID (PS3.5 §9.1)")
    return value
