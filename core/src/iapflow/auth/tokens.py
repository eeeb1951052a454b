"""HS256 JSON web tokens (joserfc) and the secret that signs them.

The payload is OpenFlow's slim form, ``{"data": {"_id", "impostor"}}``, plus ``sub``, ``iat``,
``exp`` and ``iss``. Roles are never in the token: they are resolved on every use. ``data.epoch``
(and ``data.impostorepoch`` when impersonating) is the user's token epoch when the token was
issued: a password change or a disable starts a new epoch, which ends every older token.
Only HS256 is accepted, so ``alg: none`` and algorithm-confusion tokens are refused.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from iapflow.contracts.private import check_private, private_dir, write_secret
from iapflow.errors import ConfigError, NotSignedIn

ISSUER = "iapflow"
TICKET_SCOPE = "download"
_SECRET_FILE = "jwt_secret"
_MIN_SECRET = 32


def check_secret(configured: str) -> None:
    """Refuse a configured secret too short to sign with (an empty one means: keep one in the
    data directory)."""
    if configured and len(configured) < _MIN_SECRET:
        raise ConfigError("auth.jwt_secret", f"must be at least {_MIN_SECRET} characters long")


def load_secret(configured: str, data_dir: Path) -> str:
    """The configured secret, or the one kept in the data directory (made on first use, for
    the server's OS user only)."""
    if configured:
        check_secret(configured)
        return configured
    path = data_dir / _SECRET_FILE
    if path.exists():
        check_private(path)
        return path.read_text(encoding="ascii").strip()
    private_dir(data_dir)
    secret = secrets.token_urlsafe(48)
    write_secret(path, secret)
    return secret


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says."""

    user_id: str
    impostor: str
    expires: int
    long: bool
    epoch: str = ""
    impostor_epoch: str = ""


class TokenService:
    """Issues and verifies tokens with one HS256 key."""

    def __init__(self, secret: str, lifetime: int, long_lifetime: int) -> None:
        self._key = OctKey.import_key(secret.encode("utf-8"))
        self.lifetime = lifetime
        self.long_lifetime = long_lifetime

    def issue(
        self,
        user_id: str,
        impostor: str = "",
        long: bool = False,
        epoch: str = "",
        impostor_epoch: str = "",
    ) -> str:
        """A signed token for ``user_id`` (acting as ``impostor`` when impersonating), in the
        users' current token epochs."""
        now = int(time.time())
        data: dict[str, Any] = {"_id": user_id, "impostor": impostor}
        if epoch:
            data["epoch"] = epoch
        if impostor_epoch:
            data["impostorepoch"] = impostor_epoch
        claims: dict[str, Any] = {
            "data": data,
            "sub": user_id,
            "iss": ISSUER,
            "iat": now,
            "exp": now + (self.long_lifetime if long else self.lifetime),
        }
        if long:
            claims["long"] = True
        return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self._key, algorithms=["HS256"])

    def issue_ticket(self, user_id: str, file_id: str, epoch: str, seconds: int = 300) -> str:
        """A download ticket: for one file, one user, ``seconds`` long. It has no ``data``, so
        :meth:`verify` never takes it for a session token."""
        now = int(time.time())
        claims = {
            "scope": TICKET_SCOPE,
            "fid": file_id,
            "sub": user_id,
            "epoch": epoch,
            "iss": ISSUER,
            "iat": now,
            "exp": now + seconds,
        }
        return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self._key, algorithms=["HS256"])

    def verify_ticket(self, ticket: Any, file_id: str) -> TokenClaims:
        """The claims of a valid download ticket for ``file_id``; NotSignedIn otherwise."""
        if not isinstance(ticket, str) or not ticket or len(ticket) > 2048:
            raise NotSignedIn("invalid download ticket")
        try:
            claims = jwt.decode(ticket, self._key, algorithms=["HS256"]).claims
        except (JoseError, ValueError, TypeError) as exc:
            raise NotSignedIn(f"invalid download ticket: {exc.__class__.__name__}") from None
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            raise NotSignedIn("download ticket expired: ask for a new link")
        if claims.get("iss") != ISSUER or claims.get("scope") != TICKET_SCOPE:
            raise NotSignedIn("invalid download ticket")
        if claims.get("fid") != file_id or not isinstance(claims.get("sub"), str):
            raise NotSignedIn("this download ticket is for another file")
        return TokenClaims(claims["sub"], "", exp, False, str(claims.get("epoch") or ""))

    def verify(self, token: Any) -> TokenClaims:
        """The claims of a valid token; :class:`NotSignedIn` for anything else."""
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise NotSignedIn("invalid token: not a JWT string")
        if token.lower().startswith(("bearer ", "jwt ")):
            token = token.split(" ", 1)[1].strip()
        try:
            decoded = jwt.decode(token, self._key, algorithms=["HS256"])
        except (JoseError, ValueError, TypeError) as exc:
            raise NotSignedIn(f"invalid token: {exc.__class__.__name__}") from None
        claims = decoded.claims
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            raise NotSignedIn("token expired: sign in again")
        if claims.get("iss") != ISSUER:
            raise NotSignedIn("invalid token: wrong issuer")
        data = claims.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("_id"), str):
            raise NotSignedIn("invalid token: no user in it")
        impostor = data.get("impostor") or ""
        return TokenClaims(
            data["_id"],
            str(impostor),
            exp,
            bool(claims.get("long")),
            str(data.get("epoch") or ""),
            str(data.get("impostorepoch") or ""),
        )
