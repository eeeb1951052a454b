"""Conversion between OpenIAP protobuf messages and the JSON-shaped dicts the dispatcher handles.

Each proto command names a request and a response message; JSON-typed fields travel as strings
holding JSON and are decoded here, so the handlers see the same data as on the JSON protocol.
A few commands have other names inside (``updatedocument`` is ``updatemany``, ``pushworkitem``
is ``addworkitem``, ``unregisterqueue`` is ``closequeue``).

:data:`COMMANDS` covers every dispatcher command for which the public ``openiap/proto`` schema
has a message. Commands without one (``getworkitemqueue``, ``housekeeping``, the Node-RED
instance commands, ``getdeleteddocuments``, ``restoredocument``, ``updatefile``) stay on the JSON
protocol; ``savefile``/``getfile`` are ``upload``/``download`` here. :data:`JSON_ONLY` lists
them, and a test checks that the two lists together cover the dispatcher.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import any_pb2, json_format, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from iapflow import jsonutil
from iapflow.errors import ApiError
from iapflow.proto import openiap_pb2 as pb

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


def _results(reply: dict[str, Any]) -> dict[str, Any]:
    return {"results": reply.get("result", reply.get("results"))}


def _workitem(reply: dict[str, Any]) -> dict[str, Any]:
    return {"workitem": reply.get("result")}


def _workitems(reply: dict[str, Any]) -> dict[str, Any]:
    return {"workitems": reply.get("items") or []}


def _distinct(reply: dict[str, Any]) -> dict[str, Any]:
    values = reply.get("result", reply.get("results")) or []
    return {"results": [v if isinstance(v, str) else jsonutil.dumps(v) for v in values]}


# WorkItemQueue fields the server sets itself; what a client sends back in them is ignored.
_SERVER_SET_QUEUE_FIELDS = (
    "_created", "_modified", "_createdby", "_createdbyid", "_modifiedby", "_modifiedbyid",
    "_version", "usersrole", "_workspaceid",
)  # fmt: skip


def _workitemqueue_in(data: dict[str, Any]) -> dict[str, Any]:
    queue = data.pop("workitemqueue", None) or {}
    if isinstance(queue, dict):
        for key in _SERVER_SET_QUEUE_FIELDS:
            queue.pop(key, None)
        data = {**queue, **data}
    return data


def _workitemqueue(reply: dict[str, Any]) -> dict[str, Any]:
    return {"workitemqueue": reply.get("result")}


def _watch_in(data: dict[str, Any]) -> dict[str, Any]:
    # The Rust client sends paths [""] for "no paths" (its API takes one comma-separated string)
    paths = data.get("paths")
    if isinstance(paths, list):
        data["paths"] = [p for p in paths if not (isinstance(p, str) and not p.strip())]
    return data


def _getdocumentversion_in(data: dict[str, Any]) -> dict[str, Any]:
    data.setdefault("version", 0)  # proto3 drops a zero: version 0 is the first version
    return data


def _createcollection_in(data: dict[str, Any]) -> dict[str, Any]:
    # MongoDB takes {"enabled": true}; the schema has a plain flag
    if data.pop("changeStreamPreAndPostImages", False):
        data["changeStreamPreAndPostImages"] = {"enabled": True}
    return data


def _signin_in(data: dict[str, Any]) -> dict[str, Any]:
    if data.pop("validateonly", False):
        data["validate_only"] = True
    for proto_name, json_name in (("agent", "clientagent"), ("version", "clientversion")):
        if proto_name in data:
            data[json_name] = data.pop(proto_name)
    data.pop("ping", None)
    return data


def _signin_out(reply: dict[str, Any]) -> dict[str, Any]:
    config = {
        key: reply[key]
        for key in ("supports_watch", "websocket_package_size", "version", "openflow_uniqueid")
        if key in reply
    }
    return {"jwt": reply.get("jwt"), "user": reply.get("user"), "config": jsonutil.dumps(config)}


def _updatedocument_in(data: dict[str, Any]) -> dict[str, Any]:
    if "document" in data:
        data["item"] = data.pop("document")
    return data


def _updateworkitem_in(data: dict[str, Any]) -> dict[str, Any]:
    item = data.pop("workitem", None) or {}
    if isinstance(item, dict):
        if isinstance(item.get("payload"), str):
            item["payload"] = _maybe_json(item["payload"])
        item.pop("files", None)  # stored files are not re-sent; new ones come in ``files``
        data = {**item, **data}
    return data


def _pushworkitems_in(data: dict[str, Any]) -> dict[str, Any]:
    for item in data.get("items") or []:
        if isinstance(item, dict) and isinstance(item.get("payload"), str):
            item["payload"] = _maybe_json(item["payload"])
    return data


def _command(name: str, internal: str | None = None, **kwargs: Any) -> ProtoCommand:
    return ProtoCommand(
        getattr(pb, f"{name}Request"), getattr(pb, f"{name}Response"),
        internal or name.lower(), **kwargs,
    )  # fmt: skip


COMMANDS: dict[str, ProtoCommand] = {
    "signin": _command("Signin", to_dict=_signin_in, from_reply=_signin_out),
    "query": _command("Query", from_reply=_results),
    "count": _command("Count"),
    "aggregate": _command("Aggregate", from_reply=_results),
    "distinct": _command("Distinct", from_reply=_distinct),
    "getdocumentversion": _command("GetDocumentVersion", to_dict=_getdocumentversion_in),
    "listcollections": _command("ListCollections", from_reply=_results),
    "createcollection": _command("CreateCollection", to_dict=_createcollection_in),
    "dropcollection": _command("DropCollection"),
    "createindex": _command("CreateIndex"),
    "getindexes": _command("GetIndexes"),
    "dropindex": _command("DropIndex"),
    "insertone": _command("InsertOne"),
    "insertmany": _command("InsertMany", from_reply=_results),
    "updateone": _command("UpdateOne"),
    "updatedocument": _command("UpdateDocument", "updatemany", to_dict=_updatedocument_in),
    "insertorupdateone": _command("InsertOrUpdateOne"),
    "insertorupdatemany": _command("InsertOrUpdateMany", from_reply=_results),
    "deleteone": _command("DeleteOne"),
    "deletemany": _command("DeleteMany"),
    "registerqueue": _command("RegisterQueue"),
    "registerexchange": _command("RegisterExchange"),
    "unregisterqueue": _command("UnRegisterQueue", "closequeue"),
    "queuemessage": _command("QueueMessage"),
    "watch": _command("Watch", to_dict=_watch_in),
    "unwatch": _command("UnWatch"),
    "pushworkitem": _command("PushWorkitem", "addworkitem", from_reply=_workitem),
    "pushworkitems": _command(
        "PushWorkitems", "addworkitems", to_dict=_pushworkitems_in, from_reply=_workitems
    ),
    "popworkitem": _command("PopWorkitem", from_reply=_workitem),
    "updateworkitem": _command("UpdateWorkitem", to_dict=_updateworkitem_in, from_reply=_workitem),
    "deleteworkitem": _command("DeleteWorkitem"),
    "addworkitemqueue": _command(
        "AddWorkItemQueue", to_dict=_workitemqueue_in, from_reply=_workitemqueue
    ),
    "updateworkitemqueue": _command(
        "UpdateWorkItemQueue", to_dict=_workitemqueue_in, from_reply=_workitemqueue
    ),
    "deleteworkitemqueue": _command("DeleteWorkItemQueue"),
    "customcommand": _command("CustomCommand"),
    "startagent": _command("StartAgent"),
    "stopagent": _command("StopAgent"),
    "getagentlog": _command("GetAgentLog"),
    "getagentpods": _command("GetAgentPods"),
    "deleteagentpod": _command("DeleteAgentPod"),
    "deleteagent": _command("DeleteAgent"),
}

# Dispatcher commands the public schema has no message for: JSON protocol only.
JSON_ONLY = frozenset(
    {"getworkitemqueue", "housekeeping", "getdeleteddocuments", "restoredocument", "updatefile",
     "getdownloadlink",
     "savefile", "getfile", "ensurenoderedinstance", "startnoderedinstance",
     "restartnoderedinstance", "stopnoderedinstance", "deletenoderedinstance", "deletenoderedpod",
     "getnoderedinstance", "getnoderedinstancelog", "getkubenodelabels"}
)  # fmt: skip


def _maybe_json(text: str) -> Any:
    try:
        return jsonutil.loads(text)
    except ValueError:
        return text


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
        raise ApiError(f"data is not a valid openiap.{cls.__name__}: {exc}") from None
    return msg


def request_dict(command: ProtoCommand, data: any_pb2.Any) -> dict[str, Any]:
    """The JSON-shaped request data for the dispatcher."""
    msg = unpack(data, command.request)
    values: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    for key in list(values):
        if key in _JSON_FIELDS and isinstance(values[key], str):
            values[key] = _maybe_json(values[key])
    orderby = values.get("orderby")
    if isinstance(orderby, str):
        parsed = _maybe_json(orderby)
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


# -- pushes -------------------------------------------------------------------------------------


def push_message(command: str, data: dict[str, Any]) -> tuple[str, Message] | None:
    """The proto push for a session push (``None`` when the proto protocol has no such push)."""
    if command == "queuemessage":
        event = pb.QueueEvent(
            queuename=str(data.get("queuename") or ""),
            correlationId=str(data.get("correlationId") or ""),
            replyto=str(data.get("replyto") or ""),
            routingkey=str(data.get("routingkey") or ""),
            exchangename=str(data.get("exchangename") or ""),
            data=jsonutil.dumps(data.get("data")),
        )
        return "queueevent", event
    if command == "watchevent":
        result = data.get("result") or {}
        document = result.get("fullDocument")
        if document is None:
            document = {"_id": (result.get("documentKey") or {}).get("_id")}
        return "watchevent", pb.WatchEvent(
            id=str(data.get("id") or ""),
            operation=str(result.get("operationType") or ""),
            document=jsonutil.dumps(document),
        )
    if command == "refreshtoken":
        user = data.get("user") or {}
        return "refreshtoken", fill(
            pb.RefreshToken(),
            {"jwt": data.get("jwt"), "user": user, "username": user.get("username")},
        )
    return None
