"""request-transformer: add/remove upstream request headers and rewrite the upstream path.

Runs after authentication and rate limiting, so a header it adds cannot be used to impersonate a
consumer to those plugins, and ``rewrite_path`` replaces the whole path the upstream sees (after
``strip_prefix``); the query string is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.http_common import Response
from proxy.plugins.base import Plugin, RequestContext, opt_str, str_list


class RequestTransformer(Plugin):
    name = "request-transformer"
    priority = 800

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        c = super().parse(config)
        add = c.get("add_headers", {}) or {}
        if not isinstance(add, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in add.items()):
            raise ValueError(f"{cls.name}.add_headers: must map header names to strings")
        rewrite = opt_str(c, "rewrite_path", None, cls.name)
        if rewrite is not None and not rewrite.startswith("/"):
            raise ValueError(f"{cls.name}.rewrite_path: must start with /")
        return {
            "add_headers": dict(add),
            "remove_headers": str_list(c, "remove_headers", [], cls.name),
            "rewrite_path": rewrite,
        }

    async def access(self, ctx: RequestContext) -> Response | None:
        for name in self.config["remove_headers"]:
            ctx.remove_upstream_header(name)
        for name, value in self.config["add_headers"].items():
            ctx.set_upstream_header(name, value)
        if self.config["rewrite_path"] is not None:
            ctx.upstream_path = self.config["rewrite_path"]
        return None
