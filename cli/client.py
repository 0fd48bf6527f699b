"""Synchronous admin API client with endpoint failover (contracts §5).

One ``AdminClient`` talks to every control-plane node of a cluster. A call tries the endpoints in
order, starting from the last one that answered; it moves on to the next endpoint when a node
cannot be reached (connection refused, reset, timeout) or answers 503 (no leader, no quorum,
outcome unknown). A write carries one ``X-Request-Id`` for the whole logical call, reused on every
retry, so a write whose first attempt did commit is deduplicated by the server.

Errors: ``ApiError`` for an HTTP error answer (the JSON body ``{"error": {code, message, path}}``),
``ClusterUnreachable`` (a ``ConnectionError``) when no endpoint could be reached at all.
"""

from __future__ import annotations

import functools
import http.client
import json
import socket
import ssl
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

KINDS = ("upstreams", "routes", "consumers", "plugins")
# The CA that https:// endpoints must chain to when a caller names none: set once per command by
# cli/connection.py (DIR/tls/ca.pem of a local cluster, --ca, $GWADM_CA). None = the system's CAs.
_default_ca: str | None = None


def use_ca(path: str | None) -> None:
    """Make ``path`` the CA of every https:// call that does not name one (get_json, AdminClient)."""
    global _default_ca
    _default_ca = path


@functools.lru_cache(maxsize=8)
def _ssl_context(ca: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _connection(url: str, timeout: float, ca: str | None) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "https":
        try:
            ctx = _ssl_context(ca or _default_ca)
        except (OSError, ssl.SSLError) as exc:
            raise _Unreachable(f"cannot load CA certificate {ca or _default_ca}: {exc}") from exc
        return http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=ctx)
    return http.client.HTTPConnection(host, parts.port, timeout=timeout)
_SINGULAR = {k[:-1]: k for k in KINDS}


class ApiError(Exception):
    """An error answer of the admin API."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        path: str | None = None,
        *,
        retryable: bool = False,
        request_id: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({path})" if path else ""))
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        self.retryable = retryable
        self.request_id = request_id
        self.endpoint = endpoint

    def describe(self) -> str:
        """One human line: ``routes[r1].paths[0]: must start with / (422 invalid)``."""
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.message} ({self.status} {self.code})"


class ClusterUnreachable(ConnectionError):
    """No endpoint answered; ``failures`` maps each endpoint to why."""

    def __init__(self, failures: dict[str, str]) -> None:
        detail = "; ".join(f"{ep}: {why}" for ep, why in failures.items()) or "no endpoints configured"
        super().__init__(f"no control-plane node reachable ({detail})")
        self.failures = failures


def normalize_kind(kind: str) -> str:
    """``route`` or ``routes`` -> ``routes``; ValueError for anything else."""
    k = kind.strip().lower()
    if k in KINDS:
        return k
    if k in _SINGULAR:
        return _SINGULAR[k]
    raise ValueError(f"unknown kind {kind!r} (expected one of: {', '.join(KINDS)})")


def split_endpoints(values: Sequence[str] | str | None) -> list[str]:
    """Accept repeated and/or comma-separated endpoints; add ``http://`` when missing."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for part in item.split(","):
            part = part.strip().rstrip("/")
            if not part:
                continue
            if "://" not in part:
                part = "http://" + part
            if part not in out:
                out.append(part)
    return out


def _error_from_body(status: int, raw: bytes, path: str, endpoint: str) -> ApiError:
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return ApiError(
            status,
            str(err.get("code") or f"http_{status}"),
            str(err.get("message") or http.client.responses.get(status, "error")),
            err.get("path"),
            retryable=bool(err.get("retryable", False)),
            request_id=err.get("request_id"),
            endpoint=endpoint,
        )
    text = raw.decode("utf-8", "replace").strip()[:200] or http.client.responses.get(status, "error")
    return ApiError(status, f"http_{status}", f"{text} [{path}]", None, endpoint=endpoint)


class _Unreachable(Exception):
    """Internal: this endpoint did not give an HTTP answer."""


