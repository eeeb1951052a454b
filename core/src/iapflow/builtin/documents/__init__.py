"""Built-in plugin: documents. The MongoDB-like commands (query, count, distinct, aggregate,
insert, update, upsert, delete) and the collection commands on the secure data layer, with
OpenFlow's field names and reply shapes, and the entities pages."""

from __future__ import annotations

from pathlib import Path

from iapflow import hookimpl
from iapflow.builtin.documents import collections as c
from iapflow.builtin.documents import commands as d
from iapflow.dispatch import Proto, RegisterCommand, results
from iapflow.web import RegisterUi


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """The document and collection commands."""
    register("query", d.query, proto=Proto("Query", from_reply=results))
    register("count", d.count, proto=Proto("Count"))
    register("distinct", d.distinct, proto=Proto("Distinct", from_reply=d.distinct_reply))
    register("aggregate", d.aggregate, proto=Proto("Aggregate", from_reply=results))
    register("insertone", d.insertone, proto=Proto("InsertOne"))
    register("insertmany", d.insertmany, proto=Proto("InsertMany", from_reply=results))
    register("updateone", d.updateone, proto=Proto("UpdateOne"))
    register(
        "updatemany",
        d.updatemany,
        aliases=["updatedocument"],
        proto=Proto("UpdateDocument", to_dict=d.updatedocument_in),
    )
    register("insertorupdateone", d.insertorupdateone, proto=Proto("InsertOrUpdateOne"))
    register(
        "insertorupdatemany",
        d.insertorupdatemany,
        proto=Proto("InsertOrUpdateMany", from_reply=results),
    )
    register("deleteone", d.deleteone, proto=Proto("DeleteOne"))
    register("deletemany", d.deletemany, proto=Proto("DeleteMany"))
    register(
        "listcollections", c.listcollections, proto=Proto("ListCollections", from_reply=results)
    )
    register(
        "createcollection",
        c.createcollection,
        proto=Proto("CreateCollection", to_dict=c.createcollection_in),
    )
    register("dropcollection", c.dropcollection, proto=Proto("DropCollection"))


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """The entities list and the document page (with its versions)."""
    register("documents", Path(__file__).parent / "ui", ["entities.js", "entity.js"])
