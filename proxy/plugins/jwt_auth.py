"""jwt-auth: bearer tokens signed with a consumer's key or with a key from a JWKS endpoint.

Without ``jwks_url`` the verification key comes from the consumer credential whose ``key`` equals
the token's ``key_claim`` claim (default ``iss``) or, failing that, its ``kid`` header. The
credential's algorithm is the only one accepted for that key, so a token cannot pick ``HS256`` to
use an RSA public key as an HMAC secret. With ``jwks_url`` the key comes from the cached JWKS
(proxy/jwks.py) by ``kid``; a consumer is attached when a jwt-auth credential has the token's
``key_claim`` value as key, otherwise the request is authenticated without a consumer.

Claims in ``claims_to_verify`` must be present; ``exp``/``nbf`` are checked whenever present,
``iss``/``aud`` when configured, all with ``leeway``. Refusals are 401 with a JSON body and an
RFC 6750 ``WWW-Authenticate: Bearer`` challenge.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from gateway.plugin_schemas import JWT_ALGORITHMS
from proxy.http_common import Response
from proxy.jwks import JwksUnavailable
from proxy.plugins.base import (
    AUTH_PRIORITY,
    Consumer,
    JwtCredential,
    Plugin,
    RequestContext,
    json_error,
)

log = logging.getLogger(__name__)

ALGORITHMS = JWT_ALGORITHMS
VERIFIED_CACHE = 10_000  # verified tokens remembered per plugin (JWKS-verified ones are not)
REALM = "gwadm"


def _challenge(error: str | None = None, description: str | None = None) -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append('error_description="{}"'.format(description.replace('"', "'")))
    return "Bearer " + ", ".join(parts)


def unauthorized(message: str, *, error: str | None = "invalid_token") -> Response:
    return json_error(401, "unauthorized", message, {"WWW-Authenticate": _challenge(error, message if error else None)})


class JwtAuth(Plugin):
    name = "jwt-auth"
    priority = AUTH_PRIORITY
    is_auth = True

    def _token(self, ctx: RequestContext) -> str | None:
        raw = ctx.request_header(self.config["header"])
        if not raw:
            return None
        scheme, _, rest = raw.strip().partition(" ")
        if rest and scheme.lower() == "bearer":
            return rest.strip() or None
        return raw.strip() if not rest else None

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        c = self.config
        with warnings.catch_warnings():
            # weak keys are reported once at build time (Runtime.warnings), not on every request
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=c["issuer"],
                audience=c["audience"],
                leeway=c["leeway"],
                options={
                    "require": list(c["claims_to_verify"]),
                    "verify_aud": c["audience"] is not None,
                    "verify_iss": c["issuer"] is not None,
                },
            )

    def __init__(self, config: Mapping[str, Any], *, scope: str = "global") -> None:
        super().__init__(config, scope=scope)
        # token -> (consumer, claims, exp, nbf/iat): tokens whose signature this plugin verified
        # against a consumer credential of the runtime it belongs to (a new config builds a new
        # plugin, so the cache never outlives the credentials). Hits re-check the time claims.
        self._verified: dict[str, tuple[Consumer, dict[str, Any], float | None, float | None]] = {}
        self.sync = not self.config["jwks_url"]  # a JWKS fetch is the one access phase that awaits

    def _cached(self, ctx: RequestContext, token: str) -> bool:
        hit = self._verified.get(token)
        if hit is None:
            return False
        consumer, claims, exp, not_before = hit
        now, leeway = time.time(), self.config["leeway"]
        if (exp is not None and exp <= now - leeway) or (not_before is not None and not_before > now + leeway):
            del self._verified[token]  # the full check gives the precise error
            return False
        ctx.consumer = consumer
        ctx.data["jwt_claims"] = claims
        return True

    def _remember(self, token: str, consumer: Consumer, claims: dict[str, Any]) -> None:
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.pop(next(iter(self._verified)))
        exp = claims.get("exp")
        starts = [float(v) for k in ("nbf", "iat") if isinstance(v := claims.get(k), int | float)]
        self._verified[token] = (
            consumer, claims, float(exp) if isinstance(exp, int | float) else None, max(starts) if starts else None
        )

    def _parse(self, ctx: RequestContext) -> Response | tuple[str, str, str | None, str | None] | None:
        """None: accepted from the cache; a Response: refused; else (token, alg, kid, key claim)."""
        token = self._token(ctx)
        if token is None:
            return unauthorized("missing bearer token", error=None)
        if self._cached(ctx, token):
            return None
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return unauthorized("malformed token")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config["algorithms"]:
            return unauthorized("token algorithm not allowed")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        claim = unverified.get(self.config["key_claim"])
        return token, alg, kid, claim if isinstance(claim, str) else None

    def check(self, ctx: RequestContext) -> Response | None:
        """Verification against consumer credentials: no IO, so it runs inline (``sync``)."""
        parsed = self._parse(ctx)
        if parsed is None or isinstance(parsed, Response):
            return parsed
        token, alg, kid, claim = parsed
        creds: tuple[JwtCredential, ...] = ()
        for name in (claim, kid):
            if name is not None and name in ctx.consumers.jwt:
                creds = ctx.consumers.jwt[name]
                break
        if not creds:
            return unauthorized("no credential for this token")
        last_error = "signature verification failed"
        for cred in creds:
            if cred.algorithm != alg or cred.verify_key is None:
                last_error = "token algorithm does not match the credential"
                continue
            try:
                claims = self._decode(token, cred.verify_key, alg)
            except jwt.PyJWTError as exc:
                last_error = _describe(exc)
                continue
            ctx.consumer = cred.consumer
            ctx.data["jwt_claims"] = claims
            self._remember(token, cred.consumer, claims)
            return None
        return unauthorized(last_error)

    async def access(self, ctx: RequestContext) -> Response | None:
        if not self.config["jwks_url"]:
            return self.check(ctx)
        parsed = self._parse(ctx)
        if parsed is None or isinstance(parsed, Response):
            return parsed
        return await self._access_jwks(ctx, *parsed)

    async def _access_jwks(
        self, ctx: RequestContext, token: str, alg: str, kid: str | None, claim: str | None
    ) -> Response | None:
        cache = ctx.services.jwks
        if cache is None:
            log.error("jwt-auth: jwks_url configured but no JWKS cache is available")
            return json_error(503, "jwks_unavailable", "signing keys are not available")
        try:
            keyset = await cache.get(self.config["jwks_url"], self.config["jwks_cache_ttl"], kid)
        except JwksUnavailable:
            return json_error(503, "jwks_unavailable", "signing keys are not available")
        last_error = "no matching signing key"
        for jwk in keyset.candidates(kid):
            if jwk.algorithm_name != alg:
                continue
            try:
                claims = self._decode(token, jwk.key, alg)
            except jwt.PyJWTError as exc:
                last_error = _describe(exc)
                continue
            if claim is not None and claim in ctx.consumers.jwt:
                ctx.consumer = ctx.consumers.jwt[claim][0].consumer
            ctx.data["jwt_claims"] = claims
            return None
        return unauthorized(last_error)


def _describe(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the {exc.claim} claim"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "invalid issuer"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "invalid audience"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "signature verification failed"
    return "invalid token"
