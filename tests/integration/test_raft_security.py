"""Raft traffic is encrypted with the cluster secret: a peer without it cannot make a node unpickle
anything (pysyncobj pickles its messages), and the cluster keeps working."""

from __future__ import annotations

import pickle
import socket
import struct
import time
import zlib
from pathlib import Path

from cryptography.fernet import Fernet

from tests.integration.test_failover import write_any
from tests.support.cluster import Cluster


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def frame(data: bytes) -> bytes:
    return struct.pack("i", len(data)) + data


def test_unencrypted_or_wrong_key_pickles_are_never_loaded(cluster: Cluster, tmp_path: Path) -> None:
    plain_marker = tmp_path / "plain-pwned"
    wrong_key_marker = tmp_path / "wrong-key-pwned"
    plain = zlib.compress(pickle.dumps(Exploit(plain_marker)))
    wrong = Fernet(Fernet.generate_key()).encrypt(zlib.compress(pickle.dumps(Exploit(wrong_key_marker))))
    for node in cluster.nodes:
        host, port = node.raft_addr.split(":")
        for payload in (plain, wrong):
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(frame(payload))
                s.settimeout(2)
                try:
                    s.recv(1)
                except OSError:
                    pass
    write_any(cluster, "still-works", 16000, "still-works", time.monotonic() + 10)
    assert not plain_marker.exists() and not wrong_key_marker.exists()
    assert all(n.alive for n in cluster.nodes)
