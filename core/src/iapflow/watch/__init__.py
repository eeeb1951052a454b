"""Watches: change events pushed to clients (``watch``, ``unwatch``, ``watchevent``).

:mod:`iapflow.watch.hub` runs one change stream per server process and fans it out;
:mod:`iapflow.watch.paths` and :mod:`iapflow.watch.match` decide which events a watch selects.
The commands live in the built-in plugin :mod:`iapflow.commands.watch`.
"""
