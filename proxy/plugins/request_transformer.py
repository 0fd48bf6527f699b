"""request-transformer: add/remove upstream request headers and rewrite the upstream path.

Runs after authentication and rate limiting, so a header it adds cannot be used to impersonate a
consumer to those plugins, and ``rewrite_path`` replaces the whole path the upstream sees (after
``strip_prefix``); the query string is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.http_common import Response, encode_header
from proxy.plugins.base import Plugin, RequestContext


class RequestTransformer(Plugin):
    name = "request-transformer"
    priority = 800

    def __init__(self, config: Mapping[str, Any], *, scope: str = "global") -> None:
        super().__init__(config, scope=scope)
        # pre-encoded at build time: a request pays a list append per added header
        self._add = [(n, v, encode_header(n, v)) for n, v in self.config["add_headers"].items()]

    def check(self, ctx: RequestContext) -> Response | None:
        for name in self.config["remove_headers"]:
            ctx.remove_upstream_header(name)
        for name, value, line in self._add:
            ctx.set_upstream_header(name, value, line)
        if self.config["rewrite_path"] is not None:
            ctx.upstream_path = self.config["rewrite_path"]
        return None
