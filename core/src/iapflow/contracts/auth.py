"""The password sign-in contract: what a ``register_auth_providers`` plugin registers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from iapflow.contracts.storage import Document
    from iapflow.platform import Platform


@runtime_checkable
class AuthProvider(Protocol):
    """Checks a username and password. On each password sign-in the providers are asked in
    pluggy's calling order (installed plugins before the built-in ``local``) until one returns
    a user."""

    async def authenticate(
        self, platform: Platform, username: str, password: str
    ) -> Document | None:
        """The stored user document (from ``users``, which iapflow loads again by ``_id`` and
        refuses when disabled) when the credentials are right, else ``None``. ``username`` is
        as the client typed it."""
