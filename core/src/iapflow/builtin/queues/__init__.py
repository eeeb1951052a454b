"""Built-in plugin: queues. ``registerqueue``, ``registerexchange``, ``queuemessage`` and
``closequeue`` on the configured broker, the ``[queues]`` section, the rules of claims in
``mq`` and the queues pages.

The rules (who may consume, who may send, what is claimed) are in ``docs/queues.md``; the work
is done by :class:`iapflow.builtin.queues.service.QueueService`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from iapflow import hookimpl
from iapflow.builtin.queues import commands
from iapflow.builtin.queues.commands import SERVICE
from iapflow.builtin.queues.config import QueuesConfig
from iapflow.builtin.queues.rules import MQ, ClaimRules
from iapflow.builtin.queues.service import QueueService
from iapflow.dispatch import Proto, ProtoPush, RegisterCommand
from iapflow.platform import Platform
from iapflow.secure.rules import RulesFactory
from iapflow.session import Session
from iapflow.web import RegisterUi

QUEUEMESSAGE = Proto(
    "QueueMessage",
    pushes=(("queuemessage", ProtoPush("queueevent", "QueueEvent", commands.queueevent)),),
)


@hookimpl
def register_config(register: Callable[[str, type[BaseModel]], None]) -> None:
    """``[queues]``."""
    register("queues", QueuesConfig)


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """The queue commands (``closequeue`` is ``unregisterqueue`` in the protobuf protocol)."""
    register("registerqueue", commands.registerqueue, proto=Proto("RegisterQueue"))
    register("registerexchange", commands.registerexchange, proto=Proto("RegisterExchange"))
    register("queuemessage", commands.queuemessage, proto=QUEUEMESSAGE)
    register(
        "closequeue",
        commands.closequeue,
        aliases=("unregisterqueue",),
        proto=Proto("UnRegisterQueue"),
    )


@hookimpl
def register_collection_rules(register: Callable[[str, RulesFactory], None]) -> None:
    """Claims in ``mq`` change only through the queue commands."""
    register(MQ, lambda _platform: ClaimRules())


@hookimpl
def startup(platform: Platform) -> None:
    """Create the queue service on the platform's broker."""
    platform.stash[SERVICE] = QueueService(platform)


@hookimpl
async def on_session_closed(platform: Platform, session: Session) -> None:
    """Consumers and temporary queues of a closed connection disappear."""
    found = platform.stash.get(SERVICE)
    if found is not None:
        await found.session_closed(session)


@hookimpl
def on_document_change(
    platform: Platform, collection: str, operation: str, document: dict[str, Any]
) -> None:
    """Rights on queues follow ``users`` and ``mq`` documents: forget cached lookups."""
    found = platform.stash.get(SERVICE)
    if found is not None:
        found.forget(collection)


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """The queues list and the queue page."""
    register("queues", Path(__file__).parent / "ui", ["queues.js", "queue.js"])
