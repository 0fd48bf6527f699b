"""A tiny authoritative DNS server on loopback for tests (dnslib over UDP, one thread).

``records`` maps a name (no trailing dot) to a list of ``(address, ttl)``; A and AAAA answers are
picked by address family. ``mode``: ``"answer"``, ``"servfail"`` or ``"silent"`` (drop queries: the
client times out). Names not in ``records`` get NXDOMAIN.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord  # type: ignore[import-untyped]


class DnsServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.records: dict[str, list[tuple[str, int]]] = {}
        self.mode = "answer"
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)

    @property
    def spec(self) -> str:
        """``host:port`` for ``GWADM_DNS_SERVERS``."""
        return f"{self.address[0]}:{self.address[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries += 1
            if self.mode == "silent":
                continue
            try:
                request = DNSRecord.parse(data)
            except Exception:
                continue
            reply = request.reply()
            name = str(request.q.qname).rstrip(".")
            if self.mode == "servfail":
                reply.header.rcode = RCODE.SERVFAIL
            elif name not in self.records:
                reply.header.rcode = RCODE.NXDOMAIN
            else:
                for address, ttl in self.records[name]:
                    v6 = ":" in address
                    if request.q.qtype == QTYPE.A and not v6:
                        reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=ttl))
                    elif request.q.qtype == QTYPE.AAAA and v6:
                        reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(address), ttl=ttl))
            try:
                self.sock.sendto(reply.pack(), peer)
            except OSError:
                pass

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
