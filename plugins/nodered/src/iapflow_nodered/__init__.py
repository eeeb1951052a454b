"""iapflow-nodered: agent runtimes (``process``, ``stub``) and the per-user Node-RED commands."""

__version__ = "0.1.0"
