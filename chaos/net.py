"""The chaos run's private network: a network namespace, one 127.0.0.x address per member, and
partitions / packet loss as nftables rules between addresses (docs/architecture.md §6).

Why a namespace: rules then never touch the host, and everything vanishes with the last process of
the run (also after SIGKILL of the runner). Why per-member addresses: a partition is then a pair
of addresses, provided every member's outgoing connections leave from its own address (CP nodes
and proxies get ``source_address``); :func:`probe_matrix` proves that before a partition is trusted.

``tc netem`` is not available in this kernel; loss uses nft ``numgen random``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

NETNS_ENV = "GWADM_CHAOS_NETNS"
TABLE = "gwadm_chaos"


class NetError(RuntimeError):
    """The namespace or a rule could not be set up; the message says what to install or change."""


def in_private_netns() -> bool:
    return os.environ.get(NETNS_ENV) == "1"


def unshare_argv(argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` in a fresh network namespace (rootless if not root)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise NetError("the chaos suite needs util-linux's `unshare` (apt install util-linux)")
    if shutil.which("nft") is None:
        raise NetError("the chaos suite needs nftables (apt install nftables)")
    user = [] if os.geteuid() == 0 else ["-r"]
    return [unshare, *user, "-n", "--", "env", f"{NETNS_ENV}=1", *argv]


def namespace_unavailable_reason() -> str | None:
    """Why a private namespace cannot be made here, or None (tests skip with this reason)."""
    try:
        argv = unshare_argv([sys.executable, "-c", "pass"])
    except NetError as exc:
        return str(exc)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip() or done.returncode}"
    return None


def _run(*argv: str, input_text: str | None = None) -> str:
    done = subprocess.run(list(argv), input=input_text, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def setup_namespace() -> None:
    """Bring ``lo`` up (all of 127.0.0.0/8 is then local) and create our empty nft table."""
    if not in_private_netns():
        raise NetError("refusing to touch the network outside a private namespace (run through unshare)")
    _run("ip", "link", "set", "lo", "up")
    _run(
        "nft", "-f", "-",
        input_text=(
            f"table inet {TABLE} {{\n"
            "  chain out { type filter hook output priority 0; policy accept; }\n"
            "}\n"
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class Link:
    """Traffic from ``src`` to ``dst`` (addresses). A cut link drops both directions' packets."""

    src: str
    dst: str


@dataclass
class Net:
    """The rules in force. ``cut`` and ``loss`` replace nothing: ``heal`` removes every rule."""

    cut_pairs: set[frozenset[str]] = field(default_factory=set)
    loss_pairs: dict[frozenset[str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _apply(self) -> None:
        rules = []
        for pair in sorted(self.cut_pairs, key=sorted):
            a, b = sorted(pair)
            rules.append(f"ip saddr {a} ip daddr {b} drop")
            rules.append(f"ip saddr {b} ip daddr {a} drop")
        for pair, percent in sorted(self.loss_pairs.items(), key=lambda kv: sorted(kv[0])):
            a, b = sorted(pair)
            for s, d in ((a, b), (b, a)):
                rules.append(f"ip saddr {s} ip daddr {d} numgen random mod 100 < {percent} drop")
        script = f"flush chain inet {TABLE} out\n" + "".join(f"add rule inet {TABLE} out {r}\n" for r in rules)
        _run("nft", "-f", "-", input_text=script)  # one nft transaction: all rules or none

    def cut(self, pairs: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            self.cut_pairs |= {frozenset(p) for p in pairs if p[0] != p[1]}
            self._apply()

    def loss(self, pairs: Iterable[tuple[str, str]], percent: int) -> None:
        if not 0 < percent < 100:
            raise NetError(f"loss percent must be in 1..99 (use cut for 100), got {percent}")
        with self._lock:
            for a, b in pairs:
                if a != b:
                    self.loss_pairs[frozenset((a, b))] = percent
            self._apply()

    def heal(self) -> None:
        with self._lock:
            self.cut_pairs.clear()
            self.loss_pairs.clear()
            self._apply()

    def rules_text(self) -> str:
        return _run("nft", "list", "table", "inet", TABLE)


# -- proving a partition --------------------------------------------------------------------------
PROBE_PORT = 7999


class ProbeListeners:
    """A listening socket on PROBE_PORT of each address, accepting and closing connections."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self._socks = []
        self._stop = threading.Event()
        for addr in addresses:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, PROBE_PORT))
            s.listen(64)
            s.settimeout(0.2)
            self._socks.append(s)
        self._threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in self._socks]
        for t in self._threads:
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for s in self._socks:
            s.close()


def probe(src: str | None, dst: str, timeout: float = 0.4) -> bool:
    """True if a TCP connection from ``src`` (bound; None = unbound, the kernel picks) to
    ``dst``:PROBE_PORT is established."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        if src is not None:
            s.bind((src, 0))
        s.connect((dst, PROBE_PORT))
        return True
    except OSError:
        return False
    finally:
        s.close()


def probe_matrix(addresses: Sequence[str]) -> set[Link]:
    """The directed links over which a connection can NOT be made, probed concurrently."""
    links = [Link(a, b) for a, b in itertools.permutations(addresses, 2)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        reachable = list(pool.map(lambda link: probe(link.src, link.dst), links))
    return {link for link, ok in zip(links, reachable, strict=True) if not ok}


def expected_blocked(addresses: Sequence[str], cut_pairs: Iterable[frozenset[str]]) -> set[Link]:
    cut = set(cut_pairs)
    return {Link(a, b) for a, b in itertools.permutations(addresses, 2) if frozenset((a, b)) in cut}


def verify_partition(net: Net, addresses: Sequence[str], listeners_up: bool = True) -> set[Link]:
    """Probe every ordered pair; raise NetError unless exactly the cut pairs are blocked.

    Returns the blocked set. ``listeners_up`` must be True (ProbeListeners on every address).
    """
    blocked = probe_matrix(addresses)
    want = expected_blocked(addresses, net.cut_pairs)
    if blocked != want:
        extra = sorted((x.src, x.dst) for x in blocked - want)
        missing = sorted((x.src, x.dst) for x in want - blocked)
        raise NetError(f"partition not as intended: unexpectedly blocked {extra}, not blocked {missing}")
    return blocked
