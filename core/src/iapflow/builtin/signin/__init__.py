"""Built-in plugin: sign-in. The ``signin`` command (password, token, impersonation), the
``local`` password provider and the sign-in page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from iapflow import hookimpl
from iapflow.builtin.signin.commands import PROTO, signin
from iapflow.builtin.signin.local import LocalProvider
from iapflow.contracts.auth import AuthProvider
from iapflow.dispatch import RegisterCommand
from iapflow.web import RegisterUi


@hookimpl
def register_commands(register: RegisterCommand) -> None:
    """``signin``, for anonymous connections too."""
    register("signin", signin, signed_in=False, authenticates=True, proto=PROTO)


@hookimpl
def register_auth_providers(register: Callable[[str, AuthProvider], None]) -> None:
    """The ``local`` password provider (bcrypt hashes in ``users``)."""
    register("local", LocalProvider())


@hookimpl
def register_ui(register: RegisterUi) -> None:
    """The sign-in page."""
    register("signin", Path(__file__).parent / "ui", ["signin.js"])
