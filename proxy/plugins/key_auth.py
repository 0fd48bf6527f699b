"""key-auth: an API key in a header or a query parameter identifies the consumer.

Keys are indexed at build time (``ConsumerIndex.key_auth``), so a lookup is one dict access. With
``hide_credentials`` the key is removed from what the upstream receives, so a backend never learns
(or logs) a credential that is meant for the gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.http_common import Response
from proxy.plugins.base import AUTH_PRIORITY, Plugin, RequestContext, json_error

CHALLENGE = 'Key realm="gwadm"'


class KeyAuth(Plugin):
    name = "key-auth"
    priority = AUTH_PRIORITY
    is_auth = True

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        c = super().parse(config)
        c["query_param"] = c["query_param"] or None  # "" means: no query parameter
        return c

    def check(self, ctx: RequestContext) -> Response | None:
        header, param = self.config["header"], self.config["query_param"]
        key = ctx.request_header(header)
        if not key and param:
            key = ctx.request.query.get(param)
        if not key:
            return json_error(401, "unauthorized", "missing API key", {"WWW-Authenticate": CHALLENGE})
        consumer = ctx.consumers.key_auth.get(key)
        if consumer is None:
            return json_error(401, "unauthorized", "invalid API key", {"WWW-Authenticate": CHALLENGE})
        ctx.consumer = consumer
        if self.config["hide_credentials"]:
            ctx.remove_upstream_header(header)
            if param:
                ctx.upstream_query.popall(param, None)
        return None
