"""Client input shared by all commands: objects or JSON strings, filters with ``__REGEXP`` and
ISO dates coerced, sort orders, counts and collection names, each refused with a clear error."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from iapflow.errors import ApiError
from iapflow.jsonutil import parse_iso_date

_REGEXP_PREFIX = "__REGEXP "
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_MAX_DEPTH = 64


def coerce(value: Any, depth: int = 0) -> Any:
    """Turn ``"__REGEXP /x/i"`` strings into regexes and ISO timestamps into datetimes, deeply."""
    if depth > _MAX_DEPTH:
        raise ApiError(f"value is nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, str):
        if value.startswith(_REGEXP_PREFIX):
            return _regexp(value[len(_REGEXP_PREFIX) :])
        date = parse_iso_date(value)
        return value if date is None else date
    if isinstance(value, Mapping):
        return {key: coerce(inner, depth + 1) for key, inner in value.items()}
    if isinstance(value, list):
        return [coerce(inner, depth + 1) for inner in value]
    return value


def _regexp(text: str) -> re.Pattern[str]:
    pattern, flags = text, ""
    if text.startswith("/") and text.rfind("/") > 0:
        end = text.rfind("/")
        pattern, flags = text[1:end], text[end + 1 :]
    bits = 0
    for flag in flags:
        if flag not in _REGEX_FLAGS:
            raise ApiError(f"unknown regular expression flag {flag!r} in __REGEXP {text!r}")
        bits |= _REGEX_FLAGS[flag]
    try:
        return re.compile(pattern, bits)
    except re.error as exc:
        raise ApiError(f"bad regular expression {pattern!r}: {exc}") from None


def as_object(value: Any, field: str, *, allow_none: bool = True) -> dict[str, Any] | None:
    """Accept an object or a JSON string holding one; ``None`` stays ``None`` when allowed."""
    if value is None or value == "":
        if allow_none:
            return None
        raise ApiError(f"{field} is required")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(f"{field} must be an object or a JSON string holding one") from None
    if not isinstance(value, dict):
        raise ApiError(f"{field} must be an object, got {type(value).__name__}")
    return value


def parse_filter(value: Any, field: str) -> dict[str, Any]:
    """A client filter, coerced: object or JSON string, empty means everything."""
    found = as_object(value, field)
    return coerce(found) if found else {}


def parse_orderby(value: Any) -> list[tuple[str, int]] | None:
    """``orderby`` as an object, a field name, or a JSON string of an object."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{"):
            value = as_object(stripped, "orderby")
        else:
            return [(_field_name(stripped, "orderby"), 1)]
    if not isinstance(value, dict):
        raise ApiError('orderby must be an object like {"name": 1}, a field name or a JSON string')
    order = []
    for key, direction in value.items():
        if direction in (1, "1", "asc", "ascending", True):
            order.append((_field_name(key, "orderby"), 1))
        elif direction in (-1, "-1", "desc", "descending"):
            order.append((_field_name(key, "orderby"), -1))
        else:
            raise ApiError(f"orderby {key!r}: direction must be 1 or -1, got {direction!r}")
    return order or None


def _field_name(name: Any, field: str) -> str:
    if not isinstance(name, str) or not name or name.startswith("$") or "\x00" in name:
        raise ApiError(f"{field}: {name!r} is not a field name")
    return name


def parse_int(value: Any, field: str, default: int, minimum: int = 0) -> int:
    """A non-negative integer field, with a default when missing."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ApiError(f"{field} must be a number")
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise ApiError(f"{field} must be a number, got {value!r}") from None
    if number < minimum:
        raise ApiError(f"{field} must be at least {minimum}")
    return number


def check_depth(value: Any) -> None:
    """Refuse values nested deeper than the limit (walked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ApiError(f"value is nested deeper than {_MAX_DEPTH} levels")
        if isinstance(item, Mapping):
            stack.extend((inner, depth + 1) for inner in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((inner, depth + 1) for inner in item)


def check_keys(value: Any, what: str = "item") -> None:
    """Refuse field names a store would take as operators or cut short (a leading ``$``, a NUL
    character) anywhere in ``value``, and nesting deeper than the limit (walked without
    recursion); ``what`` names the value in the error."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ApiError(f"{what} is nested deeper than {_MAX_DEPTH} levels")
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if not isinstance(key, str) or key.startswith("$") or "\x00" in key:
                    raise ApiError(
                        f"{what} field name {str(key)[:60]!r} is not allowed (no leading $, no NUL)"
                    )
                stack.append((inner, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((inner, depth + 1) for inner in item)


def collection_name(value: Any) -> str:
    """Validate a collection name; ``files`` is OpenFlow's alias for ``fs.files``."""
    if value is None or value == "":
        raise ApiError("collectionname is required")
    if not isinstance(value, str):
        raise ApiError(f"collectionname must be a string, got {type(value).__name__}")
    if value == "files":
        return "fs.files"
    if (
        len(value) > 120
        or value.startswith(("system.", "$"))
        or any(ch in value for ch in "$\x00")
        or value != value.strip()
    ):
        raise ApiError(f"{value[:130]!r} is not a valid collection name")
    return value
