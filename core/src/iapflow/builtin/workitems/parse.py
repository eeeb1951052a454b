"""What the work item commands accept from clients: names, numbers, flags, priorities, times,
payloads and attached files, each refused with a sentence that says what is expected."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iapflow import wellknown
from iapflow.errors import ApiError
from iapflow.jsonutil import parse_iso_date
from iapflow.secure.acl import (
    DELETE,
    INVOKE,
    READ,
    UPDATE,
)
from iapflow.secure.principal import Principal
from iapflow.wire import check_keys, coerce

if TYPE_CHECKING:
    pass


MQ = "mq"
WORKITEMS = "workitems"
QUEUE_TYPE = "workitemqueue"
ITEM_TYPE = "workitem"
STATES = ("new", "processing", "successful", "failed")
UPDATE_STATES = ("new", "processing", "successful", "failed", "retry")
ERROR_TYPES = ("application", "business")
DEFAULT_PRIORITY = 2
DEFAULT_MAXRETRIES = 3
MAX_NAME = 200
MAX_ITEMS_PER_CALL = 1000
ITEM_KEYS = ("wiqid", "wiq")
"""How item commands name their queue (their ``name`` and ``_id`` are the item's)."""
TRUE_VALUES = (True, 1, "true", "True", "1")
# Queue fields a client sets (besides name and _acl).
QUEUE_TEXT_FIELDS = ("workflowid", "robotqueue", "amqpqueue", "projectid", "packageid")
SERVER = Principal(id=wellknown.ROOT, name="root", username="root")


def right_name(rights: int) -> str:
    return {READ: "read", UPDATE: "update", DELETE: "delete", INVOKE: "invoke"}.get(
        rights, "the needed"
    )


# -- input checks -------------------------------------------------------------------------------


def check_name(value: Any, what: str = "name") -> str:
    """A queue or item name: a non-empty string of printable characters."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(f"{what} is required: a non-empty string")
    name = value.strip()
    if len(name) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ApiError(f"{what} must be at most {MAX_NAME} printable characters")
    return name


def number(data: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
    value = data.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ApiError(f"{key} must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ApiError(f"{key} must be a number")
    if value < minimum or value > 10**9:
        raise ApiError(f"{key} must be a number between {minimum:g} and 1000000000")
    return int(value) if float(value).is_integer() else float(value)


def text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 1024:
        raise ApiError(f"{key} must be a string")
    return value


def flag(data: Mapping[str, Any], key: str) -> bool:
    return data.get(key) in TRUE_VALUES


def parse_priority(value: Any, default: int = DEFAULT_PRIORITY) -> int:
    """A work item priority: a whole number, lower runs sooner (default 2)."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ApiError("priority must be a whole number (lower runs sooner)")
    return int(value)


def parse_time(value: Any, key: str = "nextrun") -> dt.datetime | None:
    """``nextrun``: an ISO-8601 string, a protobuf Timestamp ``{seconds, nanos}``, or
    milliseconds since 1970; ``None`` when not given."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        parsed = parse_iso_date(value)
        if parsed is None:
            raise ApiError(f"{key} must be an ISO-8601 time such as 2025-01-31T12:00:00Z")
        return parsed
    try:
        if isinstance(value, Mapping) and "seconds" in value:
            seconds = float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    except (TypeError, ValueError, OverflowError):
        pass
    raise ApiError(f"{key} must be an ISO-8601 time, {{seconds, nanos}} or milliseconds")


def parse_payload(value: Any) -> dict[str, Any]:
    """An item payload: an object; scalars and lists are wrapped as ``{"value": ...}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        check_keys(value, "payload")
        result: dict[str, Any] = coerce(value)
        return result
    check_keys(value, "payload")
    return {"value": coerce(value)}


def check_file(entry: Any) -> None:
    if not isinstance(entry, Mapping):
        raise ApiError("every file must be an object {filename, file, compressed}")
    if not isinstance(entry.get("filename"), str) or not entry["filename"].strip():
        raise ApiError("every file needs a filename")
    if not isinstance(entry.get("file"), str):
        raise ApiError(f"file {entry['filename']!r} needs its content as a base64 string in file")
