"""request-transformer: add/remove upstream request headers and rewrite the upstream path.

Runs after authentication and rate limiting, so a header it adds cannot be used to impersonate a
consumer to those plugins, and ``rewrite_path`` replaces the whole path the upstream sees (after
``strip_prefix``); the query string is kept.
"""

from __future__ import annotations

from proxy.http_common import Response
from proxy.plugins.base import Plugin, RequestContext


class RequestTransformer(Plugin):
    name = "request-transformer"
    priority = 800

    async def access(self, ctx: RequestContext) -> Response | None:
        for name in self.config["remove_headers"]:
            ctx.remove_upstream_header(name)
        for name, value in self.config["add_headers"].items():
            ctx.set_upstream_header(name, value)
        if self.config["rewrite_path"] is not None:
            ctx.upstream_path = self.config["rewrite_path"]
        return None
