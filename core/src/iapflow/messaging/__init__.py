"""Messaging: the broker contract, the in-process broker and the queue service the queue
commands use."""
