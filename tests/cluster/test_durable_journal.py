"""The journal is on disk before a write is acknowledged: flush after append/truncate, fsync meta."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pysyncobj.journal import ResizableFile

from cluster.raft import RaftConfigError, RaftSettings
from cluster.raft_journal import DurableJournal


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = ResizableFile.flush

    def counting_flush(self: ResizableFile) -> None:
        calls.append("msync")
        original(self)

    monkeypatch.setattr(ResizableFile, "flush", counting_flush)
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        # the journal file's own fsync is "journal"; meta files and directories are "fsync"
        calls.append("journal" if os.readlink(f"/proc/self/fd/{fd}").endswith("/j") else "fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


def test_append_and_truncate_are_flushed_before_returning(tmp_path: Path, flushes: list[str]) -> None:
    journal = DurableJournal(str(tmp_path / "j"), fsync=True, group=False)
    journal.add(b"\x00cmd1", 1, 1)
    assert flushes.count("journal") == 1
    journal.add(b"\x00cmd2", 2, 1)
    journal.deleteEntriesFrom(1)
    assert flushes.count("journal") == 3
    journal.setCurrentTerm(5, "127.0.0.1:1")
    assert "fsync" in flushes  # term/vote meta is fsynced, then its directory
    assert "msync" not in flushes  # mmap.flush holds the GIL for the whole disk wait: never used
    journal._destroy()
    reopened = DurableJournal(str(tmp_path / "j"), fsync=True)
    assert len(reopened) == 1 and reopened[0][0] == b"\x00cmd1"
    assert reopened.getCurrentTerm() == 5
    reopened._destroy()


def test_group_commit_one_flush_for_many_appends_before_anything_depends_on_them(
    tmp_path: Path, flushes: list[str]
) -> None:
    journal = DurableJournal(str(tmp_path / "j"), fsync=True, group=True)
    for i in range(1, 33):  # e.g. 32 concurrent writes appended by the leader in one tick
        journal.add(b"\x00c", i, 1)
    assert flushes.count("journal") == 0
    journal.flush_pending()
    journal.flush_pending()  # nothing new: no second flush
    assert flushes.count("journal") == 1 and journal.flushes == 1
    journal.add(b"\x00c", 33, 1)
    journal.setRaftCommitIndex(33)  # the commit index never moves past an unflushed entry
    assert flushes.count("journal") == 2 and "msync" not in flushes
    journal._destroy()


def test_compaction_rewrite_syncs_once(tmp_path: Path, flushes: list[str]) -> None:
    journal = DurableJournal(str(tmp_path / "j"), fsync=True)
    for i in range(1, 51):
        journal.add(b"\x00c", i, 1)
    flushes.clear()
    journal.deleteEntriesTo(40)
    assert flushes.count("journal") <= 2
    assert len(journal) == 10
    journal._destroy()


def test_fsync_can_be_turned_off(tmp_path: Path, flushes: list[str]) -> None:
    journal = DurableJournal(str(tmp_path / "j"), fsync=False)
    journal.add(b"\x00cmd", 1, 1)
    journal.setCurrentTerm(1, None)
    assert flushes == []
    journal._destroy()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"password": ""}, "secret is required"),
        ({"min_timeout": 0.1, "append_entries_period": 0.04}, "3 x append_entries_period"),
        ({"max_timeout": 0.1, "min_timeout": 0.15}, "greater than min_timeout"),
        ({"self_addr": "nohost"}, "host:port"),
    ],
)
def test_bad_raft_settings_get_friendly_errors(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    settings = RaftSettings(self_addr="127.0.0.1:7001", partners=["127.0.0.1:7002"], password="s",
                            data_dir=str(tmp_path))
    for key, value in changes.items():
        setattr(settings, key, value)
    with pytest.raises(RaftConfigError, match=message):
        settings.validate()
