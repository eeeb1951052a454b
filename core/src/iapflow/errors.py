"""Errors raised by iapflow.

The tree::

    IapflowError                 base of everything iapflow raises on purpose
    ├── StartupError             the server cannot start (bad plugin set, backend failed to start)
    │   ├── ConfigError          a config value is wrong: carries the key and the reason
    │   └── PluginError          a configured plugin is missing or broken: says what to install
    ├── StorageError             the storage backend failed (raised by storage plugins)
    │   ├── DuplicateKeyError    a unique index refused a write
    │   └── TimeLimitExceeded    a read ran past the time it was given
    └── ApiError                 a command was refused: its message goes to the client as is
        ├── NotSignedIn          no valid token for the request
        ├── AccessDenied         the caller lacks a right or a role
        └── InvalidQuery         the store refused a filter, update or pipeline
"""

from __future__ import annotations


class IapflowError(Exception):
    """Base class of every error iapflow raises on purpose."""


class StartupError(IapflowError):
    """The server cannot start."""


class ConfigError(StartupError):
    """A configuration value is wrong.

    :param key: the dotted config key, e.g. ``server.port``.
    :param reason: what is wrong and how to fix it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config {key}: {reason}")
        self.key = key
        self.reason = reason


class PluginError(StartupError):
    """A plugin that the config asks for is missing or failed to load."""


class StorageError(IapflowError):
    """The storage backend failed."""


class DuplicateKeyError(StorageError):
    """A unique index refused an insert or update.

    :param fields: the fields of the unique index (empty when the store did not say).
    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class TimeLimitExceeded(StorageError):
    """A read took longer than the ``max_time_ms`` it was given."""


class ApiError(IapflowError):
    """A command was refused; ``str(error)`` is sent to the client as the error message."""


class NotSignedIn(ApiError):
    """The request carries no valid token and the connection is not signed in."""


class AccessDenied(ApiError):
    """The caller lacks the right or role the command needs."""


class InvalidQuery(ApiError):
    """The store refused a filter, update or pipeline as malformed."""
