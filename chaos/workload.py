"""What a chaos run does while faults come and go, recorded as a history (chaos/history.py).

* Admin clients (threads): reads, writes and CAS updates of a few registers, and append-only adds,
  each on a random CP node with a deadline. A register is a consumer ``k<i>`` whose single
  key-auth key holds the value; values are unique, so a CAS by ``If-Match: <mod_revision>`` is a
  compare-and-set on the value the client last read (that mod_revision names exactly one write).
* Proxy traffic (one thread per proxy): steady GETs on a route that exists for the whole run.
* A monitor samples every node's ``/v1/status`` and every proxy's ``/status``.

Outcomes: 2xx = ok; 4xx (409 CAS mismatch included) = fail, it did not happen; a refused
connection = fail (nothing was sent); 503 ``no_quorum`` = fail (the node refused before proposing);
a timeout (0.5 s: admin writes take ~5 ms, p99 ~0.1 s; a node that is paused or cut off holds a
request until the client gives up, and one-operation-at-a-time clients that all wait on it measured
the client's patience, not the control plane: 1.5 s here made every pause-leader and partition
window ~1.5 s without a write), reset or other 5xx = info: a write may still commit.
Reads that did not answer are fail: they change nothing.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chaos.controller import PROXY_PORT, Controller, Member

REGISTERS = 5
ROUTE = "r0"
Recorder = Callable[..., object]  # HistoryWriter.record (it returns the event it wrote)


def http_call(
    addr: str, port: int, method: str, path: str, *, token: str | None = None,
    body: Any = None, headers: dict[str, str] | None = None, timeout: float = 2.0,
) -> tuple[int, Any]:
    """One HTTP request; returns (status, decoded JSON or None). Raises OSError subclasses."""
    conn = http.client.HTTPConnection(addr, port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        return resp.status, decoded
    finally:
        conn.close()


def register_spec(value: str) -> dict[str, Any]:
    return {"credentials": {"key-auth": [{"key": value}]}}


def register_value(body: Any) -> str | None:
    try:
        return str(body["credentials"]["key-auth"][0]["key"])
    except (KeyError, IndexError, TypeError):
        return None


class AdminClient(threading.Thread):
    """One Jepsen-style process: one operation at a time, every outcome recorded."""

    def __init__(self, process: int, ctrl: Controller, record: Recorder, seed: int, stop: threading.Event,
                 timeout: float = 0.5) -> None:
        super().__init__(name=f"client-{process}", daemon=True)
        self.process, self.ctrl, self.record, self.stop_event = process, ctrl, record, stop
        self.rng = random.Random(seed * 1009 + process)
        self.timeout = timeout
        self.counter = 0
        self.seen: dict[str, tuple[str | None, int | None]] = {}  # key -> (value, mod_revision) last read
        self.seed = seed
        self.avoid_until: dict[str, float] = {}  # node -> monotonic time: failed recently, try others

    def pick_node(self) -> Member:
        """A random node, skipping those that just failed us (as gwadm's client fails over), unless
        every node did."""
        now = time.monotonic()
        healthy = [n for n in self.ctrl.nodes if self.avoid_until.get(n.name, 0.0) <= now]
        return self.rng.choice(healthy or self.ctrl.nodes)

    def _value(self) -> str:
        self.counter += 1
        return f"v-{self.seed}-{self.process}-{self.counter:06d}"  # key-auth keys need >= 8 chars

    def run(self) -> None:
        while not self.stop_event.is_set():
            node = self.pick_node()
            roll = self.rng.random()
            key = f"k{self.rng.randrange(REGISTERS)}"
            if roll < 0.4:
                self.read(node, key)
            elif roll < 0.65:
                self.write(node, key)
            elif roll < 0.85:
                # Read, then CAS against what was read: a fresh If-Match that can actually succeed.
                self.read(node, key)
                seen = self.seen.get(key)
                if seen is not None and seen[0] is not None and seen[1] is not None:
                    self.cas(self.pick_node(), key, seen[0], seen[1])
            else:
                self.add(node)
            time.sleep(self.rng.uniform(0.0, 0.02))

    def _invoke(self, f: str, key: str, value: Any, node: Member) -> None:
        self.record("invoke", process=self.process, f=f, key=key, value=value, node=node.name)

    def _complete(self, kind: str, f: str, key: str, value: Any, node: Member, **extra: Any) -> None:
        self.record(kind, process=self.process, f=f, key=key, value=value, node=node.name, **extra)

    def _request(self, node: Member, method: str, path: str, **kw: Any) -> tuple[str, int | None, Any, str | None]:
        """(outcome, status, body, error) with outcome ok / fail / info, as in the module docstring."""
        try:
            status, body = http_call(node.addr, 8000, method, path, token=self.ctrl.admin_token,
                                     timeout=self.timeout, **kw)
        except ConnectionRefusedError as exc:
            self.avoid_until[node.name] = time.monotonic() + 2.0
            return "fail", None, None, f"refused: {exc}"
        except (OSError, http.client.HTTPException) as exc:
            self.avoid_until[node.name] = time.monotonic() + 2.0
            return "info", None, None, f"{type(exc).__name__}: {exc}"
        if status >= 500:
            self.avoid_until[node.name] = time.monotonic() + 2.0
        if 200 <= status < 300:
            return "ok", status, body, None
        err = body.get("error", {}) if isinstance(body, dict) else {}
        message = f"HTTP {status} {err.get('code', '')}: {err.get('message', '')}".strip()
        definite = 400 <= status < 500 or (status == 503 and err.get("code") == "no_quorum")
        return ("fail" if definite else "info"), status, body, message

    def read(self, node: Member, key: str) -> None:
        self.seen.pop(key, None)
        self._invoke("read", key, None, node)
        outcome, status, body, error = self._request(node, "GET", f"/v1/consumers/{key}")
        if status == 404:
            self.seen[key] = (None, None)
        if outcome == "ok" or status == 404:
            value = register_value(body) if outcome == "ok" else None
            mod = body.get("mod_revision") if outcome == "ok" and isinstance(body, dict) else None
            self.seen[key] = (value, mod)
            self._complete("ok", "read", key, value, node)
        else:  # an unanswered read changed nothing
            self._complete("fail", "read", key, None, node, error=error)

    def write(self, node: Member, key: str) -> None:
        value = self._value()
        self._invoke("write", key, value, node)
        outcome, _status, body, error = self._request(node, "PUT", f"/v1/consumers/{key}", body=register_spec(value))
        extra: dict[str, Any] = {"error": error} if error else {}
        if outcome == "ok" and isinstance(body, dict):
            extra["revision"] = body.get("revision")
        self._complete(outcome, "write", key, value, node, **extra)

    def cas(self, node: Member, key: str, old: str, mod_revision: int) -> None:
        new = self._value()
        self._invoke("cas", key, [old, new], node)
        outcome, _status, body, error = self._request(
            node, "PUT", f"/v1/consumers/{key}", body=register_spec(new), headers={"If-Match": str(mod_revision)}
        )
        extra: dict[str, Any] = {"error": error} if error else {}
        if outcome == "ok" and isinstance(body, dict):
            extra["revision"] = body.get("revision")
        self._complete(outcome, "cas", key, [old, new], node, **extra)

    def add(self, node: Member) -> None:
        value = self._value()
        key = f"a-{self.process}-{self.counter}"
        self._invoke("add", key, value, node)
        outcome, _status, body, error = self._request(node, "PUT", f"/v1/consumers/{key}", body=register_spec(value))
        extra: dict[str, Any] = {"error": error} if error else {}
        if outcome == "ok" and isinstance(body, dict):
            extra["revision"] = body.get("revision")
        self._complete(outcome, "add", key, value, node, **extra)


class ProxyTraffic(threading.Thread):
    """Steady GETs through one proxy on a route that exists for the whole run."""

    def __init__(self, proxy: Member, record: Recorder, stop: threading.Event, interval: float = 0.05) -> None:
        super().__init__(name=f"traffic-{proxy.name}", daemon=True)
        self.proxy, self.record, self.stop_event, self.interval = proxy, record, stop, interval

    def run(self) -> None:
        n = 0
        while not self.stop_event.is_set():
            n += 1
            start = time.monotonic()
            status: int | None = None
            error: str | None = None
            try:
                status, _ = http_call(self.proxy.addr, PROXY_PORT, "GET", f"/{ROUTE}/req-{n}", timeout=2.0)
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            latency = time.monotonic() - start
            self.record("proxy_request", proxy=self.proxy.name, route=ROUTE, status=status,
                        ok=status == 200, latency=round(latency, 6), error=error)
            self.stop_event.wait(max(0.0, self.interval - latency))


class Monitor(threading.Thread):
    """Samples node and proxy status concurrently, so a paused member never delays the others."""

    def __init__(self, ctrl: Controller, record: Recorder, stop: threading.Event, interval: float = 0.25) -> None:
        super().__init__(name="monitor", daemon=True)
        self.ctrl, self.record, self.stop_event, self.interval = ctrl, record, stop, interval
        self.pool = ThreadPoolExecutor(max_workers=8)

    def sample(self) -> None:
        ctrl = self.ctrl

        def node(m: Member) -> None:
            st = ctrl.node_status(m, timeout=0.4) if m.alive and not m.paused else None
            self.record(
                "node_status", node=m.name, reachable=st is not None,
                role=st.get("role") if st else None, term=st.get("term") if st else None,
                leader=st.get("leader") if st else None, revision=st.get("revision") if st else None,
                hash=st.get("hash") if st else None, has_quorum=st.get("has_quorum") if st else None,
            )  # fmt: skip

        def proxy(m: Member) -> None:
            st = ctrl.proxy_status(m, timeout=0.4) if m.alive else None
            self.record(
                "proxy_status", proxy=m.name, reachable=st is not None, mode=st.get("mode") if st else None,
                revision=st.get("revision") if st else None, hash=st.get("hash") if st else None,
            )  # fmt: skip

        futures = [self.pool.submit(node, m) for m in ctrl.nodes] + [self.pool.submit(proxy, m) for m in ctrl.proxies]
        for f in futures:
            f.result()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)
        self.pool.shutdown(wait=True)
