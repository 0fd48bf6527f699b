"""ip-restriction: allow/deny lists of CIDR blocks, checked against the connection's peer address.

Deny wins over allow; a non-empty allow list refuses every address not in it. IPv4 addresses seen
as IPv4-mapped IPv6 (``::ffff:10.0.0.1``, dual-stack sockets) are checked as IPv4. The peer address
is used, never ``X-Forwarded-For``, because that header is chosen by the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from proxy.http_common import Response
from proxy.plugins.base import Plugin, RequestContext, json_error

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(items: list[str], where: str) -> tuple[Network, ...]:
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{where}: {item!r} is not a CIDR block") from exc
    return tuple(out)


class IpRestriction(Plugin):
    name = "ip-restriction"
    priority = 1900

    def __init__(self, config: Mapping[str, Any], *, scope: str = "global") -> None:
        super().__init__(config, scope=scope)
        self.allow = _networks(self.config["allow"], f"{self.name}.allow")
        self.deny = _networks(self.config["deny"], f"{self.name}.deny")

    def permits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.deny):
            return False
        return not self.allow or any(ip in net for net in self.allow)

    def check(self, ctx: RequestContext) -> Response | None:
        if self.permits(ctx.client_ip):
            return None
        return json_error(403, "forbidden", "your IP address is not allowed")
