"""Files only the server's OS user may read: the data directory and the secrets in it.

The data directory holds the token key (``jwt_secret``), the embedded store's files and
credentials, and the Node-RED instances' folders. It is made ``0700`` and each secret ``0600``;
at start the server names every one that others can read (made by an older version, or by
hand), with the ``chmod`` that fixes it. Plugins use the same helpers for their own secrets.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("iapflow")

_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) with mode ``0700``; warn if it exists and others
    may enter it."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is narrowed by the umask, never widened
    else:
        check_private(path)
    return path


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by the server's OS user only (``0600``); the file
    must not exist yet."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)


def check_private(path: Path) -> bool:
    """False (and a warning naming ``path`` and the fix) when others may read or enter it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return True
    if not mode & _OTHERS:
        return True
    wanted = "700" if stat.S_ISDIR(mode) else "600"
    log.warning(
        "%s can be read by other users of this machine (mode %s): it holds secrets or "
        "documents; run: chmod %s %s",
        path,
        oct(stat.S_IMODE(mode))[2:],
        wanted,
        path,
    )
    return False
