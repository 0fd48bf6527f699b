"""access-log: one JSON object per request, to stdout or appended to a file.

Lines are written in the log phase, after the response is finished, so ``status``, ``bytes_sent``
and ``latency_ms`` are final. ``sample_rate`` < 1 keeps a random share of the lines; the random
source comes from ``Services.random`` so that tests (and operators debugging sampling) can seed it.
Files are opened once per path and shared through ``Services.log_sinks``, so runtime swaps do not
reopen them; a write is small and line-buffered, cheap enough to do inline.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

from gateway.plugin_schemas import ACCESS_LOG_FIELDS
from proxy.plugins.base import Plugin, RequestContext

log = logging.getLogger(__name__)

FIELDS = ACCESS_LOG_FIELDS  # the schema's list is the one list


class AccessLog(Plugin):
    name = "access-log"
    priority = 100

    def record(self, ctx: RequestContext) -> dict[str, Any]:
        values: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(ctx.started_at, dt.UTC).isoformat(timespec="milliseconds"),
            "request_id": ctx.request_id,
            "client_ip": ctx.client_ip,
            "method": ctx.method,
            "host": ctx.host,
            "path": ctx.path,
            "status": ctx.status,
            "latency_ms": round((ctx.services.clock() - ctx.start) * 1000.0, 3),
            "route": ctx.route_id,
            "upstream": ctx.upstream,
            "target": ctx.target,
            "consumer": ctx.consumer.id if ctx.consumer is not None else None,
            "bytes_sent": ctx.bytes_sent,
        }
        return {f: values[f] for f in self.config["fields"]}

    def _sink(self, ctx: RequestContext) -> TextIO:
        path = self.config["path"]
        if path is None:
            return sys.stdout
        sink = ctx.services.log_sinks.get(path)
        if sink is None:
            sink = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
            ctx.services.log_sinks[path] = sink
        return sink

    def log(self, ctx: RequestContext) -> None:
        rate = self.config["sample_rate"]
        if rate < 1.0 and ctx.services.random() >= rate:
            return
        line = json.dumps(self.record(ctx), separators=(",", ":"))
        try:
            sink = self._sink(ctx)
            sink.write(line + "\n")
            sink.flush()
        except OSError as exc:
            log.warning("access-log: cannot write to %s: %s", self.config["path"] or "stdout", exc)
