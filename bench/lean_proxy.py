"""The floor of a Python proxy on this machine: the ~100-line asyncio Protocol + httptools proxy with
pooled keep-alive upstream connections that the data-plane issue measured beside nginx.

It does nothing but forward: no routing, plugins, health, retries, metrics, limits or error
answers (a failed upstream just drops the client). ``make bench`` runs it beside nginx and the gwadm
proxy so the report shows how far gwadm is from what Python itself allows.

    python -m bench.lean_proxy LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httptools

UPSTREAM = ("127.0.0.1", 0)


class Upstream(asyncio.Protocol):
    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.client: Client | None = None
        self.transport: Any = None
        self.out: list[bytes] = []
        self.length = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if self.client is not None:
            self.client.transport.close()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-length":
            self.length = int(value)

    def on_headers_complete(self) -> None:
        self.out = [b"HTTP/1.1 %d OK\r\nContent-Length: %d\r\n\r\n" % (self.parser.get_status_code(), self.length)]

    def on_body(self, body: bytes) -> None:
        self.out.append(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        self.pool.append(self)
        if client is not None and not client.transport.is_closing():
            client.transport.write(b"".join(self.out))


class Client(asyncio.Protocol):
    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        head = [self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\nHost: upstream\r\n"]
        for name, value in self.headers:
            if name.lower() != b"host":
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        data = b"".join(head)
        if self.pool:
            upstream = self.pool.pop()
            upstream.client = self
            upstream.transport.write(data)
        else:
            asyncio.get_running_loop().create_task(self._connect(data))

    async def _connect(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: Upstream(self.pool), *UPSTREAM)
        upstream.client = self
        upstream.transport.write(data)


async def serve(port: int) -> None:
    pool: list[Upstream] = []
    server = await asyncio.get_running_loop().create_server(lambda: Client(pool), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    global UPSTREAM
    UPSTREAM = ("127.0.0.1", int(sys.argv[2]))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(int(sys.argv[1])))
    else:
        uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
