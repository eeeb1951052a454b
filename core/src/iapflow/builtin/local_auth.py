"""Built-in plugin: password sign-in against bcrypt hashes in the ``users`` collection."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iapflow import hookimpl
from iapflow.auth.passwords import check_password

if TYPE_CHECKING:
    from iapflow.platform import Platform


class LocalProvider:
    """Looks the user up by lower-cased username and checks the password with bcrypt."""

    async def authenticate(
        self, platform: Platform, username: str, password: str
    ) -> dict[str, Any] | None:
        """The stored user when the password matches, else ``None``."""
        user = await platform.storage.find_one(
            "users", {"_type": "user", "username": username.strip().lower()}
        )
        hashed = user.get("passwordhash") if user else None
        ok = await check_password(
            password,
            hashed if isinstance(hashed, str) else None,
            platform.config.auth.bcrypt_rounds,
        )
        return user if ok else None


@hookimpl
def register_auth_providers(register: Callable[[str, Any], None]) -> None:
    """Provide the ``local`` password provider."""
    register("local", LocalProvider())
