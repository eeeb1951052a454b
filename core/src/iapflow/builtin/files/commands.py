"""The file commands ``savefile``, ``getfile``, ``updatefile`` and ``getdownloadlink``
(base64, optionally deflated), and the HTTP routes ``GET /download/{id}`` and ``POST /upload``,
which stream the bytes instead of holding whole files in memory.

Every path goes through :mod:`iapflow.builtin.files.service`, which applies the ACL in
``metadata._acl`` and the ``files.max_file_bytes`` limit.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse

from iapflow import jsonutil
from iapflow.builtin.files.content import (
    CONTENT_TYPE,
    FileTooLarge,
    base64_content,
    check_filename,
    deflate,
)
from iapflow.builtin.files.service import FileNotFound, secure_files
from iapflow.contracts.files import FileDownload
from iapflow.dispatch import Request
from iapflow.errors import AccessDenied, ApiError, NotSignedIn, StorageError
from iapflow.secure.principal import Principal

if TYPE_CHECKING:
    from iapflow.platform import Platform

log = logging.getLogger("iapflow.files")

_TRUE = (True, 1, "true", "True", "1")


# -- websocket commands -------------------------------------------------------------------------


async def savefile(request: Request) -> dict[str, Any]:
    """``savefile``: store ``file`` (base64; deflated when ``compressed``) as ``filename``."""
    data = request.data
    files = secure_files(request.platform)
    check_filename(data.get("filename"))
    chunks = base64_content(data.get("file"), data.get("compressed") in _TRUE, files.max_bytes)
    document = await files.save(
        request.user,
        chunks,
        filename=data.get("filename"),
        content_type=data.get("mimeType") or data.get("mimetype"),
        metadata=data.get("metadata"),
    )
    data.pop("file", None)  # do not echo the whole file back
    return {"id": document["_id"], "result": document}


async def getfile(request: Request) -> dict[str, Any]:
    """``getfile``: a readable file by ``id``, or by ``filename`` (``metadata.uniquename``,
    then ``filename``, newest first), as base64; deflated when ``compress``."""
    data = request.data
    files = secure_files(request.platform)
    file_id = data.get("id") or data.get("_id")
    filename = None if file_id else data.get("filename")
    document, content = await files.read(
        request.user, file_id=file_id, filename=filename, max_bytes=files.max_bytes
    )
    if data.get("compress") in _TRUE:
        content = deflate(content)
    metadata = document.get("metadata") or {}
    return {
        "file": base64.b64encode(content).decode("ascii"),
        "metadata": metadata,
        "mimeType": document.get("contentType") or metadata.get("contentType"),
        "id": document["_id"],
    }


async def getdownloadlink(request: Request) -> dict[str, Any]:
    """``getdownloadlink``: a link to ``GET /download/<id>`` that works for five minutes, for
    this file and the caller only: what to put in a browser's address instead of a token."""
    data = request.data
    document = await secure_files(request.platform).find(
        request.user, file_id=data.get("id") or data.get("_id")
    )
    ticket, expires = await request.platform.auth.ticket(request.user, document["_id"])
    url = f"/download/{quote(str(document['_id']), safe='')}?ticket={ticket}"
    return {"url": url, "expires": expires}


async def updatefile(request: Request) -> dict[str, Any]:
    """``updatefile``: replace the ``metadata`` of file ``id`` (its ACL included)."""
    data = request.data
    result = await secure_files(request.platform).update_metadata(
        request.user, data.get("id") or data.get("_id"), data.get("metadata")
    )
    return {"result": result}


# -- HTTP ---------------------------------------------------------------------------------------


def _error(exc: Exception) -> Response:
    """The HTTP answer for a refused file request."""
    if isinstance(exc, NotSignedIn):
        status = 401
    elif isinstance(exc, FileNotFound):
        status = 404
    elif isinstance(exc, FileTooLarge):
        status = 413
    elif isinstance(exc, AccessDenied):
        status = 403
    elif isinstance(exc, ApiError):
        status = 400
    else:
        log.warning("file request failed: %s", exc)
        status, exc = 503, StorageError(f"storage error: {exc}")
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": str(exc), "message": str(exc)}, status, headers=headers)


