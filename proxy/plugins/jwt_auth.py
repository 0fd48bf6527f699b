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
import warnings
from collections.abc import Mapping
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from proxy.http_common import Response
from proxy.jwks import JwksUnavailable
from proxy.plugins.base import (
    AUTH_PRIORITY,
    JwtCredential,
    Plugin,
    RequestContext,
    json_error,
    number,
    opt_str,
    req_str,
    str_list,
)

log = logging.getLogger(__name__)

ALGORITHMS = ("HS256", "RS256", "ES256")
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

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        c = super().parse(config)
        n = cls.name
        algorithms = str_list(c, "algorithms", ALGORITHMS, n)
        if not algorithms or any(a not in ALGORITHMS for a in algorithms):
            raise ValueError(f"{n}.algorithms: must be a non-empty subset of {list(ALGORITHMS)}")
        claims = str_list(c, "claims_to_verify", ["exp"], n)
        if any(x not in ("exp", "nbf") for x in claims):
            raise ValueError(f"{n}.claims_to_verify: only exp and nbf are supported")
        jwks_url = opt_str(c, "jwks_url", None, n)
        if jwks_url is not None and not jwks_url.startswith(("http://", "https://")):
            raise ValueError(f"{n}.jwks_url: must be an http(s) URL")
        return {
            "header": req_str(c, "header", "authorization", n).lower(),
            "algorithms": algorithms,
            "claims_to_verify": claims,
            "issuer": opt_str(c, "issuer", None, n),
            "audience": opt_str(c, "audience", None, n),
            "leeway": number(c, "leeway", 0, n),
            "key_claim": req_str(c, "key_claim", "iss", n),
            "jwks_url": jwks_url,
            "jwks_cache_ttl": number(c, "jwks_cache_ttl", 300.0, n, minimum=1e-9),
        }

    def _token(self, ctx: RequestContext) -> str | None:
        raw = ctx.request.headers.get(self.config["header"])
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

    async def access(self, ctx: RequestContext) -> Response | None:
        token = self._token(ctx)
        if token is None:
            return unauthorized("missing bearer token", error=None)
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
        claim = claim if isinstance(claim, str) else None
        if self.config["jwks_url"]:
            return await self._access_jwks(ctx, token, alg, kid, claim)
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
            return None
        return unauthorized(last_error)

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
