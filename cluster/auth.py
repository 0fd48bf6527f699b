"""Admin and proxy authentication: HS256 JWTs signed with a key derived from the cluster secret.

Why derive instead of reusing the secret: the cluster secret also encrypts Raft traffic
(pysyncobj's Fernet ``password``); a separate HMAC-derived key means a leaked token-signing key
never decrypts Raft traffic and vice versa.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from typing import Any

import jwt

ROLES = ("admin", "viewer", "proxy")
ALGORITHM = "HS256"
ISSUER = "gwadm"


class AuthError(Exception):
    """Missing, malformed, expired or badly signed token; ``reason`` goes into the 401 body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_secret() -> str:
    """A fresh cluster secret (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"gwadm-token-signing-v1", hashlib.sha256).digest()


def raft_password(secret: str) -> str:
    return hmac.new(secret.encode(), b"gwadm-raft-v1", hashlib.sha256).hexdigest()


def mint_token(secret: str, role: str, subject: str, ttl_seconds: float = 365 * 86400) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "role": role,
        "iat": now,
        "exp": now + int(ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, token_key(secret), algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> dict[str, Any]:
    """Return the claims of a valid token or raise AuthError naming what is wrong."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            token_key(secret),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    if claims.get("role") not in ROLES:
        raise AuthError("invalid token: unknown role")
    return claims
