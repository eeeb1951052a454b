"""Built-in plugin: files. ``savefile``, ``getfile``, ``updatefile``, ``getdownloadlink``, the
HTTP routes ``GET /download/{id}`` and ``POST /upload``, the ``[files]`` section, the rules of
``fs.files`` and the files pages. Every path goes through :mod:`iapflow.builtin.files.service`,
which applies the ACL in ``metadata._acl`` and the size limit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from starlette.routing import BaseRoute, Route

from iapflow import hookimpl
from iapflow.builtin.files import commands
from iapflow.builtin.files.config import FilesConfig
from iapflow.builtin.files.rules import FileRules
from iapflow.contracts.files import FILES_COLLECTION
from iapflow.dispatch import RegisterCommand
from iapflow.errors import StorageError
from iapflow.platform import Platform
from iapflow.secure.rules import RulesFactory
from iapflow.web import RegisterUi

log = logging.getLogger("iapflow.files")


@hookimpl
def register_config(register: Callable[[str, type[BaseModel]], None]) -> None:
    """``[files]``."""
    register("files", FilesConfig)


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """The file commands (in the protobuf protocol, files move with ``upload`` and
    ``download``)."""
    register("savefile", commands.savefile)
    register("getfile", commands.getfile)
    register("updatefile", commands.updatefile)
    register("getdownloadlink", commands.getdownloadlink)


@hookimpl
def register_routes(register: Callable[[BaseRoute], None]) -> None:
    """``GET /download/{id}`` and ``POST /upload``."""
    register(Route("/download/{id}", commands.download, methods=["GET"]))
    register(Route("/upload", commands.upload, methods=["POST"]))


@hookimpl
def register_collection_rules(register: Callable[[str, RulesFactory], None]) -> None:
    """``deleteone`` in ``fs.files`` deletes the bytes too."""
    register(FILES_COLLECTION, FileRules)


@hookimpl
async def startup(platform: Platform) -> None:
    """Ensure the file store's indexes, and ``fs.files`` on ``metadata.uniquename`` for
    ``getfile`` by name. A storage backend without a file store only logs it."""
    try:
        store = platform.data.file_store()
    except StorageError as exc:
        log.info("no file store, the file commands will fail: %s", exc)
        return
    await store.ensure_indexes()
    await platform.data.service.create_index(FILES_COLLECTION, [("metadata.uniquename", 1)])


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """The files list and the file page."""
    register("files", Path(__file__).parent / "ui", ["files.js", "file.js"])
