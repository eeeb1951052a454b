"""Conversion between OpenIAP protobuf messages and the JSON-shaped dicts the dispatcher handles.

Each command brings its own mapping (:class:`iapflow.dispatch.Proto`, registered beside the
handler); :class:`ProtoTable` resolves them once per platform into message classes. JSON-typed
fields travel as strings holding JSON and are decoded here, so the handlers see the same data as
on the JSON protocol. A command without a mapping stays on the JSON protocol; ``savefile`` and
``getfile`` are ``upload``/``download`` here (:mod:`iapflow.builtin.proto.connection`).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import any_pb2, json_format, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from iapflow import jsonutil
from iapflow.builtin.proto import openiap_pb2 as pb
from iapflow.errors import ApiError
from iapflow.stash import StashKey

if TYPE_CHECKING:
    from iapflow.dispatch import CommandSpec
    from iapflow.platform import Platform

M = TypeVar("M", bound=Message)

# Request fields that hold JSON text; decoded before dispatch (left as text when not JSON).
_JSON_FIELDS = frozenset(
    {"query", "projection", "item", "items", "aggregates", "document", "data", "payload",
     "metadata", "options", "hint", "index"}
)  # fmt: skip


@dataclass(frozen=True)
class ProtoCommand:
    """One proto command: its messages, the dispatcher's name for it and the reshaping."""

    request: type[Message]
    response: type[Message]
    internal: str
    to_dict: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    from_reply: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    authenticates: bool = False


@dataclass(frozen=True)
class ProtoPushOut:
    """One push as it goes out: the Envelope command, the message and how to fill it."""

    command: str
    message: type[Message]
    values: Callable[[dict[str, Any]], dict[str, Any]]


def _message(value: str | type[Any]) -> type[Message]:
    if isinstance(value, str):
        found = getattr(pb, value, None)
        if not (isinstance(found, type) and issubclass(found, Message)):
            raise ValueError(f"the openiap schema has no message {value!r}")
        return found
    if not (isinstance(value, type) and issubclass(value, Message)):
        raise ValueError(f"{value!r} is not a protobuf message class")
    return value


@dataclass(frozen=True)
class ProtoTable:
    """Every command with a protobuf mapping, by Envelope command, and the pushes."""

    commands: Mapping[str, ProtoCommand]
    pushes: Mapping[str, ProtoPushOut]

    @classmethod
    def build(cls, specs: Iterable[CommandSpec]) -> ProtoTable:
        """Resolve the :class:`iapflow.dispatch.Proto` of each registered command."""
        commands: dict[str, ProtoCommand] = {}
        pushes: dict[str, ProtoPushOut] = {}
        for spec in specs:
            proto = spec.proto
            if proto is None or proto.command in commands:
                continue
            commands[proto.command] = ProtoCommand(
                _message(proto.request or f"{proto.name}Request"),
                _message(proto.response or f"{proto.name}Response"),
                spec.name,
                proto.to_dict,
                proto.from_reply,
                spec.authenticates,
            )
            for name, push in proto.pushes:
                pushes[name] = ProtoPushOut(push.command, _message(push.message), push.values)
        return cls(commands, pushes)

    def push_message(self, command: str, data: dict[str, Any]) -> tuple[str, Message] | None:
        """The proto push for a session push (``None`` when the protocol has no such push)."""
        push = self.pushes.get(command)
        if push is None:
            return None
        return push.command, fill(push.message(), push.values(data))


TABLE = StashKey[ProtoTable]("protobuf command table")


def table_for(platform: Platform) -> ProtoTable:
    """The platform's table, built from its commands at the first use."""
    table = platform.stash.get(TABLE)
    if table is None:
        specs = {id(spec): spec for _name, spec in platform.dispatcher.commands.items()}
        table = platform.stash.setdefault(TABLE, ProtoTable.build(specs.values()))
    return table


def pack(msg: Message) -> any_pb2.Any:
    """``msg`` in an Any with the ``type.googleapis.com/openiap.<Name>`` type url."""
    packed = any_pb2.Any()
    packed.Pack(msg, "type.googleapis.com/")
    return packed


def unpack(data: any_pb2.Any, cls: type[M]) -> M:
    """Decode an Any's bytes as ``cls`` by the command's choice, whatever its type url says."""
    msg: M = cls()
    try:
        msg.ParseFromString(data.value)
    except DecodeError as exc:
        raise ApiError(f"data is not a valid {cls.DESCRIPTOR.full_name}: {exc}") from None
    return msg


def request_dict(command: ProtoCommand, data: any_pb2.Any) -> dict[str, Any]:
    """The JSON-shaped request data for the dispatcher."""
    msg = unpack(data, command.request)
    values: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    for key in list(values):
        if key in _JSON_FIELDS and isinstance(values[key], str):
            values[key] = jsonutil.maybe_json(values[key])
    orderby = values.get("orderby")
    if isinstance(orderby, str):
        parsed = jsonutil.maybe_json(orderby)
        if parsed in (None, "", "null"):
            values.pop("orderby")
        elif isinstance(parsed, dict):
            values["orderby"] = parsed
    if command.to_dict is not None:
        values = command.to_dict(values)
    return values


def response_message(command: ProtoCommand, reply: dict[str, Any]) -> Message:
    """The proto response for the dispatcher's reply dict."""
    values = command.from_reply(reply) if command.from_reply is not None else reply
    return fill(command.response(), values)


def fill(msg: Message, values: Mapping[str, Any]) -> Message:
    """Set the fields of ``msg`` that ``values`` names, converting JSON-shaped values."""
    for field in msg.DESCRIPTOR.fields:
        value = values.get(field.name)
        if value is None:
            continue
        if field.is_repeated:
            target = getattr(msg, field.name)
            for element in value if isinstance(value, list) else [value]:
                if field.message_type is not None:
                    fill(target.add(), element if isinstance(element, Mapping) else {})
                else:
                    target.append(_scalar(field, element))
        elif field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                stamp = _timestamp(value)
                if stamp is not None:
                    getattr(msg, field.name).CopyFrom(stamp)
            elif isinstance(value, Mapping):
                fill(getattr(msg, field.name), value)
        else:
            setattr(msg, field.name, _scalar(field, value))
    return msg


def _scalar(field: Any, value: Any) -> Any:
    kind = field.type
    if kind == field.TYPE_STRING:
        if isinstance(value, str):
            return value
        if isinstance(value, dict | list | bool | int | float | dt.datetime):
            return jsonutil.dumps(value)
        return str(value)
    if kind == field.TYPE_BYTES:
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        return base64.b64decode(str(value)) if value else b""
    if kind == field.TYPE_BOOL:
        return bool(value)
    if kind in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
        return float(value) if isinstance(value, int | float) else 0.0
    try:
        return max(min(int(value), 2**31 - 1), -(2**31))
    except (TypeError, ValueError):
        return 0


def _timestamp(value: Any) -> timestamp_pb2.Timestamp | None:
    when: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        when = jsonutil.parse_iso_date(value)
    elif isinstance(value, Mapping) and "$date" in value:
        return _timestamp(value["$date"])
    elif isinstance(value, int | float) and not isinstance(value, bool):
        when = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp
