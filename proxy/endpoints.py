"""Which control-plane node a proxy streams from next: round-robin with holds and jittered backoff.

Failed nodes, nodes that said ``has_quorum: false`` and nodes behind the proxy are put on hold for a
while, so nodes last seen healthy (or not tried yet) come first. Each proxy starts at a node chosen
by its id, which spreads a fleet over the nodes and sends a restarted proxy back to the same one.

The ring starts from the operator's ``--cp`` URLs (the seeds) and then follows the cluster's
membership, which healthy nodes announce in their status frames: members added later are learned,
learned members that were removed are forgotten. Seeds are never dropped: they are the operator's
configuration and may name the nodes differently (a DNS name, a load balancer) than the cluster
does.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass


def stream_url(url: str) -> str:
    """``http://host:port`` (an admin URL, as in cluster.json) -> ``ws://host:port/v1/stream``."""
    url = url.strip().rstrip("/")
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(plain):
            url = secure + url[len(plain) :]
    if "://" not in url:
        url = "ws://" + url
    return url if url.endswith("/v1/stream") else url + "/v1/stream"


@dataclass
class Endpoint:
    """What we last learned about one CP node; ``hold_until`` pushes it to the back of the queue."""

    url: str
    hold_until: float = 0.0
    reason: str = ""
    has_quorum: bool | None = None
    revision: int | None = None


class EndpointRing:
    """The CP nodes of one proxy, in a fixed order, with a moving start."""

    def __init__(
        self,
        urls: Sequence[str],
        proxy_id: str,
        *,
        seed: int | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        hold: float = 2.0,
        first: int | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one control-plane URL is needed")
        self.endpoints = [Endpoint(u) for u in dict.fromkeys(urls)]
        self.seeds = frozenset(urls)
        self.rng = random.Random(seed)
        self.backoff_initial, self.backoff_max, self.hold = backoff_initial, backoff_max, hold
        start = first if first is not None else zlib.crc32(proxy_id.encode())
        self._next = start % len(self.endpoints)

    @property
    def learned(self) -> list[str]:
        """URLs known from the cluster's membership rather than from the seeds."""
        return [e.url for e in self.endpoints if e.url not in self.seeds]

    def learn(self, urls: Sequence[str]) -> bool:
        """Follow the membership ``urls`` (stream URLs); True if the ring changed. The list is
        changed in place (callers hold it) and the round-robin position stays on the same node."""
        wanted = list(dict.fromkeys(urls))
        current = self.endpoints[self._next % len(self.endpoints)]
        keep = [e for e in self.endpoints if e.url in self.seeds or e.url in wanted]
        known = {e.url for e in keep}
        keep += [Endpoint(u) for u in wanted if u not in known]
        if [e.url for e in keep] == [e.url for e in self.endpoints]:
            return False
        self.endpoints[:] = keep
        self._next = keep.index(current) if current in keep else self._next % len(keep)
        return True

    def pick(self) -> Endpoint:
        """Round-robin over nodes not on hold; if all are, the one whose hold ends first."""
        now, n = time.monotonic(), len(self.endpoints)
        order = [self.endpoints[(self._next + i) % n] for i in range(n)]
        ep = next((e for e in order if e.hold_until <= now), None) or min(order, key=lambda e: e.hold_until)
        self._next = (self.endpoints.index(ep) + 1) % n
        return ep

    def put_on_hold(self, ep: Endpoint, reason: str) -> None:
        ep.hold_until, ep.reason = time.monotonic() + self.hold, reason

    def backoff(self, attempt: int) -> float:
        """Equal jitter: uniform in [d/2, d] with d = initial * 2**attempt, capped at backoff_max."""
        d: float = min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempt, 30))
        return d / 2 + self.rng.random() * d / 2
