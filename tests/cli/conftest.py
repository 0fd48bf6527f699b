"""Fixtures for CLI tests: real aiohttp servers on 127.0.0.1 ephemeral ports, each in its own thread.

The admin client is synchronous, so the servers run on their own event loop in a background thread;
every server is stopped in teardown.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from cli.procs import free_ports


class ThreadServer:
    """An aiohttp application served from a background thread on 127.0.0.1:<ephemeral>."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = int(self.runner.addresses[0][1])
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self._thread.start()
        assert self._ready.wait(5), "test server did not start"
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


Serve = Callable[[web.Application], "ThreadServer"]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(app)`` starts a server; all are stopped at teardown."""
    servers: list[ThreadServer] = []

    def start(app: web.Application) -> ThreadServer:
        srv = ThreadServer(app).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def dead_url() -> str:
    """An address where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def json_app(
    handler: Callable[[web.Request], Any], log: list[dict[str, Any]] | None = None
) -> web.Application:
    """An app that records every request in ``log`` and answers with ``handler(request)``."""

    async def any_route(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if log is not None:
            log.append(
                {
                    "method": request.method,
                    "path": request.path_qs,
                    "headers": request.headers.copy(),  # case-insensitive
                    "body": body.decode() if body else None,
                }
            )
        result = handler(request)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, web.StreamResponse)
        return result

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_route)
    return app
