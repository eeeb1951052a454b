"""The secure data layer: the only code that talks to storage.

Every read, update and delete is narrowed by the caller's ACL filter; every write sets the
system fields (``_type``, ``_created*``, ``_modified*``, ``_version``) and a clean ``_acl``,
and every change is recorded in ``<collection>_hist`` (:mod:`iapflow.secure.history`).
"""

from __future__ import annotations

from iapflow.secure.collections import Collections
from iapflow.secure.deletes import Deletes
from iapflow.secure.documents import duplicate
from iapflow.secure.reads import Reads
from iapflow.secure.service import ServiceWrites
from iapflow.secure.versions import Versions
from iapflow.secure.writes import Writes


class DataLayer(Reads, Writes, Deletes, Versions, Collections):
    """Secure document operations for one storage backend: :mod:`.reads`, :mod:`.writes`,
    :mod:`.deletes`, :mod:`.versions` (history) and :mod:`.collections`, over the state of
    :class:`iapflow.secure.base.LayerBase`."""


__all__ = ["DataLayer", "ServiceWrites", "duplicate"]
