"""End to end: `gwadm snapshot save|restore` as subprocesses against a real 3-node cluster."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_apply_e2e import BASE, RICH, Gwadm
from tests.support.cluster import Cluster, running_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("snapshot-cluster"), fsync=False) as c:
        yield c


@pytest.fixture
def gw(cluster: Cluster, tmp_path: Path) -> Gwadm:
    return Gwadm(cluster, tmp_path)


def test_restore_brings_the_config_back(gw: Gwadm) -> None:
    gw.ok("apply", "-f", "-", stdin=json.dumps(RICH))
    exported_before = gw.ok("export")
    revision = gw.config()["revision"]

    saved = json.loads(gw.ok("snapshot", "save", "backup.json", "--json"))
    path = gw.workdir / "backup.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    snap = json.loads(path.read_text())
    assert snap["format"] == "gwadm-snapshot-v1" and snap["revision"] == revision == saved["revision"]
    assert snap["hash"] == gw.config()["hash"] and len(snap["sha256"]) == 64
    assert snap["cluster"]["members"] and snap["created"].endswith("+00:00")
    assert snap["resources"]["consumers"]["alice"]["credentials"]["key-auth"] == [{"key": "alice-key-0001"}]
    assert list(snap["resources"]) == ["upstreams", "routes", "consumers", "plugins"]

    # changes after the backup: a field edited, a resource deleted, new ones added
    edited = json.loads(json.dumps(RICH))
    edited["upstreams"]["api"]["retries"] = 9
    del edited["consumers"]["bob"]
    del edited["plugins"]["cors"]
    gw.ok("apply", "-f", "-", stdin=json.dumps(edited))
    gw.ok("apply", "-f", gw.write("more.yaml", BASE), "--partial")
    assert gw.ok("export") != exported_before

    dry = gw.ok("snapshot", "restore", "backup.json", "--dry-run")
    assert "~ upstreams/api" in dry and "~ retries: 9 → 2" in dry and "+ consumers/bob" in dry
    assert "- routes/r1" in dry and "- upstreams/u2" in dry and "dry run" in dry
    assert gw.ok("export") != exported_before

    restored = json.loads(gw.ok("snapshot", "restore", "backup.json", "--json"))
    assert restored["applied"] and restored["plan"]["summary"] == {"create": 2, "update": 1, "delete": 4}
    assert gw.ok("export") == exported_before
    assert gw.ok("snapshot", "restore", "backup.json").startswith("no changes")


def test_a_tampered_or_foreign_snapshot_is_refused(gw: Gwadm) -> None:
    gw.ok("apply", "-f", gw.write("gateway.yaml", BASE))
    gw.ok("snapshot", "save", "backup.json")
    path = gw.workdir / "backup.json"
    snap = json.loads(path.read_text())
    gw.ok("apply", "-f", "-", "--partial", stdin='{"routes": {"r9": {"paths": ["/nine"], "upstream": "u1"}}}')
    revision = gw.config()["revision"]

    snap["resources"]["routes"]["r1"]["paths"] = ["/evil"]
    (gw.workdir / "tampered.json").write_text(json.dumps(snap))
    (gw.workdir / "foreign.json").write_text(json.dumps({"format": "other", "resources": {}}))
    (gw.workdir / "broken.json").write_text(path.read_text()[:-40])
    expected = {
        "tampered.json": "error: tampered.json: checksum mismatch",
        "foreign.json": "error: foreign.json: not a gwadm snapshot",
        "broken.json": "error: broken.json:",
        "missing.json": "error: cannot read missing.json",
    }
    for name, message in expected.items():
        for extra in ([], ["--dry-run"]):
            done = gw("snapshot", "restore", name, *extra)
            assert done.returncode == 1 and done.stderr.startswith(message), (name, done.stderr)
            assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert gw.config()["revision"] == revision
    assert "r9" in gw.ids()["routes"]
    gw.ok("snapshot", "restore", "backup.json")
    assert "r9" not in gw.ids()["routes"]
