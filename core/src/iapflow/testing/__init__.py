"""Testing support for iapflow and plugin authors: a JSON protocol client and an in-loop server.

Cheap to import: nothing here starts anything until called.
"""

from __future__ import annotations

from iapflow.testing.client import JsonClient, ReplyError
from iapflow.testing.server import make_test_config, running_server, serving

__all__ = ["JsonClient", "ReplyError", "make_test_config", "running_server", "serving"]
