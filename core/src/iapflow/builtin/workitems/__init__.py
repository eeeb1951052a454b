"""Built-in plugin: work item queues. ``addworkitemqueue`` ... ``deleteworkitem``, the rules
of queues in ``mq`` and of ``workitems``, the nudges to consumers (:mod:`.nudger`) and the
work item pages. The rules are in :mod:`iapflow.builtin.workitems.service` and
``docs/workitems.md``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from iapflow import hookimpl
from iapflow.builtin.workitems import commands as c
from iapflow.builtin.workitems.commands import SERVICE
from iapflow.builtin.workitems.nudger import Nudger
from iapflow.builtin.workitems.parse import MQ, WORKITEMS
from iapflow.builtin.workitems.rules import QueueRules, WorkitemRules
from iapflow.builtin.workitems.service import WorkitemService
from iapflow.dispatch import Proto, RegisterCommand
from iapflow.platform import Platform
from iapflow.secure.rules import RulesFactory
from iapflow.stash import StashKey
from iapflow.web import RegisterUi

NUDGER = StashKey[Nudger]("work item nudger")


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """The work item commands (``pushworkitem(s)`` are the protobuf names of
    ``addworkitem(s)``)."""
    queue_in, queue_out = c.workitemqueue_in, c.workitemqueue_out
    register(
        "addworkitemqueue",
        c.addworkitemqueue,
        proto=Proto("AddWorkItemQueue", to_dict=queue_in, from_reply=queue_out),
    )
    register("getworkitemqueue", c.getworkitemqueue)
    register(
        "updateworkitemqueue",
        c.updateworkitemqueue,
        proto=Proto("UpdateWorkItemQueue", to_dict=queue_in, from_reply=queue_out),
    )
    register("deleteworkitemqueue", c.deleteworkitemqueue, proto=Proto("DeleteWorkItemQueue"))
    register(
        "addworkitem",
        c.addworkitem,
        aliases=("pushworkitem",),
        proto=Proto("PushWorkitem", from_reply=c.workitem_out),
    )
    register(
        "addworkitems",
        c.addworkitems,
        aliases=("pushworkitems",),
        proto=Proto("PushWorkitems", to_dict=c.pushworkitems_in, from_reply=c.workitems_out),
    )
    register("popworkitem", c.popworkitem, proto=Proto("PopWorkitem", from_reply=c.workitem_out))
    register(
        "updateworkitem",
        c.updateworkitem,
        proto=Proto("UpdateWorkitem", to_dict=c.updateworkitem_in, from_reply=c.workitem_out),
    )
    register("deleteworkitem", c.deleteworkitem, proto=Proto("DeleteWorkitem"))


@hookimpl
def register_collection_rules(register: Callable[[str, RulesFactory], None]) -> None:
    """Items and queues change only through the work item commands."""
    register(WORKITEMS, WorkitemRules)
    register(MQ, lambda _platform: QueueRules())


@hookimpl
async def startup(platform: Platform) -> None:
    """Indexes for pops and lookups; start the nudge sweep."""
    workitems = WorkitemService(platform)
    await workitems.ensure_indexes()
    nudger = Nudger(platform, workitems)
    platform.stash[SERVICE] = workitems
    platform.stash[NUDGER] = nudger
    nudger.start()


@hookimpl
async def shutdown(platform: Platform) -> None:
    """Stop the sweep."""
    platform.stash.pop(SERVICE)
    nudger = platform.stash.pop(NUDGER)
    if nudger is not None:
        await nudger.stop()


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """The work item queues, a queue's items and an item."""
    modules = ["workitems.js", "workitemqueue.js", "workitem.js"]
    register("workitems", Path(__file__).parent / "ui", modules)
