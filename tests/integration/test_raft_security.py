"""Raft traffic is sealed with the cluster secret: a peer without it cannot make a node unpickle
anything (pysyncobj pickles its messages), and the cluster keeps working. Frames in pysyncobj's own
Fernet format are refused too, even under the right password: only AES-GCM frames are opened."""

from __future__ import annotations

import pickle
import socket
import struct
import time
import zlib
from pathlib import Path

from cryptography.fernet import Fernet
from pysyncobj.encryptor import getEncryptor

from cluster.auth import raft_password
from cluster.raft_seal import FrameSeal
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
    fernet_marker = tmp_path / "fernet-pwned"
    plain = zlib.compress(pickle.dumps(Exploit(plain_marker)))
    wrong = Fernet(Fernet.generate_key()).encrypt(zlib.compress(pickle.dumps(Exploit(wrong_key_marker))))
    sealed_wrong = FrameSeal("not-the-cluster-password").encrypt_at_time(
        zlib.compress(pickle.dumps(Exploit(wrong_key_marker))), 1
    )
    fernet_right_key = getEncryptor(raft_password(cluster.secret)).encrypt(
        zlib.compress(pickle.dumps(Exploit(fernet_marker)))
    )
    for node in cluster.nodes:
        host, port = node.raft_addr.split(":")
        for payload in (plain, wrong, sealed_wrong, fernet_right_key):
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(frame(payload))
                s.settimeout(2)
                try:
                    s.recv(1)
                except OSError:
                    pass
    write_any(cluster, "still-works", 16000, "still-works", time.monotonic() + 10)
    assert not plain_marker.exists() and not wrong_key_marker.exists() and not fernet_marker.exists()
    assert all(n.alive for n in cluster.nodes)


def test_a_frame_sealed_with_the_cluster_secret_still_cannot_run_code(cluster: Cluster, tmp_path: Path) -> None:
    """The secret opens the seal, but what is inside is only ever read as data (cluster/raft_pickle.py):
    a pickle naming any callable is refused, at pysyncobj's protocol 2 and at protocol 5."""
    seal = FrameSeal(raft_password(cluster.secret))
    markers = []
    for node in cluster.nodes:
        host, port = node.raft_addr.split(":")
        for protocol in (2, 5):
            marker = tmp_path / f"{node.id}-p{protocol}-pwned"
            markers.append(marker)
            payload = seal.encrypt_at_time(zlib.compress(pickle.dumps(Exploit(marker), protocol)), 1)
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(frame(payload))
                s.settimeout(2)
                try:
                    assert s.recv(1) == b""  # refused: the node drops the connection
                except OSError:
                    pass
    write_any(cluster, "still-works", 16000, "still-works", time.monotonic() + 10)
    assert [m.name for m in markers if m.exists()] == []
    assert all(n.alive for n in cluster.nodes)
    deadline = time.monotonic() + 10
    while not all("refused a Raft frame that names" in n.log_tail(400) for n in cluster.nodes):
        assert time.monotonic() < deadline, [n.log_tail(5) for n in cluster.nodes]
        time.sleep(0.05)
