"""`python -m cli.healthcheck [URL]`: the container HEALTHCHECK (stdlib only: it runs every few seconds).

GET ``URL`` (default ``$GWADM_HEALTH_URL``); exit 0 on a 2xx answer, 1 otherwise with one line on
stderr. An https URL is verified against ``$GWADM_HEALTH_CA`` (else the system's CAs). Without
any URL there is nothing to check: exit 0 (one-shot containers such as `init`).
"""

from __future__ import annotations

import http.client
import os
import ssl
import sys
from urllib.parse import urlsplit


def check(url: str, ca: str | None, timeout: float = 3.0) -> str | None:
    """None when ``url`` answers 2xx, else why not."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context(cafile=ca))
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"{url}: {exc}"
    finally:
        conn.close()
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def main(argv: list[str]) -> int:
    url = argv[0] if argv else os.environ.get("GWADM_HEALTH_URL", "")
    if not url:
        return 0
    why = check(url, os.environ.get("GWADM_HEALTH_CA") or None)
    if why:
        print(f"unhealthy: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
