"""Built-in plugin: document history. ``getdocumentversion``, ``getdeleteddocuments``,
``restoredocument``, the history indexes at startup and the page of deleted documents.

The history itself is written by the secure data layer (:mod:`iapflow.secure.history`);
docs/history.md describes the records and the delta format.
"""

from __future__ import annotations

import logging
from pathlib import Path

from iapflow import hookimpl
from iapflow.builtin.history import commands
from iapflow.dispatch import Proto, RegisterCommand
from iapflow.errors import StorageError
from iapflow.platform import Platform
from iapflow.web import RegisterUi

log = logging.getLogger("iapflow.history")


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """The history commands (``getdocumentversion`` in the protobuf protocol too)."""
    register(
        "getdocumentversion",
        commands.getdocumentversion,
        proto=Proto("GetDocumentVersion", to_dict=commands.getdocumentversion_in),
    )
    register("getdeleteddocuments", commands.getdeleteddocuments)
    register("restoredocument", commands.restoredocument)


@hookimpl
async def startup(platform: Platform) -> None:
    """Ensure the ``id`` + ``_version`` index of every history collection already stored."""
    try:
        names = await platform.data.history.ensure_indexes()
    except StorageError as exc:
        log.warning("could not ensure history indexes: %s", exc)
        return
    log.debug("history indexes ensured on %d collections", len(names))


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """The page of deleted documents, to look at and restore."""
    register("history", Path(__file__).parent / "ui", ["deleted.js"])
