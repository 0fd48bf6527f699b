"""The live status view over time: ``Monitor`` polls the cluster into snapshots, ``run`` shows them.

``Monitor`` keeps what one poll cannot know alone: the previous metrics scrape of each proxy (rates
need two), where the fleet's proxies serve ``/metrics`` (learnt from the previous poll's fleet entries,
so those scrapes run alongside the node probes and a poll still costs about one timeout), which
endpoint answered last (failover), when a node was first seen up (for nodes that report no
``started_at``), the config counts, and the recent events (``cli/events.py``). ``run`` is the screen of
``gwadm status --watch`` / ``gwadm top``: a poller thread refreshes about once a second while the main
thread redraws and reads keys, so a slow or dead node never delays ``q``.

Terminal handling: keys are read with ``select`` from stdin in cbreak mode (no echo, no line
buffering, Ctrl-C still a signal) only when stdin is a terminal; the previous terminal settings are
restored on every way out (q, Ctrl-C, SIGTERM, SIGHUP, an exception).
"""

from __future__ import annotations

import math
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live

from cli import events as ev
from cli import render
from cli.client import KINDS, get_json
from cli.metrics_scrape import Rates, Scrape, rates, scrape
from cli.status import (
    Probe,
    assemble,
    members_by_id,
    merge_fleet,
    parallel,
    probe_node,
    probe_proxy,
    probe_self,
    process_uptime,
)
from cli.view_model import config_from_status, fleet_metrics_urls, node_uptime, seconds_since


@dataclass(frozen=True)
class Targets:
    """What to watch: admin endpoints in failover order, known nodes and proxies (local cluster)."""

    token: str
    endpoints: tuple[str, ...]
    nodes: tuple[dict[str, Any], ...] = ()  # id, admin_url (+ pid, process)
    proxies: tuple[dict[str, Any], ...] = ()  # id, url, status_url (+ pid, process)
    upstreams: tuple[dict[str, Any], ...] = ()


class Monitor:
    """Polls the cluster into snapshots and keeps what needs memory: scrapes, failover, events."""

    def __init__(
        self,
        targets: Callable[[], Targets],
        *,
        timeout: float = 0.8,
        history: int = 200,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.targets, self.timeout, self.clock, self.wall = targets, timeout, clock, wall
        self.events: deque[ev.Event] = deque(maxlen=history)
        self.prev: dict[str, Any] | None = None
        self._learned: dict[str, str] = {}  # remote mode: member id -> admin URL
        self._current = 0  # endpoint index of the node used for cluster-wide reads
        self._scrapes: dict[str, Scrape] = {}
        self._fleet_metrics: dict[str, str] = {}  # proxy id -> metrics base URL, from the last fleet
        self._seen_since: dict[str, float] = {}
        self._config: dict[str, Any] | None = None
        self._config_at = -math.inf
        self._polls = 0
        self._event_seq: dict[str, int] = {}  # admin URL -> last node event seen
        self._pending_node_events: list[ev.Event] = []  # filled by the probe threads
        self._token = ""

    def _node_list(self, t: Targets) -> list[dict[str, Any]]:
        if t.nodes:
            return [dict(n) for n in t.nodes]
        nodes = [{"id": nid, "admin_url": url} for nid, url in self._learned.items()]
        known = set(self._learned.values())
        return nodes + [{"id": ep, "admin_url": ep} for ep in t.endpoints if ep not in known]

    def _probe(self, n: Mapping[str, Any], token: str) -> tuple[Probe, list[dict[str, Any]]]:
        url = str(n["admin_url"]).rstrip("/")
        own = probe_self(None if str(n["id"]).startswith("http") else str(n["id"]), url, token, self.timeout)
        if isinstance(own, str):
            return own, []
        self._node_events(url)
        try:
            status, body = get_json(url + "/v1/proxies/local", token, self.timeout)
        except ConnectionError:
            return own, []
        items = body.get("items") if status == 200 and isinstance(body, dict) else None
        return own, [i for i in items or [] if isinstance(i, dict)]

    def _node_events(self, url: str) -> None:
        """The node's own events since the last poll (``GET /v1/events``; the first time only the
        last few). Older nodes without the endpoint simply have none."""
        seen = self._event_seq.get(url)
        try:
            status, body = get_json(f"{url}/v1/events?since={seen or 0}", self._token, self.timeout)
        except ConnectionError:
            return
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("items"), list):
            return
        items = [i for i in body["items"] if isinstance(i, dict) and isinstance(i.get("seq"), int)]
        if items:
            self._event_seq[url] = items[-1]["seq"]
        elif isinstance(body.get("last_seq"), int) and (seen is None or body["last_seq"] < seen):
            self._event_seq[url] = body["last_seq"]  # the node restarted: its seq began anew
        self._pending_node_events.extend(ev.node_events(items if seen is not None else items[-20:]))

    def _proxy(self, p: Mapping[str, Any]) -> tuple[dict[str, Any], Scrape | str]:
        row = probe_proxy(p, self.timeout)
        if not row.get("reachable"):
            return row, "not answering"
        return row, scrape(str(p.get("status_url", "")), self.clock(), self.timeout)

    def _metrics_only(self, url: str) -> tuple[None, Scrape | str]:
        return None, scrape(url, self.clock(), self.timeout)

    def poll(self) -> dict[str, Any]:
        """One refresh: every request bounded by ``timeout``; never raises on IO."""
        t = self.targets()
        now = self.wall()
        self._token = t.token
        nodes = self._node_list(t)
        with ThreadPoolExecutor(max_workers=1) as side:  # proxies meanwhile: a poll costs ~1 timeout
            local = {str(p["id"]) for p in t.proxies}  # scraped through their status_url already
            remote = {k: v for k, v in self._fleet_metrics.items() if k not in local}
            pending = side.submit(self._traffic, t.proxies, remote)
            answers = parallel(lambda n: self._probe(n, t.token), nodes)
            traffic = pending.result()
        probes: dict[str, Probe] = {}
        for n, (own, _) in zip(nodes, answers, strict=True):
            if str(n["id"]).startswith("http") and isinstance(own, dict) and own.get("id"):
                self._learned[str(own["id"])] = str(n["admin_url"])  # a bare endpoint told us who it is
                n["id"] = str(own["id"])
            probes[str(n["id"])] = own
        source = self._pick_source(t, nodes, probes)
        if source is not None:
            self._cluster_reads(t, source, probes)
        fleet = merge_fleet([items for _, items in answers])
        self._fleet_metrics = fleet_metrics_urls(fleet)
        snap = assemble(
            now=now, nodes=nodes, probes=probes, proxies=traffic[0], fleet=fleet, traffic=traffic[1],
            config=self._config, uptimes=self._uptimes(nodes, probes, now), source=source,
            last_leader=(self.prev or {}).get("last_leader"),
        )  # fmt: skip
        snap["upstreams"] = [dict(u) for u in t.upstreams]
        node_events, self._pending_node_events = self._pending_node_events, []
        # The nodes' own events (elections, links) come first: they are the detail behind what this
        # view derives from two snapshots (a node down, the leader moving), which stays the newest
        # line so that a burst of node events never pushes the summary off the panel.
        new = [*sorted(node_events, key=lambda e: e.get("time") or 0), *ev.diff(self.prev, snap)]
        self.events.extend(new)
        snap["events"] = new
        self.prev, self._polls = snap, self._polls + 1
        return snap

    def _traffic(
        self, proxies: Sequence[Mapping[str, Any]], remote: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], dict[str, Rates | None]]:
        """Local proxies' /status and /metrics, fleet proxies' /metrics (rows: the fleet's), in parallel.

        A proxy that does not answer has no figures ("-"); its previous scrape is forgotten, so
        rates restart cleanly when it answers again.
        """
        jobs: list[Callable[[], tuple[dict[str, Any] | None, Scrape | str]]] = [
            partial(self._proxy, p) for p in proxies
        ]
        jobs += [partial(self._metrics_only, url) for url in remote.values()]
        ids = [str(p["id"]) for p in proxies] + list(remote)
        rows: list[dict[str, Any]] = []
        traffic: dict[str, Rates | None] = {}
        for pid, (row, sc) in zip(ids, parallel(lambda job: job(), jobs), strict=True):
            if row is not None:
                rows.append(row)
            if isinstance(sc, Scrape):
                traffic[pid] = rates(self._scrapes.get(pid), sc)
                self._scrapes[pid] = sc
            else:
                self._scrapes.pop(pid, None)
        for gone in self._scrapes.keys() - set(ids):
            del self._scrapes[gone]
        return rows, traffic

    def _pick_source(
        self, t: Targets, nodes: Sequence[Mapping[str, Any]], probes: Mapping[str, Probe]
    ) -> dict[str, Any] | None:
        """The endpoint for cluster-wide reads: from the last one used on, a node with quorum first."""
        by_url = {str(n["admin_url"]).rstrip("/"): str(n["id"]) for n in nodes}
        eps = [e.rstrip("/") for e in t.endpoints] or list(by_url)
        order = [(self._current + i) % len(eps) for i in range(len(eps))]
        for want_quorum in (True, False):
            for i in order:
                p = probes.get(by_url.get(eps[i], eps[i]))
                if isinstance(p, dict) and (p.get("has_quorum") or not want_quorum):
                    self._current = i
                    return {"id": by_url.get(eps[i]), "url": eps[i]}
        return None

    def _cluster_reads(self, t: Targets, source: Mapping[str, Any], probes: Mapping[str, Probe]) -> None:
        """Membership (remote mode, now and then) and config counts.

        Counts come from the source node's ``/v1/status`` (already fetched). A node too old to report
        them is asked for its whole ``/v1/config`` instead, only when the revision moved.
        """
        url = str(source["url"])
        if not t.nodes and self._polls % 10 == 0:
            whole = probe_node(url, t.token, self.timeout)
            for mid, m in members_by_id(whole if isinstance(whole, dict) else {}).items():
                if m.get("admin_url"):
                    self._learned.setdefault(mid, str(m["admin_url"]).rstrip("/"))
        own = probes.get(str(source.get("id") or url))
        reported = config_from_status(own if isinstance(own, dict) else None)
        if reported is not None:
            self._config = reported
            return
        head = own.get("revision") if isinstance(own, dict) else None
        stale = self._config is None or self._config.get("revision") != head
        if stale and self.clock() - self._config_at >= 2.0:
            self._config_at = self.clock()
            try:
                status, body = get_json(url + "/v1/config?consistency=stale", t.token, self.timeout)
            except ConnectionError:
                return
            if status == 200 and isinstance(body, dict):
                res = body.get("resources") or {}
                counts = {k: len(res.get(k) or []) for k in KINDS}
                self._config = {"revision": body.get("revision"), "hash": body.get("hash"), "counts": counts}

    def _uptimes(
        self, nodes: Sequence[Mapping[str, Any]], probes: Mapping[str, Probe], now: float
    ) -> dict[str, tuple[float, bool]]:
        """The node's ``started_at``, else its process uptime (PID known: local cluster), else how long
        this view has seen it up."""
        out: dict[str, tuple[float, bool]] = {}
        for n in nodes:
            nid = str(n["id"])
            p = probes.get(nid)
            if not isinstance(p, dict):
                self._seen_since.pop(nid, None)
                continue
            since = self._seen_since.setdefault(nid, now)
            started = p.get("started_at")
            ask_proc = seconds_since(started, now) is None and n.get("process") != "stopped"
            out[nid] = node_uptime(started, now, process_uptime(n.get("pid")) if ask_proc else None, since)
        return out


