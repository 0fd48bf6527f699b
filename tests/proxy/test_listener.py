"""DataPlane.listen: an HTTPS listener from an ssl.SSLContext, SO_REUSEPORT sharing, draining on stop."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.server import DataPlane
from tests.proxy.conftest import ServeFn, echo_app, route, snapshot, upstream
from tests.support.raw_http import RawConn, get


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def install(dp: DataPlane, port: int) -> None:
    dp.install(snapshot(upstreams={"u1": upstream(("127.0.0.1", port))}, routes={"r": route(paths=["/"])}),
               revision=1, hash="h")  # fmt: skip


async def test_https_listener_from_an_ssl_context(tmp_path: Path, serve: ServeFn) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    dp = DataPlane()
    install(dp, await serve(echo_app()))
    try:
        listener = await dp.listen("127.0.0.1", 0, ssl_context=server_ctx)
        port = listener.sockets[0].getsockname()[1]
        client_ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            for _ in range(2):  # keep-alive over TLS
                async with http.get(f"https://127.0.0.1:{port}/x", ssl=client_ctx) as resp:
                    body = await resp.json()
                    assert resp.status == 200 and body["path"] == "/x"
                    forwarded = {k.lower(): v for k, v in body["headers"]}
                    assert forwarded["x-forwarded-proto"] == "https"
    finally:
        await dp.close()


async def test_two_dataplanes_share_a_port_with_reuse_port(serve: ServeFn) -> None:
    up = await serve(echo_app())
    a, b = DataPlane(proxy_id="a"), DataPlane(proxy_id="b")
    install(a, up)
    install(b, up)
    try:
        first = await a.listen("127.0.0.1", 0, reuse_port=True)
        port = first.sockets[0].getsockname()[1]
        await b.listen("127.0.0.1", port, reuse_port=True)
        other = DataPlane()  # a listener without SO_REUSEPORT cannot join
        try:
            await other.listen("127.0.0.1", port)
        except OSError:
            pass
        else:
            raise AssertionError("binding a reuse_port address without SO_REUSEPORT succeeded")
        finally:
            await other.close()
        for _ in range(60):  # new connections are spread by the kernel over both listeners
            conn = await RawConn.open(port)
            try:
                await conn.send(get("/", extra="Connection: close\r\n"))
                assert (await conn.response()).status == 200
            finally:
                await conn.close()
        counts = [sum(dp.metrics._requests.counts.values()) for dp in (a, b)]
        assert sum(counts) == 60 and all(counts), counts
    finally:
        await a.close()
        await b.close()


async def test_stop_listening_lets_a_request_in_flight_finish(serve: ServeFn) -> None:
    from aiohttp import web

    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/", slow)
    dp = DataPlane()
    install(dp, await serve(app))
    try:
        listener = await dp.listen("127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        idle = await RawConn.open(port)
        busy = await RawConn.open(port)
        await busy.send(get("/"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not any(c.active for c in dp.connections) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(dp.stop_listening(10))
        assert await idle.closed(5)  # idle keep-alive connections go at once
        with socket.socket() as s:  # no new connections
            assert s.connect_ex(("127.0.0.1", port)) != 0
        release.set()
        resp = await busy.response()
        assert resp.status == 200 and resp.body == b"done" and resp.header("Connection") == "close"
        await asyncio.wait_for(stopping, 10)
        await idle.close()
        await busy.close()
    finally:
        release.set()
        await dp.close()


def test_run_loop_uses_uvloop_when_installed_and_status_says_which() -> None:
    import importlib.util

    from proxy.server import loop_name, run_loop

    async def which() -> tuple[str, str]:
        return loop_name(), DataPlane().status()["loop"]

    expected = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    assert run_loop(which()) == (expected, expected)
    assert DataPlane().status()["loop"] == "none"  # no loop running
