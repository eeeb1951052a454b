"""Rules for ``fs.files`` as the generic document commands see it: ``deleteone`` deletes the
file with its bytes (OpenFlow's behaviour); every other write goes through the file commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iapflow.builtin.files.service import secure_files
from iapflow.secure.rules import CollectionRules

if TYPE_CHECKING:
    from iapflow.platform import Platform
    from iapflow.secure.principal import Principal


class FileRules(CollectionRules):
    """``deleteone`` in ``fs.files`` (alias ``files``)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def delete_one(self, principal: Principal, doc_id: str) -> int | None:
        """The file and its bytes, with the delete right on the file."""
        await secure_files(self.platform).delete(principal, doc_id)
        return 1
