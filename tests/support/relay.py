"""A real `gwadm relay run` process for integration tests, stopped by PID."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cluster import free_port
from tests.support.dataplane import _spawn, _stop
from tests.support.http import request, wait_for


@dataclass
class RelayProc:
    id: str
    cp_urls: list[str]
    token_file: Path
    dir: Path
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    scheme: str = "http"  # https: the relay serves TLS (extra_args has --listen-tls-cert/--listen-tls-key)
    ca: str | None = None  # verifies the relay's certificate (https)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "relay.log"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = _spawn(
            ["relay", "run", "--cp", ",".join(self.cp_urls), "--listen", f"127.0.0.1:{self.port}",
             "--state-dir", str(self.dir / "state"), "--token-file", str(self.token_file), "--id", self.id,
             *self.extra_args],
            self.log_path,
        )  # fmt: skip
        wait_for(self._up, 20, f"relay {self.id} listening")

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"relay {self.id} exited:\n{self.log_tail()}")
        try:
            return request("GET", self.url + "/healthz", timeout=1, ca=self.ca).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def status(self) -> dict[str, Any]:
        token = self.token_file.read_text().strip()
        data: dict[str, Any] = request("GET", self.url + "/status", token=token, ca=self.ca).json()
        return data

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
