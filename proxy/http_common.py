"""Pieces of HTTP/1.1 shared by the proxy's listener and its upstream side (no IO here).

Headers travel as lists of ``(name, value)`` byte pairs exactly as parsed; only what a request
actually needs is decoded (see ``proxy.http_server.Exchange``). Responses the proxy makes itself
(errors, CORS preflights) are ``Response`` objects: status, a ``CIMultiDict`` of headers that
plugins may edit, and a body, serialized by ``encode_response``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from multidict import CIMultiDict

# RFC 9110 7.6.1 plus the obsolete Proxy-Connection; names listed in Connection are added per message.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()}


def status_line(status: int, reason: bytes | None = None) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, cached for the standard codes."""
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
        reason = _REASONS.get(status, b"Unknown")
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lower-cased tokens of every ``Connection`` header in ``headers``."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def encode_header(name: str, value: str) -> bytes:
    """One header line, ``name: value\\r\\n`` (latin-1; what cannot be encoded becomes ``?``)."""
    return f"{name}: {value}\r\n".encode("latin-1", "replace")


# Limits fields -> environment variables of ``gwadm proxy run`` (workers inherit the hub's environment)
LIMIT_ENV = {
    "max_url": "GWADM_PROXY_MAX_URL_BYTES",
    "max_header_bytes": "GWADM_PROXY_MAX_HEADER_BYTES",
    "max_headers": "GWADM_PROXY_MAX_HEADERS",
    "header_timeout": "GWADM_PROXY_HEADER_TIMEOUT",
    "keepalive_timeout": "GWADM_PROXY_KEEPALIVE_TIMEOUT",
    "upstream_idle": "GWADM_PROXY_UPSTREAM_IDLE",
    "max_idle_per_target": "GWADM_PROXY_MAX_IDLE_PER_TARGET",
}


@dataclass(frozen=True)
class Limits:
    """Limits and timeouts of the proxy listener; ``from_env`` reads them from ``LIMIT_ENV``."""

    max_url: int = 8192  # bytes of request target; beyond: 414
    max_header_bytes: int = 16384  # total bytes of names+values; beyond: 431
    max_headers: int = 100  # number of header lines; beyond: 431
    header_timeout: float = 10.0  # first byte of a request to the end of its headers; then 408 + close
    keepalive_timeout: float = 75.0  # idle keep-alive connection closed after this
    upstream_idle: float = 30.0  # idle pooled upstream connection closed after this
    max_idle_per_target: int = 256  # pooled idle upstream connections kept per target

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """Defaults overridden by the ``LIMIT_ENV`` variables that are set; ValueError naming the
        variable when one is not a positive number (an integer for sizes and counts)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, var in LIMIT_ENV.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            integer = isinstance(getattr(cls, name), int)
            try:
                value = int(raw) if integer else float(raw)
            except ValueError:
                value = 0
            if not value > 0 or (not integer and not math.isfinite(value)):
                kind = "a positive integer" if integer else "a positive number of seconds"
                raise ValueError(f"{var}: must be {kind}, got {raw!r}")
            values[name] = value
        return cls(**values)


class Response:
    """A response made by the proxy itself (never streamed); the shape plugins edit.

    It quacks like the parts of ``aiohttp.web.Response`` the plugins use: ``status``, ``headers``
    (a ``CIMultiDict``), ``body`` and ``text``; ``prepared`` is always False.
    """

    __slots__ = ("status", "headers", "body", "reason")
    prepared = False

    def __init__(
        self,
        status: int = 200,
        *,
        body: bytes = b"",
        text: str | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict(headers or {})
        if text is not None:
            body = text.encode()
            if content_type is None:
                content_type = "text/plain; charset=utf-8"
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        self.body = body
        self.reason = reason

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def json_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """The proxy's own error body: ``{"error": {"code", "message"}}``."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Response(status, body=body, content_type="application/json", headers=headers)


def encode_response(resp: Any, *, keep_alive: bool, head_only: bool = False) -> bytes:
    """Serialize a proxy-made response (``Response`` or an aiohttp ``web.Response``) to bytes.

    Content-Length is always set from the body (none for 1xx/204/304); ``head_only`` leaves the
    body out but keeps its length (the answer to a HEAD request).
    """
    status = resp.status
    body = resp.body if isinstance(resp.body, (bytes, bytearray)) else b""
    reason = getattr(resp, "reason", None)
    parts = [status_line(status, reason.encode("latin-1") if isinstance(reason, str) else None)]
    for name, value in resp.headers.items():
        low = name.lower()
        if low in ("content-length", "connection", "transfer-encoding"):
            continue
        parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    if not (status < 200 or status in (204, 304)):
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if body and not head_only and not (status < 200 or status in (204, 304)):
        parts.append(bytes(body))
    return b"".join(parts)
