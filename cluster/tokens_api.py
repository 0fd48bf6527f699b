"""Token endpoints: create, list revocations, revoke, rotate (docs/membership-and-tokens.md).

Revocations and rotations are ordinary replicated commands; their answer waits until every
reachable member has applied them, so that when ``gwadm token revoke`` returns, every node already
rejects the token.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from cluster.app_keys import SETTINGS_KEY, STORE_KEY
from cluster.auth import ROLES, AuthError, jti_expiry, mint_token_claims, unverified_claims
from cluster.members import fetch_peers, json_object
from cluster.timeouts import request_timeout
from gateway.errors import ValidationError

MAX_TOKEN_TTL = 10 * 365 * 86400


async def _applied_everywhere(request: web.Request, timeout: float = 3.0) -> dict[str, list[str]]:
    """Wait until every member has applied what this node has; who did (``enforced_on``), who not yet."""
    store = request.app[STORE_KEY]
    index = store.applied_index()
    deadline = time.monotonic() + timeout
    done = {store.node_id}
    while True:
        for peer, data, _error in await fetch_peers(request, "/v1/status"):
            if data is not None and int(data.get("applied_index") or 0) >= index:
                done.add(peer.id)
        pending = sorted(m.id for m in store.members() if m.id not in done)
        if not pending or time.monotonic() > deadline:
            return {"enforced_on": sorted(done), "pending": pending}
        await asyncio.sleep(0.05)


async def get_tokens(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    await store.barrier(request_timeout(request, request.app[SETTINGS_KEY]["read_timeout"]))
    tokens = store.token_state()
    revoked = [{"jti": j, "exp": e} for j, e in sorted(tokens["revoked"].items())]
    return web.json_response({"generation": tokens["generation"], "revoked": revoked})


async def create_token(request: web.Request) -> web.Response:
    body = json_object(await request.read(), "token")
    unknown = set(body) - {"role", "subject", "ttl_seconds"}
    if unknown:
        raise ValidationError(f"unknown field {sorted(unknown)[0]!r}", f"token.{sorted(unknown)[0]}")
    role, subject, ttl = body.get("role"), body.get("subject", "gwadm-user"), body.get("ttl_seconds", 30 * 86400)
    if role not in ROLES:
        raise ValidationError(f"must be one of {', '.join(ROLES)}", "token.role")
    if not isinstance(subject, str) or not 0 < len(subject) <= 200:
        raise ValidationError("must be a string of 1 to 200 characters", "token.subject")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TOKEN_TTL:
        raise ValidationError(f"must be an integer number of seconds, 1..{MAX_TOKEN_TTL}", "token.ttl_seconds")
    store = request.app[STORE_KEY]
    await store.barrier(request_timeout(request, request.app[SETTINGS_KEY]["read_timeout"]))  # mint for the generation as of now
    return web.json_response(_minted(request, role, subject, ttl), status=201)


def _minted(request: web.Request, role: str, subject: str, ttl: int) -> dict[str, Any]:
    store = request.app[STORE_KEY]
    token, claims = mint_token_claims(request.app[SETTINGS_KEY]["secret"], role, subject, ttl,
                                      generation=store.token_generation)
    return {"token": token, **{k: claims[k] for k in ("jti", "exp", "role")}, "subject": subject,
            "generation": claims["gen"]}


async def revoke_token(request: web.Request) -> web.Response:
    body = json_object(await request.read(), "revoke")
    unknown = set(body) - {"jti", "token", "exp"}
    if unknown or ("jti" in body) == ("token" in body):
        raise ValidationError("give either jti or token (and optionally exp)", "revoke")
    jti, exp = body.get("jti"), body.get("exp")
    if "token" in body:
        try:
            claims = unverified_claims(str(body["token"]))
        except AuthError as exc:
            raise ValidationError(exc.reason, "revoke.token") from None
        jti, exp = claims.get("jti"), exp if exp is not None else claims.get("exp")
    if not isinstance(jti, str) or not 0 < len(jti) <= 200:
        raise ValidationError("must be a token id of 1 to 200 characters", "revoke.jti")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int)):
        raise ValidationError("must be a Unix time (integer seconds)", "revoke.exp")
    exp = exp if exp is not None else jti_expiry(jti)
    store = request.app[STORE_KEY]
    cmd = {"type": "token_revoke", "jti": jti, "exp": exp, "now": int(time.time())}
    await store.token_command(cmd, request_timeout(request, request.app[SETTINGS_KEY]["write_timeout"]))
    return web.json_response({"revoked": jti, "until": exp, **await _applied_everywhere(request)})


async def rotate_tokens(request: web.Request) -> web.Response:
    """Reject every token minted so far; the answer carries a fresh admin token for the caller."""
    store = request.app[STORE_KEY]
    request_id = request.headers.get("X-Request-Id") or store.new_request_id()
    request["request_id"] = request_id
    cmd = {"type": "token_rotate", "request_id": request_id, "now": int(time.time())}
    await store.token_command(cmd, request_timeout(request, request.app[SETTINGS_KEY]["write_timeout"]))
    caller = request["auth"]
    lifetime = max(int(caller["exp"]) - int(caller["iat"]), 3600)
    minted = _minted(request, "admin", str(caller.get("sub") or "gwadm-user"), min(lifetime, MAX_TOKEN_TTL))
    return web.json_response({**minted, **await _applied_everywhere(request)})


def add_token_routes(app: web.Application) -> None:
    app.router.add_get("/v1/tokens", get_tokens)
    app.router.add_post("/v1/tokens", create_token)
    app.router.add_post("/v1/tokens/revoke", revoke_token)
    app.router.add_post("/v1/tokens/rotate", rotate_tokens)
