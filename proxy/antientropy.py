"""Hybrid sync: the push stream plus anti-entropy, a periodic comparison of config hashes.

Push alone trusts that every applied frame left the proxy with exactly the node's config. A bug or
a bit flip could make it diverge silently: same revision, different content, and nothing would
ever correct it. The anti-entropy check compares our hash with the node's

* on every status frame that carries one (``status.hash``, at most every status interval), and
* at least every ``interval`` seconds (30 by default) over plain HTTP, ``GET /v1/changes/head`` of
  the node we stream from (or any endpoint), which also tells the node the check happened (the
  fleet view shows ``sync: hybrid`` and ``antientropy_repairs``).

Only a comparison at the *same* revision is meaningful. A mismatch is a repair: counted
(``gwadm_proxy_antientropy_repairs_total``, ``/status/sync``, the fleet view) and answered with a
``resync`` frame carrying our hash, which makes the node send a snapshot (cluster/push.py). A
repair is requested at most once per ``REPAIR_HOLD`` seconds for the same (revision, hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
from prometheus_client import Counter

from gateway.protocol import Status
from proxy.pull import changes_url
from proxy.sync import SyncClient, _why

log = logging.getLogger("gwadm.proxy.antientropy")

DEFAULT_INTERVAL = 30.0
REPAIR_HOLD = 2.0


class AntiEntropy:
    """Checks ``sync``'s config hash against the control plane's and repairs a divergence."""

    def __init__(self, sync: SyncClient, *, interval: float = DEFAULT_INTERVAL, timeout: float = 3.0) -> None:
        self.sync, self.interval, self.timeout = sync, max(0.1, interval), timeout
        self.checks = 0  # comparisons made (status frames and HTTP checks)
        self.repairs = 0  # mismatches found, each answered with a resync
        self.last_check_at: float | None = None
        self.last_mismatch: dict[str, Any] | None = None
        self._held: tuple[int, str, float] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._counter: Counter | None = None
        registry = getattr(getattr(sync.dp, "metrics", None), "registry", None)
        if registry is not None:
            self._counter = Counter(
                "gwadm_proxy_antientropy_repairs",
                "Resyncs made because the proxy's config hash differed from the control plane's",
                registry=registry,
            )
        sync.on_status = self.on_status

    # ---- comparing ---------------------------------------------------------------------------

    def on_status(self, frame: Status) -> None:
        """SyncClient hook: each status frame of a healthy node."""
        if frame.hash is not None:
            self.compare(frame.revision, frame.hash, f"status frame of {frame.node_id}")

    def compare(self, revision: int, node_hash: str, source: str) -> bool:
        """True if the hashes agree (or cannot be compared); a mismatch starts a repair."""
        sync = self.sync
        if sync.state is None or revision != sync.revision:
            return True  # other revision: the stream is moving us there, nothing to compare yet
        self.checks += 1
        self.last_check_at = time.time()
        ours = sync.state.hash()  # recomputed from what we hold, not the hash we were told
        if ours == node_hash and sync.hash == node_hash:
            return True
        now = time.monotonic()
        if self._held is not None and self._held[:2] == (revision, ours) and now - self._held[2] < REPAIR_HOLD:
            return False  # a repair of this very divergence is under way
        self._held = (revision, ours, now)
        self.repairs += 1
        self.last_mismatch = {"revision": revision, "ours": ours, "node": node_hash, "source": source,
                              "at": self.last_check_at}  # fmt: skip
        if self._counter is not None:
            self._counter.inc()
        # From now on we tell what we really hold, so the node's snapshot is not taken for ours.
        sync.hash = ours
        sent = sync.request_resync()
        log.warning(
            "config hash mismatch at revision %d (%s): ours %s, node %s; %s", revision, source, ours[:12],
            node_hash[:12], "resync requested" if sent else "no stream open: the next hello asks",
        )  # fmt: skip
        self._wake.set()  # report the repair to the node soon
        return False

    # ---- periodic HTTP check -----------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="proxy-antientropy")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        ssl_context = getattr(self.sync, "ssl_context", None)  # https: the cluster's CA (cluster/tls.py)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context or True)) as http:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
                with contextlib.suppress(Exception):
                    await self.check_once(http)

    async def check_once(self, http: aiohttp.ClientSession) -> bool | None:
        """One HTTP check against the node we stream from (or the first endpoint); None if no node
        answered or nothing can be compared."""
        sync = self.sync
        url = sync.connected_url or (sync.endpoints[0].url if sync.endpoints else None)
        if url is None:
            return None
        headers = {
            "Authorization": f"Bearer {sync.token}", "X-Gwadm-Proxy": sync.proxy_id,
            "X-Gwadm-Sync": "hybrid", "X-Gwadm-Repairs": str(self.repairs),
        }  # fmt: skip
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with http.get(changes_url(url) + "/head", headers=headers, timeout=timeout) as resp:
                if resp.status != 200:
                    return None
                head = await resp.json()
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.debug("anti-entropy check against %s failed: %s", url, _why(exc))
            return None
        if not head.get("has_quorum") and not head.get("cached"):
            return None
        return self.compare(int(head["revision"]), str(head["hash"]), f"HTTP check of {head.get('node_id')}")

    def info(self) -> dict[str, Any]:
        return {
            "interval": self.interval, "checks": self.checks, "repairs": self.repairs,
            "last_check_at": self.last_check_at, "last_mismatch": self.last_mismatch,
        }  # fmt: skip
