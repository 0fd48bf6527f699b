"""Last-known-good configuration file of a proxy.

Why it exists: a proxy must keep serving its last committed configuration when it restarts while
no control-plane node is reachable (mode ``cached``). The file therefore has to survive crashes at
any instant and must never hand back a half-written or bit-rotted configuration.

Layout of one generation (all integers big-endian)::

    magic        8 bytes   b"GWADMLKG"
    version      u16       FORMAT_VERSION
    revision     u64       config revision of the body
    body_len     u64       length of the body in bytes (detects truncation before hashing)
    body_sha256  32 bytes  sha256 of the body
    hash_len     u16       length of the config hash that follows
    config_hash  hash_len  ConfigState.hash() of the body, ASCII
    body                   version 1: gateway.codec.encode_snapshot (zlib(msgpack(snapshot))),
                           as received in snapshot frames; version 2: gateway.codec.encode_packed_state,
                           written after deltas because it reuses each resource's cached
                           encoding (a one-route change on 10k routes must not re-encode all)

Writes go to ``<file>.tmp``, are fsynced, the current file is rotated to ``<file>.prev`` and the
tmp file renamed over ``<file>``; then the directory is fsynced so the renames themselves are
durable. A crash between the two renames leaves only ``.prev``, which ``load`` then uses. Bodies
are encoded and decoded by ``gateway.codec`` only (the same codec as the wire, never a copy):
msgpack, never pickle, so a cache file is data from disk that can never run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from gateway.codec import decode_packed_state, decode_snapshot, encode_packed_state, encode_snapshot
from gateway.errors import CodecError
from gateway.state import ConfigState

MAGIC = b"GWADMLKG"
FORMAT_VERSION = 1  # body: zlib(msgpack(snapshot))
PACKED_VERSION = 2  # body: encode_packed_state(state)
_FIXED = struct.Struct(">8sHQQ32sH")

log = logging.getLogger(__name__)


class CacheCorrupt(Exception):
    """One generation of the cache file cannot be used; the message says why."""


@dataclass(frozen=True)
class CacheEntry:
    """What a valid generation holds: the state and the config hash the header recorded for it
    (the caller compares it with ``state.hash()``)."""

    state: ConfigState
    hash: str

    @property
    def revision(self) -> int:
        return self.state.revision


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ConfigCache:
    """The cache file at ``path`` plus its previous generation ``path.prev``.

    Writes block on fsync, so the sync client runs them in executor threads; a lock keeps two
    of them from interleaving.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.prev_path = self.path.with_name(self.path.name + ".prev")
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        # Whether ``path`` currently holds a valid generation: None = not checked yet. Rotating a
        # corrupt file into ``.prev`` would destroy the only good generation, so we track it.
        self._current_valid: bool | None = None
        # Writes run in executor threads; two overlapping writes would share the tmp file.
        self._lock = threading.Lock()

    # ---- reading ----------------------------------------------------------------------------

    def read_generation(self, path: Path) -> CacheEntry:
        """Parse and verify one generation; raises CacheCorrupt (or OSError if unreadable)."""
        data = path.read_bytes()
        if len(data) < _FIXED.size:
            raise CacheCorrupt(f"truncated header ({len(data)} bytes)")
        magic, version, revision, body_len, digest, hash_len = _FIXED.unpack_from(data)
        if magic != MAGIC:
            raise CacheCorrupt(f"bad magic {magic!r}, not a gwadm cache file")
        if version not in (FORMAT_VERSION, PACKED_VERSION):
            raise CacheCorrupt(f"unsupported format version {version} (expected {FORMAT_VERSION} or {PACKED_VERSION})")
        start = _FIXED.size + hash_len
        if len(data) < start + body_len:
            raise CacheCorrupt(f"truncated body ({len(data) - start} of {body_len} bytes)")
        if len(data) > start + body_len:
            raise CacheCorrupt(f"{len(data) - start - body_len} trailing bytes")
        try:
            config_hash = data[_FIXED.size : start].decode("ascii")
        except UnicodeDecodeError as exc:
            raise CacheCorrupt("config hash is not ASCII") from exc
        body = data[start:]
        if hashlib.sha256(body).digest() != digest:
            raise CacheCorrupt("sha256 checksum mismatch")
        try:  # both decoders bound the decompressed size (zip bombs, rot) and raise only CodecError
            state = decode_snapshot(body) if version == FORMAT_VERSION else decode_packed_state(body)
        except CodecError as exc:
            raise CacheCorrupt(f"undecodable body: {exc}") from exc
        if state.revision != revision:
            raise CacheCorrupt(f"body is revision {state.revision}, the header says {revision}")
        return CacheEntry(state, config_hash)

    def load(self) -> CacheEntry | None:
        """The newest valid generation, or None if there is none.

        Each unusable file is reported in exactly one warning line (path and reason); a missing
        file is normal (first boot) and not reported.
        """
        for i, path in enumerate((self.path, self.prev_path)):
            try:
                entry = self.read_generation(path)
            except FileNotFoundError:
                if i == 0:
                    self._current_valid = False
                continue
            except (CacheCorrupt, OSError) as exc:
                if i == 0:
                    self._current_valid = False
                fallback = "; trying previous generation" if i == 0 else ""
                log.warning("config cache %s unusable: %s%s", path, exc, fallback)
                continue
            if i == 0:
                self._current_valid = True
            return entry
        return None

    # ---- writing ----------------------------------------------------------------------------

    def save(self, state: ConfigState, config_hash: str) -> None:
        """Persist ``state`` as the newest generation (format 1, ``encode_snapshot``)."""
        self.save_encoded(encode_snapshot(state), state.revision, config_hash)

    def save_encoded(self, body: bytes, revision: int, config_hash: str) -> None:
        """Persist an already compressed body (a snapshot received from a CP is reused as is)."""
        with self._lock:
            self._write(body, revision, config_hash)

    def save_state(self, state: ConfigState, config_hash: str) -> None:
        """Persist a state in the packed format (cheap after a delta: no spec is re-encoded)."""
        body = encode_packed_state(state)
        with self._lock:
            self._write(body, state.revision, config_hash, PACKED_VERSION)

    def _write(self, body: bytes, revision: int, config_hash: str, version: int = FORMAT_VERSION) -> None:
        hash_bytes = config_hash.encode("ascii")
        header = _FIXED.pack(
            MAGIC, version, revision, len(body), hashlib.sha256(body).digest(), len(hash_bytes)
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0600: consumer credentials (API keys, JWT secrets) are part of the configuration.
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.write(hash_bytes)
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            if self.path.exists() and self._is_current_valid():
                os.replace(self.path, self.prev_path)
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self.tmp_path.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        self._current_valid = True

    def _is_current_valid(self) -> bool:
        if self._current_valid is None:
            try:
                self.read_generation(self.path)
                self._current_valid = True
            except (CacheCorrupt, OSError):
                self._current_valid = False
        return self._current_valid


def load_learned_endpoints(path: Path) -> list[str]:
    """The control-plane URLs this proxy learned from the cluster's membership (see
    proxy/endpoints.py), so that a restart can reach nodes added after its ``--cp`` was written.
    A missing or unreadable file is only a lost hint: the seeds still work, so it yields []."""
    try:
        urls = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        log.warning("ignoring %s: not a list of URLs", path)
        return []
    return urls


def save_learned_endpoints(path: Path, urls: list[str]) -> None:
    """Write the learned URLs atomically (tmp file, rename): a crash leaves the old list or the new."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(urls))
    os.replace(tmp, path)