class AdminClient:
    """Admin API client over several endpoints (``http://host:port``)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        token: str,
        timeout: float = 5.0,
        *,
        retry_for: float = 3.0,
        retry_pause: float = 0.25,
        ca: str | None = None,
    ) -> None:
        self.ca = ca  # https:// endpoints must chain to it (default: use_ca's, else the system's)
        self.endpoints = split_endpoints(endpoints)
        if not self.endpoints:
            raise ValueError("AdminClient needs at least one endpoint")
        self.token = token
        self.timeout = timeout
        self.retry_for = retry_for  # keep cycling through endpoints this long while all are failing
        self.retry_pause = retry_pause
        self._current = 0  # index of the last endpoint that answered
        self.last_endpoint: str | None = None

    # ---- transport -------------------------------------------------------------------------
    def _once(
        self, endpoint: str, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        parts = urlsplit(endpoint)
        conn = _connection(endpoint, self.timeout, self.ca)
        try:
            conn.request(method, (parts.path or "") + path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            # OSError covers refused/reset/unreachable and socket.timeout (TimeoutError).
            raise _Unreachable(_describe_oserror(exc)) from exc
        finally:
            conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        request_id: str | None = None,
    ) -> Any:
        """One logical call with failover; returns the decoded JSON body (None when empty)."""
        hdrs = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if headers:
            hdrs.update(headers)
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if method not in ("GET", "HEAD"):
            hdrs["X-Request-Id"] = request_id or uuid.uuid4().hex  # once per logical call
        deadline = time.monotonic() + self.retry_for
        failures: dict[str, str] = {}
        last_error: ApiError | None = None
        while True:
            n = len(self.endpoints)
            for step in range(n):
                idx = (self._current + step) % n
                endpoint = self.endpoints[idx]
                try:
                    status, raw = self._once(endpoint, method, path, payload, hdrs)
                except _Unreachable as exc:
                    failures[endpoint] = str(exc)
                    continue
                if status == 503:
                    last_error = _error_from_body(status, raw, path, endpoint)
                    failures[endpoint] = last_error.describe()
                    continue
                self._current = idx
                self.last_endpoint = endpoint
                if status >= 400:
                    raise _error_from_body(status, raw, path, endpoint)
                if not raw:
                    return None
                try:
                    return json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise ApiError(status, "bad_response", f"{endpoint}{path} did not return JSON") from exc
            if time.monotonic() + self.retry_pause >= deadline:
                break
            time.sleep(self.retry_pause)
        if last_error is not None:
            raise last_error
        raise ClusterUnreachable(failures)

    # ---- resources ---------------------------------------------------------------------------
    @staticmethod
    def _res_path(kind: str, id: str | None = None) -> str:
        p = f"/v1/{normalize_kind(kind)}"
        return p if id is None else f"{p}/{quote(id, safe='')}"

    @staticmethod
    def _if_match(if_match: int | None) -> dict[str, str]:
        return {} if if_match is None else {"If-Match": str(if_match)}

    def list(self, kind: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", self._res_path(kind))
        return result

    def get(self, kind: str, id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", self._res_path(kind, id))
        return result

    def put(self, kind: str, id: str, body: dict[str, Any], if_match: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PUT", self._res_path(kind, id), body, headers=self._if_match(if_match)
        )
        return result

    def patch(self, kind: str, id: str, body: dict[str, Any], if_match: int | None = None) -> dict[str, Any]:
        hdrs = {"Content-Type": "application/merge-patch+json", **self._if_match(if_match)}
        result: dict[str, Any] = self.request("PATCH", self._res_path(kind, id), body, headers=hdrs)
        return result

    def delete(self, kind: str, id: str, if_match: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "DELETE", self._res_path(kind, id), headers=self._if_match(if_match)
        )
        return result

    def txn(
        self,
        ops: Sequence[dict[str, Any]],
        expect_revision: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """``ops``: ``[{"op": "put"|"delete", "kind", "id", "body"?, "if_match"?}]``."""
        rid = request_id or uuid.uuid4().hex
        body: dict[str, Any] = {"request_id": rid, "ops": [dict(op) for op in ops]}
        for op in body["ops"]:
            op["kind"] = normalize_kind(str(op.get("kind", "")))
        if expect_revision is not None:
            body["expect_revision"] = expect_revision
        result: dict[str, Any] = self.request("POST", "/v1/txn", body, request_id=rid)
        return result

    # ---- cluster -----------------------------------------------------------------------------
    def config(self, revision: int | None = None) -> dict[str, Any]:
        q = "" if revision is None else "?" + urlencode({"revision": revision})
        result: dict[str, Any] = self.request("GET", "/v1/config" + q)
        return result

    def cluster(self, stale: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/cluster" + ("?consistency=stale" if stale else ""))
        return result

    def proxies(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/proxies")
        return result


def _describe_oserror(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message} (is the cluster's CA given? --ca, $GWADM_CA)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}".replace("_", " ")
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def get_json(url: str, token: str | None = None, timeout: float = 1.0, ca: str | None = None) -> tuple[int, Any]:
    """One plain GET without failover (status pages of proxies, per-node probes).

    Returns ``(status, decoded JSON or None)``; raises ``ConnectionError`` when unreachable.
    """
    parts = urlsplit(url)
    try:
        conn = _connection(url, timeout, ca)
    except _Unreachable as exc:
        raise ConnectionError(f"{url}: {exc}") from exc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        status, raw = resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ConnectionError(f"{url}: {_describe_oserror(exc)}") from exc
    finally:
        conn.close()
    try:
        return status, json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return status, None
