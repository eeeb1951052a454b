"""The signed-in caller: a user with its transitively resolved roles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iapflow import wellknown


@dataclass
class Principal:
    """Who is asking. ``ids`` are the user's own id plus every role it belongs to."""

    id: str
    name: str
    username: str
    roles: list[dict[str, str]] = field(default_factory=list)
    email: str = ""
    impostor: str = ""
    disabled: bool = False

    @property
    def ids(self) -> list[str]:
        """The principal ids an ACL entry can name to reach this caller."""
        return [self.id, *(role["_id"] for role in self.roles)]

    @property
    def is_admin(self) -> bool:
        """Root and members of ``admins`` bypass every ACL check."""
        return self.id == wellknown.ROOT or any(r["_id"] == wellknown.ADMINS for r in self.roles)

    def token_user(self) -> dict[str, Any]:
        """The ``user`` object OpenFlow clients expect in sign-in replies (TokenUser)."""
        user: dict[str, Any] = {
            "_id": self.id,
            "name": self.name,
            "username": self.username,
            "email": self.email,
            "roles": [{"_id": r["_id"], "name": r["name"]} for r in self.roles],
        }
        if self.impostor:
            user["impostor"] = self.impostor
        return user
