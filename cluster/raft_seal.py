"""Raft frames sealed with AES-256-GCM under a key derived from the cluster secret.

pysyncobj encrypts every message with Fernet (``SyncObjConf.password``). Fernet is AES-CBC plus an
HMAC, done in Python: base64 both ways, a fresh cipher context per message, and on receipt the
HMAC checked twice (``extract_timestamp``, then ``decrypt``). That was about 23 us per message
(8 us to seal, 15 us to open a 600-byte frame); a write costs the three members about eight such
messages. AES-GCM from the same ``cryptography`` package seals and opens in one C call each
(under 1.5 us together) with the same guarantees: confidentiality, integrity of the whole frame
(the timestamp included, as authenticated data), and a wrong key or a flipped bit is refused.

``FrameSeal`` has the three methods pysyncobj's ``TcpConnection`` calls on its ``encryptor``
(``encrypt_at_time``, ``extract_timestamp``, ``decrypt``), so nothing else changes: the random
per-connection keys pysyncobj exchanges at connect still ride inside the sealed frames, and a frame
that fails to open makes pysyncobj drop the connection before anything is unpickled.
``extract_timestamp`` only reads the header; ``decrypt``, which pysyncobj calls right after it and
before it uses the frame, verifies that header as part of the tag. (If it fails, the connection
is dropped, which also resets the per-connection timestamp the unverified value was stored in.)

Frame: ``version (1) | timestamp (8, big-endian) | nonce (12) | ciphertext + tag (16)``.

Nonces never repeat under one key: each is a 64-bit random prefix drawn when the seal is made
(and again whenever its 32-bit counter wraps) followed by that counter. Every member shares the
key, so a repeat needs two draws of the same prefix: with a million prefixes drawn over a
cluster's life the chance is below 1e-7, where random 96-bit nonces would reach that risk after
about 2^32 messages in all (days of busy traffic).

Not wire-compatible with plain pysyncobj's Fernet frames: every member of a cluster must run a
gwadm with this seal (both sides refuse the other's frames and the link stays down).
"""

from __future__ import annotations

import os
import struct
import threading

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
_HEADER = struct.Struct(">BQ")  # version, timestamp
_NONCE = 12
_TAG = 16
_COUNTER_LIMIT = 1 << 32


class SealError(ValueError):
    """A frame that is not a sealed frame of this version (pysyncobj drops the connection)."""


def frame_key(password: str | bytes) -> bytes:
    """The 256-bit AES key for ``password`` (itself derived from the cluster secret, cluster/auth.py)."""
    secret = password.encode() if isinstance(password, str) else password
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"gwadm raft frames v1").derive(secret)


class FrameSeal:
    """pysyncobj's ``encryptor`` interface over AES-256-GCM (see the module docstring)."""

    def __init__(self, password: str | bytes) -> None:
        self._aead = AESGCM(frame_key(password))
        self._lock = threading.Lock()  # sends come from pysyncobj's tick thread, but never trust that
        self._prefix = os.urandom(8)
        self._counter = 0

    def _nonce(self) -> bytes:
        with self._lock:
            if self._counter >= _COUNTER_LIMIT:
                self._prefix, self._counter = os.urandom(8), 0
            n = self._counter
            self._counter = n + 1
            return self._prefix + n.to_bytes(4, "big")

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        header = _HEADER.pack(VERSION, max(0, int(current_time)))
        nonce = self._nonce()
        return header + nonce + self._aead.encrypt(nonce, data, header)

    def extract_timestamp(self, token: bytes) -> int:
        """The frame's timestamp, unverified: ``decrypt`` verifies it (module docstring)."""
        if len(token) < _HEADER.size + _NONCE + _TAG:
            raise SealError("frame too short")
        version, timestamp = _HEADER.unpack_from(token)
        if version != VERSION:
            raise SealError(f"unknown frame version {version}")
        return int(timestamp)

    def decrypt(self, token: bytes) -> bytes:
        """The plaintext; raises (``SealError`` or cryptography's ``InvalidTag``) unless the frame
        was sealed with this key and not altered."""
        self.extract_timestamp(token)
        header = token[: _HEADER.size]
        nonce = token[_HEADER.size : _HEADER.size + _NONCE]
        return self._aead.decrypt(nonce, token[_HEADER.size + _NONCE :], header)
