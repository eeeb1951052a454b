"""The document history commands: ``getdocumentversion``, ``getdeleteddocuments``,
``restoredocument``.

The history itself is written by the data layer (:mod:`iapflow.secure.history`); docs/history.md
describes the records and the delta format.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from iapflow.dispatch import Request
from iapflow.errors import ApiError
from iapflow.wire import collection_name, parse_int

if TYPE_CHECKING:
    pass

log = logging.getLogger("iapflow.history")


def _collection(request: Request) -> str:
    return collection_name(request.data.get("collectionname"))


def _doc_id(request: Request) -> Any:
    data = request.data
    return data.get("id") if data.get("id") not in (None, "") else data.get("_id")


def parse_version(value: Any) -> int:
    """``version``: a whole number from 0 up (a number, or a string of digits)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError(f"version must be a whole number from 0 up, got {value!r}")
    return value


async def getdocumentversion(request: Request) -> dict[str, Any]:
    """``getdocumentversion``: the document ``id`` as it was at ``version``."""
    if "version" not in request.data:
        raise ApiError("version is required: the version of the document to read")
    result = await request.platform.data.document_version(
        request.user,
        _collection(request),
        _doc_id(request),
        parse_version(request.data.get("version")),
    )
    return {"result": result}


async def getdeleteddocuments(request: Request) -> dict[str, Any]:
    """``getdeleteddocuments``: deleted documents of a collection the caller may read."""
    data = request.data
    limits = request.platform.config.query
    top = parse_int(data.get("top"), "top", limits.default_top) or limits.default_top
    if top > limits.max_top:
        raise ApiError(f"top is over the limit of {limits.max_top}; page with skip")
    result = await request.platform.data.deleted_documents(
        request.user, _collection(request), top=top, skip=parse_int(data.get("skip"), "skip", 0)
    )
    return {"result": result}


async def restoredocument(request: Request) -> dict[str, Any]:
    """``restoredocument``: put a deleted document back, with its ACL, as a new version."""
    result = await request.platform.data.restore(
        request.user, _collection(request), _doc_id(request)
    )
    return {"result": result}


def getdocumentversion_in(data: dict[str, Any]) -> dict[str, Any]:
    """proto3 drops a zero: version 0, the first version, arrives as no version."""
    data.setdefault("version", 0)
    return data
