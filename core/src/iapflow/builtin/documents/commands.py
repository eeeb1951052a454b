"""The document commands (query, count, distinct, aggregate, insert, update, upsert, delete),
with OpenFlow's field names and reply shapes."""

from __future__ import annotations

import json
from typing import Any

from iapflow import jsonutil
from iapflow.dispatch import Request
from iapflow.errors import ApiError
from iapflow.wire import (
    as_object,
    coerce,
    collection_name,
    parse_filter,
    parse_int,
    parse_orderby,
)


def _collection(request: Request) -> str:
    return collection_name(request.data.get("collectionname"))


def _item(value: Any, field: str = "item") -> dict[str, Any]:
    found = as_object(value, field, allow_none=False)
    assert found is not None
    return coerce(found)  # type: ignore[no-any-return]


async def query(request: Request) -> dict[str, Any]:
    """``query``: documents matching ``query`` that the caller may read."""
    data = request.data
    limits = request.platform.config.query
    top = parse_int(data.get("top"), "top", limits.default_top)
    if top == 0:
        top = limits.default_top
    if top > limits.max_top:
        raise ApiError(f"top is over the limit of {limits.max_top}; page with skip")
    result = await request.platform.data.query(
        request.user,
        _collection(request),
        parse_filter(data.get("query"), "query"),
        projection=as_object(data.get("projection"), "projection"),
        top=top,
        skip=parse_int(data.get("skip"), "skip", 0),
        orderby=parse_orderby(data.get("orderby")),
        queryas=data.get("queryas"),
    )
    return {"result": result}


async def count(request: Request) -> dict[str, Any]:
    """``count``: how many readable documents match."""
    data = request.data
    result = await request.platform.data.count(
        request.user,
        _collection(request),
        parse_filter(data.get("query"), "query"),
        data.get("queryas"),
    )
    return {"result": result}


async def distinct(request: Request) -> dict[str, Any]:
    """``distinct``: distinct values of ``field`` among readable matches."""
    data = request.data
    field = data.get("field")
    if not isinstance(field, str) or not field or field.startswith("$"):
        raise ApiError("distinct needs field: the name of a field")
    results = await request.platform.data.distinct(
        request.user,
        _collection(request),
        field,
        parse_filter(data.get("query"), "query"),
        data.get("queryas"),
    )
    return {"results": results}


async def aggregate(request: Request) -> dict[str, Any]:
    """``aggregate``: a pipeline over readable documents (joins are ACL-filtered too)."""
    data = request.data
    pipeline = data.get("aggregates")
    if isinstance(pipeline, str):
        try:
            pipeline = json.loads(pipeline)
        except ValueError:
            raise ApiError("aggregates must be a pipeline or a JSON string holding one") from None
    result = await request.platform.data.aggregate(
        request.user, _collection(request), coerce(pipeline), data.get("queryas")
    )
    return {"result": result}


async def insertone(request: Request) -> dict[str, Any]:
    """``insertone``: store ``item``; the reply's ``result`` is the stored document."""
    result = await request.platform.data.insert_one(
        request.user, _collection(request), _item(request.data.get("item"))
    )
    return {"result": result}


async def insertmany(request: Request) -> dict[str, Any]:
    """``insertmany``: store every item of ``items``."""
    items = request.data.get("items")
    if not isinstance(items, list):
        raise ApiError("items must be a list of objects")
    results = await request.platform.data.insert_many(
        request.user, _collection(request), [_item(i, "items[]") for i in items]
    )
    return {"results": [] if request.data.get("skipresults") else results}


async def updateone(request: Request) -> dict[str, Any]:
    """``updateone``: replace ``item`` by ``_id``, or apply operators in ``item`` to ``query``."""
    data = request.data
    collection = _collection(request)
    item = _item(data.get("item"))
    if data.get("query") not in (None, ""):
        doc = await request.platform.data.update_one(
            request.user, collection, parse_filter(data.get("query"), "query"), item
        )
        matched = 0 if doc is None else 1
        return {"result": doc, "opresult": {"matchedCount": matched, "modifiedCount": matched}}
    doc = await request.platform.data.replace(request.user, collection, item)
    return {"result": doc, "opresult": {"matchedCount": 1, "modifiedCount": 1}}


async def updatemany(request: Request) -> dict[str, Any]:
    """``updatemany`` (``updatedocument``): apply operators in ``item`` to every match."""
    data = request.data
    collection = _collection(request)
    matched, modified = await request.platform.data.update_many(
        request.user, collection, parse_filter(data.get("query"), "query"), _item(data.get("item"))
    )
    return {"opresult": {"matchedCount": matched, "modifiedCount": modified}}


async def insertorupdateone(request: Request) -> dict[str, Any]:
    """``insertorupdateone``: insert, or replace the document with the same ``uniqeness`` fields."""
    data = request.data
    result = await request.platform.data.insert_or_update(
        request.user, _collection(request), _item(data.get("item")), data.get("uniqeness")
    )
    return {"result": result}


async def insertorupdatemany(request: Request) -> dict[str, Any]:
    """``insertorupdatemany``: ``insertorupdateone`` for each of ``items``."""
    data = request.data
    items = data.get("items")
    if not isinstance(items, list) or not items:
        raise ApiError("items must be a non-empty list of objects")
    collection = _collection(request)
    results = [
        await request.platform.data.insert_or_update(
            request.user, collection, _item(item, "items[]"), data.get("uniqeness")
        )
        for item in items
    ]
    return {"results": [] if data.get("skipresults") else results}


async def deleteone(request: Request) -> dict[str, Any]:
    """``deleteone``: delete by ``id`` (or ``_id``); the collection's rules may delete it
    their own way (a file in ``fs.files`` goes with its bytes, as in OpenFlow)."""
    data = request.data
    doc_id = data.get("id") or data.get("_id")
    affected = await request.platform.data.delete_one(request.user, _collection(request), doc_id)
    return {"affectedrows": affected}


async def deletemany(request: Request) -> dict[str, Any]:
    """``deletemany``: delete by ``query`` or by a list of ``ids``."""
    data = request.data
    ids = data.get("ids")
    if ids not in (None, []):
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError("ids must be a list of document ids")
        query: dict[str, Any] = {"_id": {"$in": ids}}
    else:
        if data.get("query") is None:
            raise ApiError("deletemany needs a query or ids; send query {} to delete all you may")
        query = parse_filter(data.get("query"), "query")
    affected = await request.platform.data.delete_many(request.user, _collection(request), query)
    return {"affectedrows": affected}


# -- protobuf -------------------------------------------------------------------------------


def distinct_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """``DistinctResponse.results`` are strings: other values travel as JSON."""
    values = reply.get("result", reply.get("results")) or []
    return {"results": [v if isinstance(v, str) else jsonutil.dumps(v) for v in values]}


def updatedocument_in(data: dict[str, Any]) -> dict[str, Any]:
    """``UpdateDocumentRequest.document`` is the JSON protocol's ``item``."""
    if "document" in data:
        data["item"] = data.pop("document")
    return data
