"""Sign-in and principals: who a token or a password belongs to, and what it may do.

Also ensures the built-in roles and users at startup and the first admin from config.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from iapflow import wellknown
from iapflow.auth.passwords import check_password, hash_password
from iapflow.auth.roles import RoleCache
from iapflow.auth.tokens import TokenClaims, TokenService
from iapflow.config import Config
from iapflow.contracts.storage import Document
from iapflow.errors import AccessDenied, ApiError, NotSignedIn
from iapflow.secure.acl import UPDATE, has_right
from iapflow.secure.principal import Principal
from iapflow.secure.principals import PrincipalStore
from iapflow.secure.users import TOKEN_EPOCH, revocation

log = logging.getLogger("iapflow.auth")

Authenticate = Callable[[str, str], Awaitable[Document | None]]
SigninObserver = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class SigninResult:
    """A successful sign-in: who, the token, and when it expires."""

    principal: Principal
    jwt: str
    claims: TokenClaims


class AuthService:
    """Tokens, principals and sign-in over the ``users`` collection."""

    def __init__(
        self,
        config: Config,
        principals: PrincipalStore,
        tokens: TokenService,
        authenticate: Authenticate,
        on_signin: SigninObserver,
    ) -> None:
        self.config = config
        self.principals = principals
        """Users and roles as stored (:mod:`iapflow.secure.principals`)."""
        self.tokens = tokens
        self._authenticate = authenticate
        self._on_signin = on_signin
        self.roles = RoleCache(principals.roles, config.auth.role_cache_seconds)
        self._first_admin_lock = asyncio.Lock()

    # -- principals -----------------------------------------------------------------------------

    async def principal_for_user(self, user: Document, impostor: str = "") -> Principal:
        """Build the principal of a stored user document, with resolved roles."""
        roles = await self.roles.roles_of(str(user["_id"]))
        return Principal(
            id=str(user["_id"]),
            name=str(user.get("name") or user.get("username") or ""),
            username=str(user.get("username") or ""),
            roles=roles,
            email=str(user.get("email") or ""),
            impostor=impostor,
            disabled=bool(user.get("disabled")),
        )

    async def principal_from_token(self, token: Any) -> tuple[Principal, TokenClaims]:
        """Verify ``token`` and load its user; :class:`NotSignedIn` if either fails, or when
        the token is from before the user's (or the impersonating user's) last password change
        or disable."""
        claims = self.tokens.verify(token)
        user = await self._token_user(claims.user_id, claims.epoch)
        if claims.impostor:
            await self._token_user(claims.impostor, claims.impostor_epoch)
        return await self.principal_for_user(user, claims.impostor), claims

    async def principal_from_ticket(self, ticket: Any, file_id: str) -> Principal:
        """The user a download ticket for ``file_id`` was issued to, if it is still valid."""
        claims = self.tokens.verify_ticket(ticket, file_id)
        return await self.principal_for_user(await self._token_user(claims.user_id, claims.epoch))

    async def ticket(self, principal: Principal, file_id: str) -> tuple[str, int]:
        """A download ticket for ``file_id`` and its expiry (Unix seconds)."""
        user = await self.principals.user(principal.id)
        if user is None:
            raise NotSignedIn("user is missing")
        ticket = self.tokens.issue_ticket(principal.id, file_id, str(user.get(TOKEN_EPOCH) or ""))
        return ticket, self.tokens.verify_ticket(ticket, file_id).expires

    async def _token_user(self, user_id: str, epoch: str) -> Document:
        user = await self.principals.user(user_id)
        if user is None:
            raise NotSignedIn("invalid token: its user no longer exists")
        if user.get("disabled"):
            raise NotSignedIn(f"user {user.get('username')} is disabled")
        if str(user.get(TOKEN_EPOCH) or "") != epoch:
            raise NotSignedIn(
                f"token revoked: the password of {user.get('username')} was changed (or the "
                "user disabled) after it was issued; sign in again"
            )
        return user

    def issue(self, user: Document, impostor: Document | None = None, long: bool = False) -> str:
        """A token for the stored ``user`` (impersonated by ``impostor``) in their current
        token epochs."""
        return self.tokens.issue(
            str(user["_id"]),
            str(impostor["_id"]) if impostor else "",
            long,
            str(user.get(TOKEN_EPOCH) or ""),
            str(impostor.get(TOKEN_EPOCH) or "") if impostor else "",
        )

    async def reissue(self, user_id: str, long: bool) -> SigninResult:
        """A new sign-in of a user without a password (its own connection, after it changed
        its password)."""
        stored = await self.principals.user(user_id)
        if stored is None or stored.get("disabled"):
            raise NotSignedIn("user is missing or disabled")
        token = self.issue(stored, long=long)
        return SigninResult(await self.principal_for_user(stored), token, self.tokens.verify(token))

    async def issue_for(self, user_id: str, long: bool = True) -> str:
        """A token for the user with id ``user_id`` (agents get one for their owner)."""
        user = await self.principals.user(user_id)
        if user is None:
            raise NotSignedIn(f"no user with id {user_id!r} to issue a token for")
        return self.issue(user, long=long)

    async def principal_ids(self, principal_id: str) -> list[str] | None:
        """The ids an ACL entry can name to reach a user or role (for ``queryas``)."""
        doc = await self.principals.principal(principal_id)
        if doc is None:
            return None
        roles = await self.roles.roles_of(principal_id, implicit_users=doc.get("_type") == "user")
        return [principal_id, *(r["_id"] for r in roles)]

    # -- sign-in --------------------------------------------------------------------------------

    async def signin(self, data: dict[str, Any], remote: dict[str, str]) -> SigninResult:
        """Sign in by ``username``/``password`` or ``jwt``; impersonate; issue a token.

        Every attempt is reported to ``on_signin`` observers; failures cost
        ``auth.signin_failure_delay_seconds`` to slow down guessing.
        """
        event: dict[str, Any] = {
            "success": False,
            "username": None,
            "userid": None,
            "impostorid": None,
            "remoteip": remote.get("remoteip"),
            "clientagent": data.get("clientagent"),
            "clientversion": data.get("clientversion"),
            "type": "local",
            "reason": None,
        }
        try:
            result = await self._signin(data, event)
        except ApiError as exc:
            event["reason"] = str(exc)
            await self._on_signin(event)
            await asyncio.sleep(self.config.auth.signin_failure_delay_seconds)
            raise
        event["success"] = True
        await self._on_signin(event)
        return result

    async def _signin(self, data: dict[str, Any], event: dict[str, Any]) -> SigninResult:
        long = bool(data.get("longtoken"))
        impostor = ""
        if data.get("jwt"):
            event["type"] = "jwtsignin"
            principal, claims = await self.principal_from_token(data["jwt"])
            event.update(username=principal.username, userid=principal.id)
            user: Document = {"_id": principal.id}
            impostor = claims.impostor
        elif "username" in data or "password" in data:
            username, password = data.get("username"), data.get("password")
            if not isinstance(username, str) or not isinstance(password, str) or not username:
                raise ApiError("signin needs a username and a password (strings), or a jwt")
            event["username"] = username.strip().lower()
            found = await self._authenticate(username, password)
            if found is None:
                found = await self._first_signin_admin(username, password)
            if found is None:
                raise NotSignedIn("unknown username or wrong password")
            if found.get("disabled"):
                event["userid"] = found["_id"]
                raise NotSignedIn(f"user {found.get('username')} is disabled")
            user = found
            event["userid"] = found["_id"]
        else:
            raise ApiError("signin needs a username and a password, or a jwt")

        target = data.get("impersonate")
        if target not in (None, "", "-1", "false", False):
            return await self._impersonate(user, str(target), long, event)
        if impostor and target in ("-1", "false", False):
            # Stop impersonating: back to the real user.
            user, impostor = {"_id": impostor}, ""
        stored = await self.principals.user(user["_id"])
        if stored is None or stored.get("disabled"):
            raise NotSignedIn("user is missing or disabled")
        principal = await self.principal_for_user(stored, impostor)
        real = None
        if impostor:
            real = await self.principals.user(impostor)
            if real is None or real.get("disabled"):
                raise NotSignedIn("the impersonating user is missing or disabled")
        token = self.issue(stored, real, long)
        return SigninResult(principal, token, self.tokens.verify(token))

    async def _impersonate(
        self, user: Document, target_id: str, long: bool, event: dict[str, Any]
    ) -> SigninResult:
        stored = await self.principals.user(user["_id"])
        if stored is None:
            raise NotSignedIn("user is missing")
        real = await self.principal_for_user(stored)
        target = await self.principals.user(target_id)
        if target is None or not has_right(real, target, UPDATE):
            raise AccessDenied(
                f"cannot impersonate {target_id}: you need update right on that user"
            )
        if target.get("disabled"):
            raise NotSignedIn(f"user {target.get('username')} is disabled")
        principal = await self.principal_for_user(target, real.id)
        event.update(type="impersonate", impostorid=real.id, userid=principal.id)
        token = self.issue(target, stored, long)
        return SigninResult(principal, token, self.tokens.verify(token))

    async def _first_signin_admin(self, username: str, password: str) -> Document | None:
        """OpenFlow's first-sign-in-becomes-admin, only when enabled and listening on loopback."""
        if not self.config.auth.first_signin_becomes_admin or not _is_loopback(
            self.config.server.host
        ):
            return None
        async with self._first_admin_lock:
            others = await self.principals.count_users_besides(wellknown.BUILTIN_USERS.values())
            if others:
                return None
            log.warning("first sign-in on an empty system: %s becomes admin", username)
            return await self.add_user(username, password, admin=True)

    # -- users and built-ins --------------------------------------------------------------------

    async def add_user(
        self, username: str, password: str, admin: bool = False, name: str = ""
    ) -> Document:
        """Create a user (or set the password of an existing one, which ends the tokens issued
        before when it is a new password), optionally making it admin."""
        username = username.strip().lower()
        if not username or not password:
            raise ApiError("a user needs a username and a password")
        existing = await self.principals.by_username(username)
        if existing is not None:
            user = existing
            current = str(existing.get("passwordhash") or "")
            rounds = self.config.auth.bcrypt_rounds
            if not current or not await check_password(password, current, rounds):
                passwordhash = await hash_password(password, self.config.auth.bcrypt_rounds)
                fields = {"passwordhash": passwordhash, **revocation()}
                await self.principals.set_fields(existing["_id"], fields)
                user = {**existing, **fields}
        else:
            passwordhash = await hash_password(password, self.config.auth.bcrypt_rounds)
            user = await self.principals.new_user(username, name or username, passwordhash)
        if admin:
            await self.principals.add_member(
                wellknown.ADMINS, user["_id"], user.get("name", username)
            )
        self.roles.invalidate()
        return user

    async def ensure_builtins(self) -> None:
        """Create the well-known roles and users if missing, with their memberships and indexes."""
        await self.principals.ensure_builtins()
        self.roles.invalidate()

    async def ensure_admin_from_config(self) -> None:
        """Create or update the admin named by ``auth.admin_username``/``admin_password``."""
        auth = self.config.auth
        if auth.admin_username and auth.admin_password:
            await self.add_user(auth.admin_username, auth.admin_password, admin=True)
            log.info("ensured admin user %s", auth.admin_username.strip().lower())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
