"""``[files]``: the section of the files package."""

from __future__ import annotations

from pydantic import Field

from iapflow.config import Section


class FilesConfig(Section):
    """``[files]``: the file store (``savefile``, ``getfile``, ``/upload``, ``/download``)."""

    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1)