async def _principal(request: HttpRequest, file_id: str = "") -> Principal:
    platform: Platform = request.app.state.platform
    ticket = request.query_params.get("ticket")
    if ticket and file_id:
        return await platform.auth.principal_from_ticket(ticket, file_id)
    token = request.headers.get("authorization") or (
        request.query_params.get("jwt") or request.query_params.get("token")
    )
    if not token:
        raise NotSignedIn(
            "no token: send Authorization: Bearer <jwt>, or a ?ticket= from getdownloadlink"
        )
    principal, _claims = await platform.auth.principal_from_token(token)
    return principal


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A Content-Disposition value naming the file's base name, with a UTF-8 ``filename*``."""
    name = re.split(r"[\\/]", filename)[-1] or "file"
    fallback = re.sub(r'[^\x20-\x7e]|["\\%]', "_", name)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def _stream(download: FileDownload) -> AsyncIterator[bytes]:
    async with download:
        async for chunk in download.chunks:
            yield chunk


# Types a browser only displays or hands to a viewer: served as stored. Everything else (HTML,
# SVG, XML, scripts, style sheets, unknown types) is served as application/octet-stream, so an
# upload can never be taken for a page, a script or a style sheet of this origin.
_PASSIVE_TYPES = re.compile(
    r"^(image/(png|jpeg|gif|webp|bmp|avif|x-icon|vnd\.microsoft\.icon)|audio/[\w.+-]+|"
    r"video/[\w.+-]+|text/plain|text/csv|application/(pdf|json|zip|gzip|x-tar|x-7z-compressed|"
    r"octet-stream|msword|vnd\.[\w.+-]+))(\s*;.*)?$",
    re.IGNORECASE,
)


def served_type(document: dict[str, Any]) -> str:
    """The Content-Type ``/download`` sends for a stored file (see :data:`_PASSIVE_TYPES`)."""
    stored = str(document.get("contentType") or "")
    if CONTENT_TYPE.match(stored) and _PASSIVE_TYPES.match(stored):
        return stored
    return "application/octet-stream"


async def download(request: HttpRequest) -> Response:
    """``GET /download/{id}``: the file's bytes, streamed, if the token's user may read it."""
    platform: Platform = request.app.state.platform
    file_id = request.path_params["id"]
    try:
        principal = await _principal(request, file_id)
        opened = await secure_files(platform).open(principal, file_id=file_id)
    except (ApiError, StorageError) as exc:
        return _error(exc)
    document = opened.document
    headers = {
        "Content-Type": served_type(document),
        "Content-Length": str(int(document.get("length") or 0)),
        "Content-Disposition": content_disposition(str(document.get("filename") or "file")),
        # Uploaded content is not trusted: never sniffed, never run as a page, script or style
        # sheet of this site, not even when another page of it asks for it.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Cache-Control": "private, no-store",
    }
    return StreamingResponse(_stream(opened), headers=headers)


def _header_text(request: HttpRequest, name: str) -> str | None:
    value = request.headers.get(name)
    return unquote(value) if value else None


async def upload(request: HttpRequest) -> Response:
    """``POST /upload``: store the raw request body as a file, streamed; answers 201 with the
    stored ``fs.files`` document."""
    platform: Platform = request.app.state.platform
    query = request.query_params
    try:
        principal = await _principal(request)
        files = secure_files(platform)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > files.max_bytes:
            raise FileTooLarge(files.max_bytes)
        content_type = query.get("mimeType") or query.get("mimetype")
        content_type = content_type or request.headers.get("content-type")
        if content_type and content_type.lower().startswith("multipart/"):
            raise ApiError("send the file as the raw request body, not as a multipart form")
        document = await files.save(
            principal,
            request.stream(),
            filename=query.get("filename") or _header_text(request, "x-filename"),
            content_type=content_type,
            metadata=query.get("metadata") or _header_text(request, "x-metadata"),
        )
    except ClientDisconnect:
        return Response(status_code=400)
    except (ApiError, StorageError) as exc:
        return _error(exc)
    return Response(jsonutil.dumps(document), 201, media_type="application/json")
