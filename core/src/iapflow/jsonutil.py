"""JSON encoding shared by every transport: dates as ISO-8601 strings with ``Z``, ids as strings."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$")


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        text = value.astimezone(dt.UTC).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")
    if isinstance(value, bytes | bytearray):
        return value.hex()
    # ObjectId, Decimal128, Regex and other storage types: their string form.
    return str(value)


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON; dates become ISO strings, unknown types their ``str()``."""
    return json.dumps(value, default=_default, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """Decode JSON text; raises ``ValueError`` on malformed or too deeply nested input."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None


def maybe_json(text: str) -> Any:
    """``text`` decoded as JSON, or ``text`` itself when it is not JSON (fields that clients
    send as JSON text or as plain text alike)."""
    try:
        return loads(text)
    except ValueError:
        return text


def parse_iso_date(text: str) -> dt.datetime | None:
    """Return the datetime for an ISO-8601 timestamp string (with time zone), else ``None``."""
    if len(text) > 40 or not _ISO_DATE.match(text):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def utcnow() -> dt.datetime:
    """The current time in UTC, truncated to milliseconds as MongoDB stores it."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
