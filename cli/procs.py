"""Process helpers for the local supervisor: spawn detached, tell whether a pid is still ours, stop.

A pid recorded in cluster.json may have been reused by an unrelated process after a reboot or a
crash, so nothing is signalled unless ``/proc/<pid>/cmdline`` still looks like the member we
started (it runs ``-m cli`` with the member's own config path or listen address).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cli

# Popen objects of children started by this process: polled to reap them (no zombies when the
# supervisor lives on, e.g. in tests) and kept referenced so they are not garbage-collected while running.
_children: dict[int, subprocess.Popen[bytes]] = {}


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PICK_FLOOR = 10000  # ports are picked in [PICK_FLOOR, start of the ephemeral range)
_pick_lock = threading.Lock()
_next_pick: int | None = None


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that are free right now, for servers to bind a moment later.

    They are picked *below* the kernel's ephemeral range: a port the kernel hands out for
    ``bind(0)`` comes from that range, and any outgoing connection (Raft peers, proxies, HTTP
    clients) can take it before the server it was meant for binds it; CI saw exactly that as
    "cannot bind Raft address ... port busy". Picks walk the range from a pid-dependent start, so a
    process never hands out a port twice and concurrent processes rarely probe the same ports.
    """
    global _next_pick
    top = _ephemeral_start()
    span = top - PICK_FLOOR
    if span < 1000:  # an unusual port layout: let the kernel choose
        return _kernel_ports(count, host)
    picked: list[int] = []
    with _pick_lock:
        if _next_pick is None:
            _next_pick = PICK_FLOOR + (os.getpid() * 97) % span
        for _ in range(span):
            port = _next_pick
            _next_pick = PICK_FLOOR + (port + 1 - PICK_FLOOR) % span
            if not port_in_use(host, port):
                picked.append(port)
                if len(picked) == count:
                    return picked
    return picked + _kernel_ports(count - len(picked), host)


def _kernel_ports(count: int, host: str) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_in_use(host: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except OSError:
        return True
    finally:
        s.close()
    return False


def child_env() -> dict[str, str]:
    """Environment of spawned members: unbuffered output, and this source tree importable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    root = str(Path(cli.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def spawn(argv: Sequence[str], log_path: Path) -> int:
    """Start ``argv`` detached (own session), stdout+stderr appended to ``log_path``; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n--- gwadm: starting {' '.join(argv)} at {time.strftime('%H:%M:%S')}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=child_env(),
        )
    _children[proc.pid] = proc
    return proc.pid


def exit_code(pid: int) -> int | None:
    """Exit code of a child started by this process that has ended, else None."""
    proc = _children.get(pid)
    return None if proc is None else proc.poll()


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def is_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def looks_like_ours(pid: int | None, markers: Sequence[str]) -> bool:
    """Alive, runs the ``cli`` module, and its command line contains every one of ``markers``."""
    if not is_alive(pid):
        return False
    assert pid is not None
    argv = _cmdline(pid)
    if argv is None:
        return False
    if not argv:  # no /proc (not Linux) or unreadable: trust the pid only if we started it
        return pid in _children
    joined = " ".join(argv)
    return "cli" in argv and all(m in joined for m in markers)


def wait_gone(pids: Sequence[int], deadline: float) -> list[int]:
    """Wait until every pid has ended or ``deadline`` (monotonic) passes; return those still alive."""
    remaining = [p for p in pids if is_alive(p)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = [p for p in remaining if is_alive(p)]
    return remaining


def signal_pid(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def terminate(pids: Sequence[int], timeout: float = 10.0) -> dict[int, str]:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns pid -> "stopped" | "killed"."""
    result: dict[int, str] = {}
    for pid in pids:
        signal_pid(pid, signal.SIGTERM)
        result[pid] = "stopped"
    for pid in wait_gone(list(pids), time.monotonic() + timeout):
        signal_pid(pid, signal.SIGKILL)
        result[pid] = "killed"
    wait_gone(list(pids), time.monotonic() + 5.0)
    return result


def tail(path: Path, lines: int = 15) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read().decode(errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def python_argv(*args: str) -> list[str]:
    """``[python, -m, cli, *args]``: members run the same interpreter and code as this CLI."""
    return [sys.executable, "-m", "cli", *args]
