"""The ``local`` password provider: bcrypt hashes in the ``users`` collection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iapflow.auth.passwords import check_password

if TYPE_CHECKING:
    from iapflow.platform import Platform


class LocalProvider:
    """Looks the user up by lower-cased username and checks the password with bcrypt."""

    async def authenticate(
        self, platform: Platform, username: str, password: str
    ) -> dict[str, Any] | None:
        """The stored user when the password matches, else ``None``."""
        user = await platform.auth.principals.by_username(username.strip().lower())
        hashed = user.get("passwordhash") if user else None
        ok = await check_password(
            password,
            hashed if isinstance(hashed, str) else None,
            platform.config.auth.bcrypt_rounds,
        )
        return user if ok else None
