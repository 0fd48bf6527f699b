"""The ``discovery`` scenario's workload: 50 instances register with a TTL and heartbeat while the
nemesis kills and isolates the leader; some instances stop heartbeating on the way.

Records (history types of their own, checked by chaos/checkers/discovery.py):

- ``disco_config``     {ttl, interval, instances}: once, before anything registers;
- ``disco_registered`` {instance}: its registration was acknowledged;
- ``disco_stop``       {instance, last_beat}: it stops heartbeating (``last_beat``: the time of its
  last heartbeat answered 200);
- ``disco_view``       {node, present: [instances], invoked}: a linearizable read of the registrations
  (sent at ``invoked``, answered at ``time``: it reflects the registrations at a moment in between);
- ``disco_missing``    {instance, node}: a heartbeat got 404 and a linearizable read on that node
  confirmed the registration was gone.

Heartbeats of one instance go to the nodes in turn and move to the next node on any error, as an
agent with endpoint failover does.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from chaos.controller import ADMIN_PORT, Controller, Member
from chaos.workload import Recorder, http_call

UPSTREAM = "disco"
INSTANCES = 50
TTL = 5.0
INTERVAL = 1.0
STOPPED = 10  # instances that stop heartbeating during the run (in two groups)


def _target(i: int) -> str:
    return f"10.77.0.{1 + i // 200}:{20000 + i}"


class DiscoveryWorkload:
    """Starts its threads with ``start()``; they end when ``stop`` is set."""

    def __init__(self, ctrl: Controller, record: Recorder, stop: threading.Event, seed: int, duration: float,
                 clock: Any, instances: int = INSTANCES, ttl: float = TTL, interval: float = INTERVAL) -> None:
        self.ctrl, self.record, self.stop = ctrl, record, stop
        self.rng = random.Random(seed * 7919 + 13)
        self.duration, self.clock = duration, clock
        self.instances, self.ttl, self.interval = instances, ttl, interval
        self.stopped: set[int] = set()
        self.last_beat: dict[int, float] = {}
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.done = threading.Event()  # set by the view loop once the run is over
        self.latest: set[int] = set()  # the instances present in the latest view
        self.last_expiry_seen = 0.0  # history time of the last view that showed a stopped one gone

    # -- http ------------------------------------------------------------------------------------------
    def _call(self, node: Member, method: str, path: str, body: Any = None, timeout: float = 1.0) -> tuple[int, Any]:
        return http_call(node.addr, ADMIN_PORT, method, path, token=self.ctrl.admin_token, body=body, timeout=timeout)

    def _any(self, method: str, path: str, body: Any = None, deadline: float = 30.0) -> Any:
        end = time.monotonic() + deadline
        nodes = list(self.ctrl.nodes)
        while time.monotonic() < end and not self.stop.is_set():
            for node in nodes:
                try:
                    status, data = self._call(node, method, path, body, timeout=2.0)
                except OSError:
                    continue
                if status in (200, 201):
                    return data
            time.sleep(0.1)
        raise RuntimeError(f"discovery workload: {method} {path} failed on every node")

    # -- setup and threads ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.record("disco_config", ttl=self.ttl, interval=self.interval, instances=self.instances)
        self._any("PUT", f"/v1/upstreams/{UPSTREAM}", {"targets": [{"host": "127.0.0.1", "port": 9, "weight": 0}]})
        for i in range(self.instances):
            self.threads.append(threading.Thread(target=self._instance, args=(i,), name=f"disco-{i}", daemon=True))
        self.threads.append(threading.Thread(target=self._view_loop, name="disco-view", daemon=True))
        self.threads.append(threading.Thread(target=self._stopper, name="disco-stop", daemon=True))
        for t in self.threads:
            t.start()

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)

    def _beat(self, i: int, offset: int) -> None:
        nodes = self.ctrl.nodes
        path = f"/v1/upstreams/{UPSTREAM}/targets/{_target(i)}/heartbeat"
        for step in range(len(nodes)):
            node = nodes[(offset + step) % len(nodes)]
            if not node.alive or node.paused:
                continue
            try:
                status, _ = self._call(node, "POST", path, timeout=0.5)
            except OSError:
                continue
            if status == 200:
                with self.lock:
                    if i not in self.stopped:
                        self.last_beat[i] = self.clock()
                return
            if status == 404 and self._confirmed_missing(node, i):
                self.record("disco_missing", instance=i, node=node.name)
                return

    def _confirmed_missing(self, node: Member, i: int) -> bool:
        try:
            status, data = self._call(node, "GET", f"/v1/upstreams/{UPSTREAM}/targets", timeout=2.0)
        except OSError:
            return False
        if status != 200 or not isinstance(data, dict):
            return False
        present = {f"{t['host']}:{t['port']}" for t in data.get("registered", [])}
        return _target(i) not in present

    def _register(self, i: int, offset: int) -> None:
        nodes = self.ctrl.nodes
        for step in range(len(nodes)):
            node = nodes[(offset + step) % len(nodes)]
            if not node.alive or node.paused:
                continue
            try:
                status, _ = self._call(node, "PUT", f"/v1/upstreams/{UPSTREAM}/targets/{_target(i)}",
                                       {"ttl": self.ttl}, timeout=2.0)
            except OSError:
                continue
            if status in (200, 201):
                with self.lock:
                    self.last_beat[i] = self.clock()
                self.record("disco_registered", instance=i)
                return

    def _instance(self, i: int) -> None:
        """One instance, as an agent: register (retrying until acknowledged), then heartbeat every
        ``interval``, each call to the next node and on to the others on any error."""
        turn = i
        while not self.done.is_set():
            started = time.monotonic()
            with self.lock:
                if i in self.stopped:
                    return
                registered = i in self.last_beat
            turn += 1
            if registered:
                self._beat(i, turn)
            else:
                self._register(i, turn)
            self.done.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _view_loop(self) -> None:
        """Linearizable views of the registrations every 0.25 s until ``stop`` (each round asks the
        nodes in turn until one answers); then the instances stop heartbeating too (``done``)."""
        by_target = {_target(i): i for i in range(self.instances)}
        turn = 0
        while not self.stop.is_set():
            for _ in range(len(self.ctrl.nodes)):
                node = self.ctrl.nodes[turn % len(self.ctrl.nodes)]
                turn += 1
                if node.alive and not node.paused and self._view(node, by_target):
                    break
            self.stop.wait(0.25)
        self.done.set()

    def _view(self, node: Member, by_target: dict[str, int]) -> bool:
        invoked = self.clock()
        try:
            status, data = self._call(node, "GET", f"/v1/upstreams/{UPSTREAM}/targets?consistency=linearizable",
                                      timeout=1.5)
        except OSError:
            return False
        if status != 200 or not isinstance(data, dict):
            return False
        present = sorted(by_target[k] for t in data.get("registered", [])
                         if (k := f"{t['host']}:{t['port']}") in by_target)
        self.record("disco_view", node=node.name, present=present, invoked=invoked)
        with self.lock:
            if (self.latest - set(present)) & self.stopped:  # an expiry we caused
                self.last_expiry_seen = self.clock()
            self.latest = set(present)
        return True

    def drain(self, timeout: float | None = None) -> float:
        """After the last fault, before the runner reads the committed state: wait (at most 2 ttl + 5 s)
        until every stopped instance has expired, so that no expiry commits after that read.

        Returns the (history clock) time the last expiry was seen: like an admin write, it is a
        config change the proxies must then converge to, so the runner measures from it."""
        deadline = time.monotonic() + (2 * self.ttl + 5.0 if timeout is None else timeout)
        while time.monotonic() < deadline:
            with self.lock:
                if not self.stopped & self.latest:
                    break
            time.sleep(0.1)
        with self.lock:
            return self.last_expiry_seen

    def _stopper(self) -> None:
        """Two groups of instances stop heartbeating, at 30% and 60% of the fault period."""
        candidates = list(range(self.instances))
        self.rng.shuffle(candidates)
        chosen = candidates[:STOPPED]
        t0 = time.monotonic()
        for frac, group in ((0.3, chosen[: STOPPED // 2]), (0.6, chosen[STOPPED // 2:])):
            if self.stop.wait(max(0.0, t0 + frac * self.duration - time.monotonic())):
                return
            for i in group:
                with self.lock:
                    if i not in self.last_beat:  # never registered (cluster down meanwhile): nothing to stop
                        continue
                    self.stopped.add(i)
                    last = self.last_beat.get(i)
                self.record("disco_stop", instance=i, last_beat=last)


def start_workloads(scenario: str, ctrl: Controller, record: Recorder, stop: threading.Event, seed: int,
                    duration: float, clock: Any) -> list[DiscoveryWorkload]:
    """The runner's hook: the discovery workload for the ``discovery`` scenario, nothing otherwise."""
    if scenario != "discovery":
        return []
    workload = DiscoveryWorkload(ctrl, record, stop, seed, duration, clock)
    workload.start()
    return [workload]
