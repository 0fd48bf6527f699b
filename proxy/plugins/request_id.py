"""request-id: give every request an id, pass it upstream and (optionally) back to the client.

An incoming id is kept when it looks sane (printable, at most 200 characters) so that a trace
started in front of the gateway continues; otherwise a random one is made. It runs first, so the
id is also on 401/403/429 answers and in the access log.
"""

from __future__ import annotations

import uuid

from proxy.http_common import Response, encode_header
from proxy.plugins.base import Plugin, RequestContext

MAX_LEN = 200


def _acceptable(value: str | None) -> bool:
    return value is not None and 0 < len(value) <= MAX_LEN and value.isprintable()


class RequestId(Plugin):
    name = "request-id"
    priority = 2000

    def check(self, ctx: RequestContext) -> Response | None:
        header = self.config["header"]
        incoming = ctx.request_header(header)
        request_id = incoming if incoming is not None and _acceptable(incoming) else uuid.uuid4().hex
        ctx.request_id = request_id
        ctx.set_upstream_header(header, request_id)
        return None

    sets_headers = True

    def header_lines(self, ctx: RequestContext) -> list[tuple[bytes, bytes]]:
        if self.config["echo_downstream"] and ctx.request_id:
            header = self.config["header"]
            return [(header.lower().encode("latin-1"), encode_header(header, ctx.request_id))]
        return []
