"""TLS for the admin API and the push stream: SSL contexts, certificate checks, logged handshakes.

* ``server_context`` / ``client_context`` build the contexts (TLS 1.2+, the cluster's CA);
  a missing, unreadable, expired or mismatched file is a ``TLSConfigError`` naming the file.
* ``LoggedTLSSite`` serves an aiohttp runner over TLS like ``web.TCPSite(ssl_context=...)`` does,
  but a refused handshake (a client certificate from another CA, an expired one, a client that does
  not trust us) is logged with its reason: asyncio only reports those in debug mode.
* ``client_cert_required`` is the mutual-TLS policy for proxies: with ``mtls`` on, the push stream
  (``/v1/stream``) needs a client certificate that chains to the CA (the handshake has verified the
  chain: any certificate presented is checked against the CA) *and* the proxy token. Other paths
  (the CLI, peers) need no client certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from cryptography import x509

log = logging.getLogger("gwadm.tls")
HANDSHAKE_TIMEOUT = 15.0
MTLS_PATHS = ("/v1/stream",)


class TLSConfigError(ValueError):
    """A TLS setting or file is unusable; the message names the file and what is wrong."""


def check_certificate(path: str, what: str = "certificate", now: dt.datetime | None = None) -> x509.Certificate:
    """Load a PEM certificate and refuse an expired or not-yet-valid one with a clear message."""
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except OSError as exc:
        raise TLSConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TLSConfigError(f"{what} {path} is not a PEM certificate: {exc}") from None
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= now:
        raise TLSConfigError(
            f"{what} {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
            "(renew it: `gwadm cert renew`)"
        )
    if cert.not_valid_before_utc > now:
        raise TLSConfigError(f"{what} {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return cert


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    check_certificate(cert)
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise TLSConfigError(f"cannot read TLS key {exc.filename or key}: no such file") from None
    except ssl.SSLError as exc:
        raise TLSConfigError(f"TLS key {key} does not fit certificate {cert} or is unreadable: {exc.reason}") from None
    except OSError as exc:
        raise TLSConfigError(f"cannot read TLS key {key}: {exc.strerror or exc}") from None


def _load_ca(ctx: ssl.SSLContext, ca: str) -> None:
    check_certificate(ca, "CA certificate")
    try:
        ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot load CA certificate {ca}: {exc}") from None


def server_context(cert: str, key: str, ca: str | None = None, *, verify_clients: bool = False) -> ssl.SSLContext:
    """A server context; with ``verify_clients`` a client certificate, when one is presented, must
    chain to ``ca`` (the handshake fails otherwise); whether one is *required* is decided per path."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert, key)
    if verify_clients:
        if not ca:
            raise TLSConfigError("mutual TLS needs the CA certificate (--ca / ca)")
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: str | None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` (the system store when None) and
    the host name against its SANs; ``cert``/``key`` are presented for mutual TLS."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca:
        _load_ca(ctx, ca)
    if cert or key:
        if not (cert and key):
            raise TLSConfigError("a client certificate needs both --tls-cert and --tls-key")
        _load_chain(ctx, cert, key)
    return ctx


def describe_ssl_error(exc: BaseException) -> str:
    """One line for a failed handshake: what was wrong with whose certificate."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).replace("_", " ").lower()
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return f"{type(exc).__name__}: {exc}"


# ---- serving -------------------------------------------------------------------------------------

class _Pending(asyncio.Protocol):
    """Holds what arrives between the end of the handshake and the handler taking over."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)


class _TLSAcceptor(asyncio.Protocol):
    def __init__(
        self, factory: Callable[[], asyncio.Protocol], ctx: ssl.SSLContext, refused: Callable[[str, str], None]
    ) -> None:
        self.factory, self.ctx, self.refused = factory, ctx, refused
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # nothing is read before start_tls takes the socket over
        self.task = asyncio.get_running_loop().create_task(self._handshake(transport))

    async def _handshake(self, raw: asyncio.Transport) -> None:
        peer = raw.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        pending = _Pending()
        try:
            tls = await asyncio.get_running_loop().start_tls(
                raw, pending, self.ctx, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
            )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            self.refused(who, describe_ssl_error(exc))
            raw.close()
            return
        if tls is None:
            raw.close()
            return
        handler = self.factory()
        tls.set_protocol(handler)
        handler.connection_made(tls)
        for chunk in pending.chunks:
            handler.data_received(chunk)
        if pending.eof:
            handler.eof_received()
        if pending.lost is not None:
            handler.connection_lost(pending.lost[0])


def _log_refused(who: str, reason: str) -> None:
    log.warning("TLS handshake with %s refused: %s", who, reason)


class LoggedTLSSite(web.TCPSite):
    """``web.TCPSite`` over TLS whose refused handshakes are logged (``gwadm.tls``, WARNING)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        reuse_address: bool = True,
        refused: Callable[[str, str], None] = _log_refused,
    ) -> None:
        super().__init__(runner, host, port, reuse_address=reuse_address)
        self._tls = ssl_context
        self._refused = refused

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self.port}"

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        factory: Callable[[], asyncio.Protocol] = server
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _TLSAcceptor(factory, self._tls, self._refused),
            self._host, self._port, backlog=self._backlog, reuse_address=self._reuse_address,
        )  # fmt: skip
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def client_cert_required(paths: tuple[str, ...] = MTLS_PATHS) -> Middleware:
    """Middleware: ``paths`` need a verified client certificate (403 with the reason otherwise)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in paths:
            peercert: Any = request.transport.get_extra_info("peercert") if request.transport else None
            if not peercert:
                peer = request.remote or "?"
                log.warning("refused %s on %s: mutual TLS is on and it presented no client certificate",
                            peer, request.path)
                return web.json_response(
                    {"error": {"code": "client_certificate_required",
                               "message": "mutual TLS: this path needs a client certificate signed by the cluster CA",
                               "path": request.path}},
                    status=403,
                )  # fmt: skip
        return await handler(request)

    return middleware


async def why_stream_dropped(stream_url: str, ca: str | None, cert: str) -> str | None:
    """After a TLS connection that presented ``cert`` was dropped without an answer, find out why.

    Under TLS 1.3 a server that refuses a client certificate can only hang up after the client's
    side of the handshake is done (asyncio sends no alert), so the client sees "Server disconnected".
    If the same node answers a connection *without* a client certificate, it is our certificate it
    refused; the message then names the certificate and its issuer. None: no such finding.
    """
    import aiohttp

    url = stream_url.replace("wss://", "https://", 1).split("/v1/", 1)[0] + "/healthz"
    if not url.startswith("https://"):
        return None
    try:
        ctx = client_context(ca)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx), timeout=aiohttp.ClientTimeout(total=3.0)
        ) as http, http.get(url) as resp:
            await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError, TLSConfigError):
        return None
    try:
        issuer = x509.load_pem_x509_certificate(Path(cert).read_bytes()).issuer.rfc4514_string()
    except (OSError, ValueError):
        issuer = "?"
    return (
        f"the node refused our client certificate {cert} (issued by {issuer}): under mutual TLS it accepts "
        "only certificates signed by the cluster's CA"
    )
