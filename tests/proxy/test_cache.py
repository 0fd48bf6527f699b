"""The last-known-good cache: round trip, generations, and every way a file can be bad."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import decode_snapshot, encode_snapshot
from gateway.state import ConfigState
from proxy.cache import MAGIC, ConfigCache


def snap(revision: int, n: int = 2) -> dict[str, Any]:
    return {
        "revision": revision,
        "resources": {
            "upstreams": {
                f"u{i}": {
                    "spec": {"targets": [{"host": "127.0.0.1", "port": 9000 + i}]},
                    "created_revision": 1,
                    "mod_revision": revision,
                }
                for i in range(n)
            },
            "routes": {},
            "consumers": {},
            "plugins": {},
        },
    }


def st(revision: int, n: int = 2) -> ConfigState:
    return ConfigState.from_snapshot(snap(revision, n))


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "proxy.cache" and r.levelno == logging.WARNING]


def test_missing_file_loads_none_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert ConfigCache(tmp_path / "lkg").load() is None
    assert cache_warnings(caplog) == []


def test_round_trip(tmp_path: Path) -> None:
    c = ConfigCache(tmp_path / "state" / "lkg")
    c.save(st(3), "h3")
    entry = ConfigCache(tmp_path / "state" / "lkg").load()
    assert entry is not None
    assert (entry.state, entry.revision, entry.hash) == (st(3), 3, "h3")
    assert (c.path.stat().st_mode & 0o777) == 0o600
    assert not c.tmp_path.exists()
    assert c.path.read_bytes().startswith(MAGIC)


def test_save_encoded_reuses_wire_bytes(tmp_path: Path) -> None:
    body = encode_snapshot(st(5))
    assert decode_snapshot(body) == st(5)
    c = ConfigCache(tmp_path / "lkg")
    c.save_encoded(body, 5, "h5")
    entry = c.load()
    assert entry is not None and entry.revision == 5 and entry.state == st(5)


def test_rotation_keeps_previous_generation(tmp_path: Path) -> None:
    c = ConfigCache(tmp_path / "lkg")
    c.save(st(1), "h1")
    c.save(st(2), "h2")
    c.save(st(3), "h3")
    assert c.read_generation(c.path).revision == 3
    assert c.read_generation(c.prev_path).revision == 2


def test_corrupt_newest_uses_previous_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = ConfigCache(tmp_path / "lkg")
    c.save(st(1), "h1")
    c.save(st(2), "h2")
    data = bytearray(c.path.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit in the body
    c.path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    entry = ConfigCache(c.path).load()
    assert entry is not None and entry.revision == 1 and entry.hash == "h1"
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert str(c.path) in msg and "checksum" in msg


def test_truncated_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    c = ConfigCache(tmp_path / "lkg")
    c.save(st(1), "h1")
    c.save(st(2, n=50), "h2")
    data = c.path.read_bytes()
    c.path.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING)
    entry = ConfigCache(c.path).load()
    assert entry is not None and entry.revision == 1
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1 and "truncated" in warnings[0].getMessage()


def test_truncated_header(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    c = ConfigCache(tmp_path / "lkg")
    c.path.write_bytes(MAGIC[:5])
    caplog.set_level(logging.WARNING)
    assert c.load() is None
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1 and "truncated header" in warnings[0].getMessage()


def test_wrong_magic(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    c = ConfigCache(tmp_path / "lkg")
    c.save(st(1), "h1")
    c.save(st(2), "h2")
    data = c.path.read_bytes()
    c.path.write_bytes(b"NOTMAGIC" + data[8:])
    caplog.set_level(logging.WARNING)
    entry = ConfigCache(c.path).load()
    assert entry is not None and entry.revision == 1
    warnings = cache_warnings(caplog)
    assert len(warnings) == 1 and "bad magic" in warnings[0].getMessage()


def test_both_generations_bad(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    c = ConfigCache(tmp_path / "lkg")
    c.path.write_bytes(b"garbage" * 20)
    c.prev_path.write_bytes(b"")
    caplog.set_level(logging.WARNING)
    assert c.load() is None
    assert len(cache_warnings(caplog)) == 2  # one line per bad file


def test_write_over_corrupt_file_keeps_good_previous(tmp_path: Path) -> None:
    """A corrupt current file must not be rotated over the only good generation."""
    c = ConfigCache(tmp_path / "lkg")
    c.save(st(1), "h1")
    c.save(st(2), "h2")
    c.path.write_bytes(b"junk")
    fresh = ConfigCache(c.path)
    fresh.save(st(3), "h3")
    assert fresh.read_generation(fresh.path).revision == 3
    assert fresh.read_generation(fresh.prev_path).revision == 1


def test_crash_between_renames_uses_prev(tmp_path: Path) -> None:
    """Only ``.prev`` present (crash after rotating, before renaming tmp): it is used."""
    c = ConfigCache(tmp_path / "lkg")
    c.save(st(1), "h1")
    os.replace(c.path, c.prev_path)
    c.tmp_path.write_bytes(b"half-written")
    entry = ConfigCache(c.path).load()
    assert entry is not None and entry.revision == 1


def test_failed_write_leaves_old_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Atomicity: if the write dies before the rename, the old file is untouched and no tmp remains."""
    c = ConfigCache(tmp_path / "lkg")
    c.save(st(1), "h1")
    before = c.path.read_bytes()

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        c.save(st(2), "h2")
    monkeypatch.undo()
    assert c.path.read_bytes() == before
    assert not c.tmp_path.exists()
    entry = ConfigCache(c.path).load()
    assert entry is not None and entry.revision == 1


def test_body_revision_must_match_header(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    c = ConfigCache(tmp_path / "lkg")
    c.save_encoded(encode_snapshot(st(7)), 8, "h")  # header says 8, body says 7
    caplog.set_level(logging.WARNING)
    assert c.load() is None
    assert "revision" in cache_warnings(caplog)[0].getMessage()


def test_a_body_that_is_not_a_snapshot_is_corrupt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import zlib

    from gateway.codec import encode

    c = ConfigCache(tmp_path / "lkg")
    c.save_encoded(zlib.compress(encode([1, 2])), 1, "h")  # checksummed, but not a snapshot
    with caplog.at_level(logging.WARNING):
        assert c.load() is None
    assert "undecodable body" in cache_warnings(caplog)[0].getMessage()


def test_packed_generation_round_trip_and_corruption(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from gateway import Op, Txn

    state, _ = ConfigState.empty().apply(Txn("a", (
        Op("put", "upstreams", "u", {"targets": [{"host": "127.0.0.1", "port": 1}]}),
        Op("put", "routes", "r", {"paths": ["/r"], "upstream": "u"}),
    )))
    cache = ConfigCache(tmp_path / "lkg")
    cache.save(state, state.hash())
    newer, _ = state.apply(Txn("b", (Op("put", "routes", "r2", {"paths": ["/r2"], "upstream": "u"}),)))
    cache.save_state(newer, newer.hash())
    entry = cache.load()
    assert entry is not None and entry.revision == newer.revision and entry.hash == newer.hash()
    assert entry.state == newer and entry.state.hash() == newer.hash()
    data = bytearray((tmp_path / "lkg").read_bytes())
    data[-3] ^= 0x01
    (tmp_path / "lkg").write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        entry = ConfigCache(tmp_path / "lkg").load()
    assert entry is not None and entry.revision == state.revision  # the previous generation
    assert len([r for r in caplog.records if "unusable" in r.getMessage()]) == 1