# ---- the screen -------------------------------------------------------------------------------------
class _Quit(Exception):
    """SIGTERM/SIGHUP while the screen is up: leave through the same cleanup as q."""


class KeyReader:
    """Single key presses from stdin in cbreak mode; a no-op (just waits) when stdin is no terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        stream = sys.stdin if stream is None else stream
        try:
            self.fd: int | None = stream.fileno() if stream.isatty() else None
        except (AttributeError, ValueError, OSError):
            self.fd = None
        self._saved: list[Any] | None = None

    def __enter__(self) -> KeyReader:
        if self.fd is not None:
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def read(self, timeout: float) -> str:
        """Keys typed within ``timeout`` seconds ('' if none)."""
        if self.fd is None:
            time.sleep(timeout)
            return ""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return ""
        data = os.read(self.fd, 64)
        if not data:  # stdin closed: no more keys, but keep watching
            self.fd = None
        return data.decode("utf-8", "ignore")


@contextmanager
def _quit_on_signals() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Quit(signal.Signals(signum).name)

    saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


class _Poller(threading.Thread):
    """Calls ``poll`` every ``interval`` seconds and keeps the newest result (or the exception)."""

    def __init__(self, poll: Callable[[], dict[str, Any]], interval: float) -> None:
        super().__init__(name="gwadm-status-poller", daemon=True)
        self.poll, self.interval = poll, interval
        self.stop = threading.Event()
        self.fresh = threading.Event()
        self.latest: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.latest = self.poll()
            except Exception as exc:  # handed to the main thread, which restores the terminal first
                self.error = exc
                self.fresh.set()
                return
            self.fresh.set()
            self.stop.wait(max(0.05, self.interval - (time.monotonic() - started)))


def run(monitor: Monitor, console: Console, interval: float = 1.0, title: str = "gwadm top") -> None:
    """The full-screen live view until q, Ctrl-C, SIGTERM or SIGHUP; the terminal is restored after."""
    poller = _Poller(monitor.poll, interval)
    waiting = render.waiting_view(title)
    try:
        with KeyReader() as keys, _quit_on_signals():
            with Live(waiting, console=console, screen=True, auto_refresh=False, transient=True) as live:
                live.refresh()
                poller.start()
                while True:
                    typed = keys.read(0.1)
                    if "q" in typed.lower():
                        break
                    if poller.fresh.is_set():
                        poller.fresh.clear()
                        if poller.error is not None:
                            raise poller.error
                        if poller.latest is not None:
                            view = render.live_view(
                                poller.latest, list(monitor.events), console.width, title, console.height
                            )
                            live.update(view, refresh=True)
    except (KeyboardInterrupt, _Quit):
        pass
    finally:
        poller.stop.set()
