"""Pull transport: ``gwadm proxy run --sync pull`` follows the CP over plain HTTP(S) long-polls.

For proxies whose egress allows only plain HTTP requests (no websocket). Each poll is
``GET /v1/changes?since=<our revision>&hash=<our hash>&wait=<poll interval>`` with
``If-None-Match`` (cluster/changes_api.py); the answer carries the same status, delta and snapshot
frames as the push stream, and they go through the very same code as pushed ones
(``SyncClient._on_status`` / ``_on_delta`` / ``_on_snapshot``): same checks (base, hash, never
backwards), same build off the loop, swap, cache, modes and endpoint ring. What the stream would
send back to the node (``ack``, ``nack``, ``resync``, ``mode``) is carried by the next poll instead:
``since`` is the ack, ``X-Gwadm-Mode`` / ``X-Gwadm-Last-Error`` report mode and rejections, and a
rejected delta makes the next poll ask ``full=1`` (a snapshot), after one poll interval.

A node answering ``503 no_quorum`` (or a status without quorum, or behind us) is left like on the
stream; with no healthy node the proxy serves its config in mode ``cached``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import aiohttp

from gateway.codec import decode, encode
from gateway.errors import GatewayError
from gateway.protocol import DeltaFrame, Nack, SnapshotChunk, Status, decode_frame
from proxy.endpoints import Endpoint
from proxy.sync import SyncClient, _Leave, _why

log = logging.getLogger("gwadm.proxy.pull")

REFRESH = 30.0  # at least this often a poll goes without If-None-Match: fresh status and members


def changes_url(url: str) -> str:
    """``ws://host:port/v1/stream`` (a ring endpoint) -> ``http://host:port/v1/changes``."""
    for secure, plain in (("wss://", "https://"), ("ws://", "http://")):
        if url.startswith(secure):
            url = plain + url[len(secure) :]
    base = url[: -len("/v1/stream")] if url.endswith("/v1/stream") else url.rstrip("/")
    return base + "/v1/changes"


class _Outbox:
    """Stands in for the websocket: collects what SyncClient would send to the node."""

    closed = False

    def __init__(self) -> None:
        self.nacked: int | None = None

    async def send_bytes(self, data: bytes) -> None:
        try:
            frame = decode_frame(data)
        except GatewayError:
            return
        if isinstance(frame, Nack):
            self.nacked = frame.revision


class PullClient(SyncClient):
    """A SyncClient whose transport is HTTP long-polling instead of the websocket stream."""

    sync_mode = "pull"

    def __init__(self, *args: Any, poll_interval: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.poll_interval = max(0.1, poll_interval)  # the long-poll wait; 0 would spin
        self.polls = 0

    def _headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.token}", "X-Gwadm-Proxy": self.proxy_id,
            "X-Gwadm-Software": self.software, "X-Gwadm-Address": self.address,
            "X-Gwadm-Status-Address": self.status_address, "X-Gwadm-Mode": str(self.dp.mode),
            "X-Gwadm-Sync": self.sync_mode,
        }  # fmt: skip
        if self.dp.last_error:
            headers["X-Gwadm-Last-Error"] = str(self.dp.last_error)[:500].replace("\n", " ")
        return {k: v for k, v in headers.items() if v}

    async def _stream(self, http: aiohttp.ClientSession, ep: Endpoint) -> bool:
        """Poll ``ep`` until it fails or stops being healthy; True if it was healthy at some point."""
        outbox = _Outbox()
        self._ws, self._healthy, self._resync_for = outbox, False, None  # type: ignore[assignment]
        self._snapshot.reset()
        url = changes_url(ep.url)
        etag: str | None = None
        refreshed = 0.0
        was_healthy, full = False, False
        try:
            while not self._stop.is_set():
                params = {"since": str(self.revision), "wait": f"{self.poll_interval:g}"}
                if self.hash:
                    params["hash"] = self.hash
                if full:
                    params["full"] = "1"
                headers = self._headers()
                conditional = etag is not None and time.monotonic() - refreshed < REFRESH and not full
                if conditional:
                    headers["If-None-Match"] = etag  # type: ignore[assignment]
                timeout = aiohttp.ClientTimeout(total=self.poll_interval + self.connect_timeout + 5,
                                                connect=self.connect_timeout)  # fmt: skip
                self.polls += 1
                async with http.get(url, params=params, headers=headers, timeout=timeout) as resp:
                    body = await resp.read()
                    status = resp.status
                if status == 304:
                    if self._healthy:
                        self._mark_synced()
                    continue
                if status in (401, 403):
                    log.error("control-plane %s refused the poll: HTTP %s", url, status)
                    self._put_on_hold(ep, f"HTTP {status}")
                    return was_healthy
                if status == 503:
                    raise _Leave(_no_quorum(body))
                if status != 200:
                    log.warning("control-plane %s answered HTTP %s", url, status)
                    self._put_on_hold(ep, f"HTTP {status}")
                    return was_healthy
                answer = decode(body)
                if not isinstance(answer, dict) or not isinstance(answer.get("frames"), list):
                    raise GatewayError("answer is not {status, frames}")
                status_frame = decode_frame(_encode_status(answer.get("status")), ("status",))
                assert isinstance(status_frame, Status)
                self._on_status(ep, status_frame)
                was_healthy = was_healthy or self._healthy
                etag, refreshed = resp.headers.get("ETag"), time.monotonic()
                outbox.nacked, full = None, False
                for raw in answer["frames"]:
                    frame = await self._decode(outbox, raw)
                    if frame is None:
                        continue
                    if isinstance(frame, DeltaFrame):
                        await self._on_delta(outbox, frame)
                    elif isinstance(frame, SnapshotChunk):
                        await self._on_snapshot(outbox, frame)
                if outbox.nacked is not None:  # as the hub does: a snapshot next, after a pause
                    full, etag = True, None
                    await self._sleep(max(self.poll_interval, 1.0))
                elif self._healthy and self.revision == status_frame.revision:
                    self._mark_synced()
                    self._set_mode()
        except _Leave as exc:
            log.warning("leaving control-plane %s: %s", url, exc)
            self._put_on_hold(ep, str(exc))
        except (TimeoutError, aiohttp.ClientError, OSError, GatewayError, ValueError) as exc:
            level = logging.DEBUG if ep.reason == "unreachable" else logging.WARNING
            log.log(level, "polling %s failed: %s", url, _why(exc))
            self._put_on_hold(ep, "unreachable")
        finally:
            self._ws, self._healthy, self.connected_url = None, False, None
            self.dp.connected_cp = None
            self._set_mode()
        return was_healthy


def _encode_status(status: Any) -> bytes:
    """The status of an answer, checked like a stream frame (decode_frame takes bytes)."""
    if not isinstance(status, dict):
        raise GatewayError("answer has no status")
    return encode(status)


def _no_quorum(body: bytes) -> str:
    try:
        data: Any = json.loads(body)
        return str(data["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return "node has no quorum (HTTP 503)"
