"""The local feed between a proxy's hub process and its workers (``gwadm proxy run --workers N``).

One unix stream socket in a private (0700) directory; each message is a 4-byte big-endian length
and one msgpack map (``gateway.codec.encode``), never pickle. Config travels as the push
protocol's own frames: the ``delta`` frames the control plane sent, forwarded as they are, and
``snapshot`` chunks made by ``gateway.protocol.snapshot_chunks``, as their wire maps; a worker checks
them with ``gateway.protocol.decode_frame`` exactly as the sync client checks the control plane's.

Hub -> worker: ``setup`` (listen address, proxy id; once), ``hub`` (mode, connected CP, revision
of the hub, seconds since the last sync, last error, CP endpoints; on change), ``delta``,
``snapshot``, ``scrape {id}``.
Worker -> hub: ``worker-hello {key, index, pid}``, ``listening``, ``ack {revision}``,
``nack {revision, error}``, ``scraped {id, status, metrics}``.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from gateway.codec import decode, encode
from gateway.protocol import decode_frame

HEADER = struct.Struct(">I")
MAX_MESSAGE = 256 * 1024 * 1024  # a snapshot chunk is 1 MiB; a scrape reply is small
KEY_ENV = "GWADM_WORKER_KEY"  # the hub's one-time key, passed in the environment (never argv)
CONFIG_FRAMES = ("delta", "snapshot", "ack", "nack")


class FeedError(Exception):
    """A malformed message on the feed (the connection is dropped)."""


def pack(message: dict[str, Any]) -> bytes:
    data = encode(message)
    return HEADER.pack(len(data)) + data


def unpack(data: bytes) -> dict[str, Any]:
    """Decode one message; push-protocol frames are checked like the control plane's."""
    try:
        obj = decode(data)
        if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
            raise FeedError("feed message is not a map with a type")
        if obj["t"] in CONFIG_FRAMES:
            return decode_frame(data).wire()
        return obj
    except FeedError:
        raise
    except Exception as exc:
        raise FeedError(f"bad feed message: {exc}") from None


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream."""
    try:
        head = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FeedError("feed closed inside a message header") from None
        return None
    (length,) = HEADER.unpack(head)
    if length > MAX_MESSAGE:
        raise FeedError(f"feed message of {length} bytes exceeds {MAX_MESSAGE}")
    try:
        data = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FeedError("feed closed inside a message") from None
    return unpack(data)


def write_message(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(pack(message))
