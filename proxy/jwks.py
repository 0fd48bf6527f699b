"""JWKS key sets fetched over HTTP and cached, surviving outages of the key endpoint.

Identity providers publish their signing keys at a JWKS URL and rotate them. The cache lives in
the DataPlane (not in a runtime) so that a config change does not empty it, and

- keeps a key set for ``ttl`` seconds, then refetches on the next use;
- keeps the last good key set when a refetch fails (endpoint down, bad JSON) and tries again at
  most every ``retry_interval`` seconds, so an IdP outage neither rejects valid tokens nor turns
  every request into a doomed fetch;
- refetches early, at most every ``min_refresh`` seconds, when a token names a ``kid`` the cached
  set lacks (the usual sign of a key rotation);
- lets one fetch per URL run at a time; concurrent requests wait for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import jwt

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1 << 20


class JwksUnavailable(Exception):
    """No key set could be fetched and none was cached before."""


@dataclass(frozen=True)
class KeySet:
    """Parsed keys of one JWKS document."""

    keys: tuple[jwt.PyJWK, ...]

    def candidates(self, kid: str | None) -> list[jwt.PyJWK]:
        """Keys to try for a token: the one with its ``kid``, or all of them when it has none."""
        if kid is None:
            return list(self.keys)
        return [k for k in self.keys if k.key_id == kid]

    @classmethod
    def parse(cls, document: object) -> KeySet:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("JWKS document must be an object with a 'keys' list")
        keys = []
        for item in document["keys"]:
            try:
                keys.append(jwt.PyJWK(item))
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError, KeyError) as exc:
                log.warning("JWKS: skipping unusable key %r: %s", item.get("kid") if isinstance(item, dict) else None, exc)
        if not keys:
            raise ValueError("JWKS document has no usable keys")
        return cls(tuple(keys))


@dataclass
class _Entry:
    keys: KeySet | None = None
    fetched_at: float = float("-inf")
    next_attempt: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class JwksCache:
    """Key sets by URL; see the module docstring for the refresh rules."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_interval: float = 5.0,
        min_refresh: float = 10.0,
        fetch_timeout: float = 5.0,
    ) -> None:
        self.session = session
        self.clock = clock
        self.retry_interval = retry_interval
        self.min_refresh = min_refresh
        self.fetch_timeout = fetch_timeout
        self._entries: dict[str, _Entry] = {}

    def _due(self, entry: _Entry, ttl: float, kid: str | None) -> bool:
        now = self.clock()
        if now < entry.next_attempt:
            return False
        if entry.keys is None or now - entry.fetched_at >= ttl:
            return True
        missing = kid is not None and not entry.keys.candidates(kid)
        return missing and now - entry.fetched_at >= self.min_refresh

    async def get(self, url: str, ttl: float, kid: str | None = None) -> KeySet:
        """The key set for ``url``; raises JwksUnavailable only if nothing was ever fetched."""
        entry = self._entries.setdefault(url, _Entry())
        if self._due(entry, ttl, kid):
            async with entry.lock:
                if self._due(entry, ttl, kid):  # another request may have refreshed meanwhile
                    await self._refresh(url, entry)
        if entry.keys is None:
            raise JwksUnavailable(f"JWKS {url} unavailable")
        return entry.keys

    async def _refresh(self, url: str, entry: _Entry) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
            # identity: the proxy's shared session does not decompress (bodies pass through as-is)
            headers = {"Accept-Encoding": "identity", "Accept": "application/json"}
            async with self.session.get(url, timeout=timeout, allow_redirects=False, headers=headers) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                raw = await resp.content.read(MAX_JWKS_BYTES + 1)
                if len(raw) > MAX_JWKS_BYTES:
                    raise ValueError("document too large")
            keys = KeySet.parse(json.loads(raw))
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            entry.next_attempt = self.clock() + self.retry_interval
            kept = "keeping the last good key set" if entry.keys is not None else "no key set yet"
            log.warning("JWKS %s: fetch failed (%s); %s", url, exc, kept)
            return
        entry.keys = keys
        entry.fetched_at = self.clock()
        entry.next_attempt = float("-inf")
