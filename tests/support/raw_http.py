"""A raw-socket HTTP/1.1 client for conformance tests: exact bytes out, responses parsed by hand.

Nothing here is clever on purpose: the proxy's own parser (httptools) must not judge the proxy's
answers, and a test must be able to send what no well-behaved client library would (pipelined
requests, slow or broken heads, bodies after Expect).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class RawConn:
    """One TCP connection to ``127.0.0.1:port``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, limit: int = 2**20) -> RawConn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=limit)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, timeout: float = 10) -> RawResponse:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = raw.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version.startswith("HTTP/1."), lines[0]
        headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k.strip(), v.strip()))
        return RawResponse(int(status), reason[0] if reason else "", headers)

    async def body(self, resp: RawResponse, *, head_request: bool = False, timeout: float = 10) -> bytes:
        if head_request or resp.status < 200 or resp.status in (204, 304):
            return b""
        te = (resp.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                size_line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)  # no trailers expected
                    return bytes(out)
                out += await asyncio.wait_for(self.reader.readexactly(size + 2), timeout)
                del out[-2:]
        length = resp.header("Content-Length")
        if length is not None:
            return await asyncio.wait_for(self.reader.readexactly(int(length)), timeout)
        return await asyncio.wait_for(self.reader.read(), timeout)

    async def response(self, *, head_request: bool = False, timeout: float = 10) -> RawResponse:
        resp = await self.head(timeout)
        resp.body = await self.body(resp, head_request=head_request, timeout=timeout)
        return resp

    async def closed(self, timeout: float = 10) -> bool:
        """True when the peer closes (EOF or reset) before ``timeout``; data read meanwhile is dropped."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def get(path: str = "/", host: str = "t", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
