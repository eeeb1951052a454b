"""iapflow: a Python platform compatible with OpenIAP OpenFlow.

Public API: :data:`hookimpl` for plugins, :func:`create_app`, :func:`load_config`, ``__version__``.
"""

from __future__ import annotations

from importlib import metadata

import pluggy

try:
    __version__ = metadata.version("iapflow")
except metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

hookimpl = pluggy.HookimplMarker("iapflow")

__all__ = ["__version__", "hookimpl"]
