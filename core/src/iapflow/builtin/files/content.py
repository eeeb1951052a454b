"""What file commands accept and how bytes travel: file names, content types and metadata
checked, base64 decoded within the size limit, deflate undone as a stream, and bytes cut into
pieces for the file store."""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from iapflow.errors import ApiError
from iapflow.wire import check_keys, coerce

if TYPE_CHECKING:
    pass

DEFAULT_CONTENT_TYPE = "application/octet-stream"
PIECE_BYTES = 1024 * 1024
"""Size of the pieces bytes already in memory are handed to the store in."""
MAX_NAME = 1024
_WHITESPACE = re.compile(r"\s+")


class FileTooLarge(ApiError):
    """A file over ``files.max_file_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"file is larger than the limit of {limit} bytes ({_size(limit)}); "
            "the server's files.max_file_bytes setting sets it"
        )
        self.limit = limit


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"


def check_filename(value: Any) -> str:
    """A file name: a non-empty string of at most 1024 characters without control characters."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError("filename is required: the name of the file")
    if len(value) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ApiError(
            f"filename must be at most {MAX_NAME} characters, without control characters"
        )
    return value


_TOKEN = r"[A-Za-z0-9!#$&^_.+\-]+"
CONTENT_TYPE = re.compile(
    rf"^{_TOKEN}/{_TOKEN}(\s*;\s*{_TOKEN}=({_TOKEN}|\"[\x20\x21\x23-\x5b\x5d-\x7e]*\"))*$"
)
"""A media type as HTTP headers carry it (RFC 9110): ASCII ``type/subtype`` with parameters."""


def check_content_type(value: Any) -> str:
    """A content type such as ``text/plain; charset=utf-8``; empty means
    ``application/octet-stream``. Anything HTTP cannot carry is refused on the way in, so the
    file stays downloadable."""
    if value in (None, ""):
        return DEFAULT_CONTENT_TYPE
    if not isinstance(value, str) or len(value) > 255 or not CONTENT_TYPE.match(value):
        raise ApiError(
            "mimeType must be a content type such as text/plain or text/plain; charset=utf-8 "
            "(ASCII letters, digits and !#$&^_.+- , at most 255 characters)"
        )
    return value


def parse_metadata(value: Any) -> dict[str, Any]:
    """Client metadata: an object or a JSON string of one; keys checked, dates and regexes
    turned into values as in documents."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError("metadata must be an object or a JSON string of one") from None
    if not isinstance(value, dict):
        raise ApiError("metadata must be an object")
    check_keys(value, "metadata")
    result: dict[str, Any] = coerce(value)
    return result


# -- content encodings ------------------------------------------------------------------------


def decode_base64(text: Any, limit: int, allowance: int = 0) -> bytes:
    """The bytes of a base64 string; refused before decoding when they cannot fit ``limit``
    (plus ``allowance``, for compressed data that may be a little larger than its content)."""
    if not isinstance(text, str):
        raise ApiError("file is required: the content as a base64 string")
    if len(text) // 4 * 3 - 3 > limit + allowance:
        raise FileTooLarge(limit)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        # Line-wrapped base64 (MIME style) is fine; anything else is not.
        return base64.b64decode(_WHITESPACE.sub("", text), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("file is not valid base64") from None


def inflate(data: bytes, limit: int) -> Iterator[bytes]:
    """The pieces of zlib- or gzip-wrapped (``pako.deflate``) or raw deflate ``data``, at most
    ``limit`` bytes in all (FileTooLarge beyond it, so a small bomb cannot fill memory)."""
    for wbits in (zlib.MAX_WBITS | 32, -zlib.MAX_WBITS):
        decompressor = zlib.decompressobj(wbits)
        try:
            first = decompressor.decompress(data[:64])
        except zlib.error:
            continue
        return _inflated(decompressor, first, data[64:], limit)
    raise ApiError("file is not zlib/deflate data, but compressed is true")


def _inflated(decompressor: Any, first: bytes, rest: bytes, limit: int) -> Iterator[bytes]:
    total = len(first)
    if total > limit:
        raise FileTooLarge(limit)
    if first:
        yield first
    pending = rest
    try:
        while True:
            piece = decompressor.decompress(pending, PIECE_BYTES)
            pending = decompressor.unconsumed_tail
            if not piece:
                break
            total += len(piece)
            if total > limit:
                raise FileTooLarge(limit)
            yield piece
        tail = decompressor.flush()
    except zlib.error as exc:
        raise ApiError(f"file is not valid zlib/deflate data: {exc}") from None
    if tail:
        total += len(tail)
        if total > limit:
            raise FileTooLarge(limit)
        yield tail
    if not decompressor.eof:
        raise ApiError("file's compressed data is cut short")


def base64_content(text: Any, compressed: bool, limit: int) -> AsyncIterator[bytes]:
    """A ``file`` field (base64, zlib/deflate data when ``compressed``) as the pieces
    :meth:`SecureFiles.save` takes; bad base64, bad deflate data and a file over ``limit``
    (counted after inflating) are ApiErrors."""
    if compressed:
        # Deflate can grow incompressible data a little; the limit is on the inflated bytes.
        return pieces(inflate(decode_base64(text, limit, limit // 100 + 1024), limit))
    return pieces(decode_base64(text, limit))


def deflate(data: bytes) -> bytes:
    """``data`` zlib-compressed, as ``pako.inflate`` and ``zlib.decompress`` read it."""
    return zlib.compress(data, 6)


async def pieces(data: bytes | Iterator[bytes]) -> AsyncIterator[bytes]:
    """Bytes in memory (or an iterator of them) as an async iterator of pieces of at most
    :data:`PIECE_BYTES`."""
    sources = [data] if isinstance(data, bytes | bytearray) else data
    for source in sources:
        view = memoryview(source)
        for start in range(0, len(view), PIECE_BYTES):
            yield bytes(view[start : start + PIECE_BYTES])
