"""cors: answer preflight requests at the proxy and add CORS headers to actual responses.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) never reaches the
upstream: it is answered 204 here, with the CORS headers only if the origin is allowed, so the
browser decides. cors runs before authentication because browsers send preflights without
credentials. ``*`` with ``credentials`` is answered by echoing the origin, since browsers reject a
literal ``*`` on credentialed requests; whenever the answer depends on the origin, ``Vary: Origin``
is added so caches keep answers apart.
"""

from __future__ import annotations

from proxy.http_common import Response
from proxy.plugins.base import Plugin, RequestContext


def _add_vary(resp: Response, value: str) -> None:
    current = resp.headers.get("Vary")
    if not current:
        resp.headers["Vary"] = value
    elif value.lower() not in {v.strip().lower() for v in current.split(",")}:
        resp.headers["Vary"] = f"{current}, {value}"


class Cors(Plugin):
    name = "cors"
    priority = 1800

    def allowed_origin(self, origin: str) -> str | None:
        """The value for Access-Control-Allow-Origin, or None when the origin is not allowed."""
        origins = self.config["origins"]
        if "*" in origins:
            return origin if self.config["credentials"] else "*"
        return origin if origin in origins else None

    def _common(self, resp: Response, allowed: str) -> None:
        resp.headers["Access-Control-Allow-Origin"] = allowed
        if self.config["credentials"]:
            resp.headers["Access-Control-Allow-Credentials"] = "true"
        if allowed != "*":
            _add_vary(resp, "Origin")

    def check(self, ctx: RequestContext) -> Response | None:
        headers = ctx.request.headers
        origin = headers.get("Origin")
        if ctx.method != "OPTIONS" or not origin or "Access-Control-Request-Method" not in headers:
            return None
        ctx.data["cors-preflight"] = True
        resp = Response(204)
        allowed = self.allowed_origin(origin)
        if allowed is None:
            _add_vary(resp, "Origin")
            return resp
        self._common(resp, allowed)
        resp.headers["Access-Control-Allow-Methods"] = ", ".join(self.config["methods"])
        requested = headers.get("Access-Control-Request-Headers")
        if self.config["headers"]:
            resp.headers["Access-Control-Allow-Headers"] = ", ".join(self.config["headers"])
        elif requested:
            resp.headers["Access-Control-Allow-Headers"] = requested
            _add_vary(resp, "Access-Control-Request-Headers")
        resp.headers["Access-Control-Max-Age"] = str(self.config["max_age"])
        return resp

    def response(self, ctx: RequestContext, resp: Response) -> None:
        origin = ctx.request_header("Origin")
        if not origin or ctx.data.get("cors-preflight"):
            return
        allowed = self.allowed_origin(origin)
        if allowed is None:
            if "*" not in self.config["origins"]:
                _add_vary(resp, "Origin")
            return
        self._common(resp, allowed)
        if self.config["exposed_headers"]:
            resp.headers["Access-Control-Expose-Headers"] = ", ".join(self.config["exposed_headers"])
