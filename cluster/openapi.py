"""``GET /v1/openapi.json``: the generated OpenAPI 3.1 document (gateway/openapi.py).

Needs a token of role admin or viewer (the auth middleware's rules): the document holds no
secret, but it tells an anonymous client nothing it could not learn by asking with a token.
Built once per app (it only depends on code), served with this node's admin URL as the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cluster.app_keys import SETTINGS_KEY
from gateway.errors import ValidationError
from gateway.openapi import build_openapi

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_DOC_KEY = "openapi_doc"


async def get_openapi(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    doc = settings.get(_DOC_KEY)
    if doc is None:
        doc = settings[_DOC_KEY] = build_openapi(settings.get("admin_url"))
    return web.json_response(doc)


def add_openapi_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", get_openapi)


# -- unknown query parameters are an error, as unknown body fields are -------------------------------
def _query_params(doc: dict[str, Any]) -> dict[tuple[str, str], frozenset[str]]:
    out: dict[tuple[str, str], frozenset[str]] = {}
    for path, item in doc["paths"].items():
        shared = [p["name"] for p in item.get("parameters", []) if p["in"] == "query"]
        for method, op in item.items():
            if method == "parameters":
                continue
            names = shared + [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
            out[(method.upper(), path)] = frozenset(names)
    return out


_QUERY = _query_params(build_openapi())


def _doc_path(request: web.Request) -> str | None:
    route = request.match_info.route
    if route.resource is None:
        return None
    path = route.resource.canonical
    kind = request.match_info.get("kind")
    return path.replace("{kind}", kind) if kind is not None else path


@web.middleware
async def query_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """422 for a query parameter the document does not list for this operation (``?consistensy=``
    must not silently mean linearizable); the allowed names are read from the OpenAPI document."""
    if request.query:
        allowed = _QUERY.get((request.method, _doc_path(request) or ""))
        if allowed is not None:
            for name in request.query:
                if name not in allowed:
                    known = ", ".join(sorted(allowed)) or "none"
                    raise ValidationError(f"unknown query parameter (known: {known})", name[:100])
        if request.query.get("consistency", "linearizable") not in ("linearizable", "stale"):
            raise ValidationError("must be linearizable or stale", "consistency")
    return await handler(request)
