"""Admin and proxy authentication: HS256 JWTs signed with a key derived from the cluster secret.

Why derive instead of reusing the secret: the cluster secret also encrypts Raft traffic
(AES-GCM frames, cluster/raft_seal.py); a separate HMAC-derived key means a leaked token-signing key
never decrypts Raft traffic and vice versa.

Revocation and rotation (docs/membership-and-tokens.md): a signature alone cannot be taken back, so
every node also checks a replicated ``TokenPolicy`` (cluster/store.py): a deny-list of token ids
(``jti``) and a token *generation*. Tokens carry ``gen``; rotating bumps the generation, and every
token minted for an older one is rejected. A ``jti`` ends with the token's expiry (``<hex>-<exp>``)
so that revoking by id alone still tells the cluster when the deny-list entry may be dropped.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
import uuid
from collections import OrderedDict
from typing import Any, Protocol

import jwt

ROLES = ("admin", "viewer", "proxy", "registrar")  # registrar: register/heartbeat/deregister targets only
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


@functools.lru_cache(maxsize=8)  # pure; every request verifies a token with it
def token_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"gwadm-token-signing-v1", hashlib.sha256).digest()


def raft_password(secret: str) -> str:
    return hmac.new(secret.encode(), b"gwadm-raft-v1", hashlib.sha256).hexdigest()


class TokenPolicy(Protocol):
    """What every node enforces beyond the signature; cluster/store.py's ConfigStore is one."""

    @property
    def token_generation(self) -> int: ...

    def token_revoked(self, jti: str) -> bool: ...


def mint_token(
    secret: str, role: str, subject: str, ttl_seconds: float = 365 * 86400, *, generation: int = 0
) -> str:
    """A token for ``role``; ``generation`` must be the cluster's current one (see TokenPolicy)."""
    return mint_token_claims(secret, role, subject, ttl_seconds, generation=generation)[0]


def mint_token_claims(
    secret: str, role: str, subject: str, ttl_seconds: float = 365 * 86400, *, generation: int = 0
) -> tuple[str, dict[str, Any]]:
    """``(token, claims)``: the claims tell a caller the ``jti`` to revoke it by, and its ``exp``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = int(time.time())
    exp = now + int(ttl_seconds)
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "role": role,
        "iat": now,
        "exp": exp,
        "jti": f"{uuid.uuid4().hex}-{exp}",
        "gen": int(generation),
    }
    return jwt.encode(claims, token_key(secret), algorithm=ALGORITHM), claims


def jti_expiry(jti: str) -> int | None:
    """The expiry a gwadm ``jti`` ends with, None for ids without one (tokens minted before)."""
    _, sep, tail = jti.rpartition("-")
    return int(tail) if sep and tail.isdigit() else None


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a token WITHOUT checking its signature: only to learn which ``jti`` to revoke."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"not a token: {exc}") from exc
    return claims


def check_policy(claims: dict[str, Any], policy: TokenPolicy) -> None:
    """Raise AuthError if the token was revoked by id or by a rotation after it was minted."""
    gen = claims.get("gen", 0)
    current = policy.token_generation
    if not isinstance(gen, int) or gen < current:
        raise AuthError(
            f"token revoked by a rotation (it is of generation {gen}, the cluster is at {current}): "
            "get a new one with `gwadm token create`"
        )
    jti = claims.get("jti")
    if isinstance(jti, str) and policy.token_revoked(jti):
        raise AuthError("token revoked")


VERIFIED_MEMO = 4096  # tokens whose signature was checked, kept for reuse (a pull fleet re-sends its token each second)
_verified: OrderedDict[tuple[bytes, str], dict[str, Any]] = OrderedDict()


def verify_token(secret: str, token: str, policy: TokenPolicy | None = None) -> dict[str, Any]:
    """Return the claims of a valid token or raise AuthError naming what is wrong.

    Without ``policy`` only signature, expiry and role are checked (no revocation). The signature
    check of a token seen before is remembered (bounded, by exact token and key); expiry, role and
    the policy are checked on every call."""
    key = (token_key(secret), token)
    memo = _verified.get(key)
    if memo is not None and memo["exp"] <= time.time():
        del _verified[key]  # expired: decoding again says so
        memo = None
    if memo is not None:
        claims: dict[str, Any] = dict(memo)
    else:
        try:
            claims = jwt.decode(
                token,
                key[0],
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        if isinstance(claims.get("exp"), int | float):
            _verified[key] = dict(claims)
            while len(_verified) > VERIFIED_MEMO:
                _verified.popitem(last=False)
    if claims.get("role") not in ROLES:
        raise AuthError("invalid token: unknown role")
    if policy is not None:
        check_policy(claims, policy)
    return claims


def stream_credential_problem(claims: dict[str, Any], policy: TokenPolicy | None, now: float) -> str | None:
    """Why a token that opened a long-lived stream no longer holds (expired, revoked, rotated away),
    or None. Streams authenticate once at the handshake; the push hub re-checks with this so that
    revoking or rotating a proxy token actually cuts the proxy off instead of waiting for a reconnect."""
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp <= now:
        return "token expired"
    if policy is not None:
        try:
            check_policy(claims, policy)
        except AuthError as exc:
            return str(exc)
    return None

