"""A tiny HTTP upstream for local clusters and tests: echoes every request as JSON.

``GET /health`` -> 200 ``{"status": "ok", "upstream": name}``; any other path and method ->
200 ``{"upstream", "method", "path", "query", "headers"}`` (``query`` is the raw query string).
"""

from __future__ import annotations

import click
from aiohttp import web


def create_app(name: str) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "upstream": name})

    async def echo(request: web.Request) -> web.Response:
        await request.read()  # drain the body so keep-alive connections stay usable
        return web.json_response(
            {
                "upstream": name,
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": dict(request.headers),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/health", health)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--listen")
    return host or "127.0.0.1", int(port)


@click.command("demo-upstream", hidden=True)
@click.option("--listen", default="127.0.0.1:9000", show_default=True, metavar="HOST:PORT")
@click.option("--name", default="demo", show_default=True, help='Reported as "upstream" in every answer.')
def demo_upstream_cmd(listen: str, name: str) -> None:
    """Run the echo upstream in the foreground (SIGTERM/Ctrl-C to stop)."""
    host, port = parse_listen(listen)
    print(f"demo upstream {name!r} listening on http://{host}:{port}", flush=True)
    web.run_app(create_app(name), host=host, port=port, print=None, access_log=None)
