"""End to end: `gwadm apply`, `diff` and `export` as subprocesses against a real 3-node cluster.

One cluster serves the whole module; every test starts with a whole-state apply, which resets the
config to what that test expects (that is what a whole-state apply is for).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli import procs
from cli.client import AdminClient
from cli.commands.apply import PlanConflict, execute, plan_against
from cli.docfile import load_document
from cli.plan import bodies_from_data, normalize
from tests.support.cluster import Cluster, running_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEexample\n-----END PUBLIC KEY-----\n"

BASE = """\
upstreams:
  u1:
    targets:
      - {host: 127.0.0.1, port: 9001}
  u2:
    targets: [{host: 127.0.0.1, port: 9002, weight: 5}]
routes:
  r1:
    paths: [/api]
    upstream: u1
  r2:
    paths: [/two]
    upstream: u2
"""

# Everything the round trip must survive: health/timeouts, consistent hash, route plugins, consumers
# with key-auth and jwt-auth (HS256 and RS256), consumer plugins, global plugins.
RICH: dict[str, Any] = {
    "upstreams": {
        "api": {"targets": [{"host": "10.0.0.1", "port": 8080}, {"host": "api.internal", "port": 8081, "weight": 3}],
                "lb": "consistent_hash", "hash_on": {"type": "header", "name": "X-User"},
                "health": {"passive": {"max_failures": 5, "cooldown": 2.5},
                           "active": {"path": "/healthz", "interval": 3}},
                "timeouts": {"connect": 1, "read": 12.5}, "retries": 2},
        "web": {"targets": [{"host": "127.0.0.1", "port": 9100}], "lb": "least_conn"},
    },
    "routes": {
        "api": {"paths": ["/api", "=/exact"], "hosts": ["API.example.com", "*.example.org"], "methods": ["get", "POST"],
                "headers": {"X-Version": "2"}, "priority": 10, "upstream": "api", "strip_prefix": True,
                "plugins": {"rate-limit": {"limit": 100, "window": 60, "key": "consumer"},
                            "key-auth": {}, "request-transformer": {"add_headers": {"x-gw": "1"}}}},
        "web": {"paths": ["/"], "upstream": "web", "plugins": {"ip-restriction": {"deny": ["10.1.0.0/16"]}}},
    },
    "consumers": {
        "alice": {"username": "alice", "credentials": {"key-auth": [{"key": "alice-key-0001"}],
                                                       "jwt-auth": [{"key": "alice-iss", "algorithm": "hs256",
                                                                     "secret": "alice-secret"}]}},
        "bob": {"credentials": {"jwt-auth": [{"key": "bob-kid", "algorithm": "RS256", "public_key": PEM}]},
                "plugins": {"rate-limit": {"limit": 5}}},
    },
    "plugins": {
        "cors": {"name": "cors", "config": {"origins": ["https://app.example.com"], "credentials": True}},
        "request-id": {"name": "request-id"},
        "log": {"name": "access-log", "config": {"sample_rate": 0.5}, "enabled": False},
    },
}  # fmt: skip


class Gwadm:
    """Runs the real CLI against one cluster."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.url = ",".join(n.url for n in cluster.nodes)

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        conn = ["-e", self.url, "--token", self.cluster.token]
        return subprocess.run(
            [sys.executable, "-m", "cli", *args, *conn], input=stdin, capture_output=True, text=True,
            timeout=60, env=procs.child_env(), cwd=self.workdir,
        )  # fmt: skip

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, (
            f"gwadm {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def write(self, name: str, text: str) -> str:
        (self.workdir / name).write_text(textwrap.dedent(text))
        return name

    def config(self) -> dict[str, Any]:
        resp = self.cluster.api(self.cluster.nodes[0], "GET", "/v1/config")
        assert resp.status == 200
        data: dict[str, Any] = resp.json()
        return data

    def ids(self) -> dict[str, list[str]]:
        return {kind: [r["id"] for r in items] for kind, items in self.config()["resources"].items()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("apply-cluster"), fsync=False) as c:
        yield c


@pytest.fixture
def gw(cluster: Cluster, tmp_path: Path) -> Gwadm:
    return Gwadm(cluster, tmp_path)


def test_apply_then_no_changes_then_exactly_the_edited_field(gw: Gwadm) -> None:
    out = gw.ok("apply", "-f", gw.write("gateway.yaml", BASE))
    assert gw.ids() == {"upstreams": ["u1", "u2"], "routes": ["r1", "r2"], "consumers": [], "plugins": []}
    assert "+ upstreams/u1" in out and "applied" in out

    again = gw.ok("apply", "-f", "gateway.yaml")
    assert again.strip().startswith("no changes") and "applied" not in again
    before = gw.config()

    gw.write("gateway.yaml", BASE.replace("port: 9002, weight: 5", "port: 9002, weight: 7"))
    diff = gw("diff", "-f", "gateway.yaml")
    assert diff.returncode == 1, diff.stderr
    assert "~ upstreams/u2" in diff.stdout and "~ targets[0].weight: 5 → 7" in diff.stdout
    assert "0 to create, 1 to update, 0 to delete" in diff.stdout
    assert gw.config()["revision"] == before["revision"]  # diff changes nothing

    result = json.loads(gw.ok("apply", "-f", "gateway.yaml", "--json"))
    assert result["applied"] and result["revision"] == before["revision"] + 1
    assert result["plan"]["changes"] == [
        {
            "action": "update",
            "kind": "upstreams",
            "id": "u2",
            "fields": [{"action": "changed", "path": "targets[0].weight", "old": 5, "new": 7}],
        }
    ]
    after = gw.config()
    changed = {(k, r["id"]) for k, items in after["resources"].items() for r in items
               if r["mod_revision"] == after["revision"]}  # fmt: skip
    assert changed == {("upstreams", "u2")}
    assert gw("diff", "-f", "gateway.yaml").returncode == 0


def test_removed_resources_are_deleted_but_not_with_partial(gw: Gwadm) -> None:
    gw.ok("apply", "-f", gw.write("gateway.yaml", BASE))
    extra = gw.write(
        "extra.yaml",
        """\
        routes:
          r3: {paths: [/three], upstream: u1}
        """,
    )
    out = gw.ok("apply", "-f", extra, "--partial")
    assert "+ routes/r3" in out and "\n- " not in out and "0 to delete" in out
    assert gw.ids()["routes"] == ["r1", "r2", "r3"]

    only_u1 = BASE.split("  u2:")[0] + "routes:\n  r1:\n    paths: [/api]\n    upstream: u1\n"
    dry = gw.ok("apply", "-f", gw.write("small.yaml", only_u1), "--dry-run")
    assert "- routes/r2" in dry and "- routes/r3" in dry and "- upstreams/u2" in dry and "dry run" in dry
    assert gw.ids()["routes"] == ["r1", "r2", "r3"]
    out = gw.ok("apply", "-f", "small.yaml")
    # r2 uses u2: both go in the same transaction, the route first
    assert out.index("- routes/r2") < out.index("- upstreams/u2")
    assert gw.ids() == {"upstreams": ["u1"], "routes": ["r1"], "consumers": [], "plugins": []}

    # A file without resources (an empty or failed export) would wipe the gateway: refused unless asked.
    empty = gw.write("empty.yaml", "{}\n")
    done = gw("apply", "-f", empty)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "lists no resources" in done.stderr and "--allow-empty" in done.stderr, done.stderr
    assert gw.ids() == {"upstreams": ["u1"], "routes": ["r1"], "consumers": [], "plugins": []}
    gw.ok("apply", "-f", empty, "--allow-empty")
    assert gw.ids() == {"upstreams": [], "routes": [], "consumers": [], "plugins": []}


def test_a_concurrent_change_refuses_the_whole_plan(gw: Gwadm) -> None:
    gw.ok("apply", "-f", gw.write("gateway.yaml", BASE))
    base_revision = gw.config()["revision"]
    edited = gw.write("edited.yaml", BASE.replace("/two", "/deux") + "consumers: {c1: {}}\n")

    # the plan is made, then someone else writes, then the plan is applied
    client = AdminClient([gw.url], gw.cluster.token)
    doc = load_document((gw.workdir / edited).read_text(), edited)
    plan = plan_against(client, doc, normalize(bodies_from_data(doc.data)), partial=False)
    assert plan.revision == base_revision and len(plan.changes) == 2
    client.put("upstreams", "sneaky", {"targets": [{"host": "127.0.0.1", "port": 1}]})
    with pytest.raises(PlanConflict) as info:
        execute(client, plan, doc)
    assert info.value.format_message() == (
        f"the config changed since the plan was made (revision {base_revision} → {base_revision + 1}); "
        "nothing was applied, run again"
    )
    assert gw.ids()["consumers"] == [] and gw.config()["revision"] == base_revision + 1

    # the same through the CLI: a plan reviewed at an older revision
    done = gw("apply", "-f", edited, "--expect-revision", str(base_revision))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: the config changed since the plan was made (revision {base_revision} → {base_revision + 1}); "
        "nothing was applied, run again"
    )
    assert gw.ids()["consumers"] == [] and "Traceback" not in done.stderr


def test_file_errors_point_at_the_line_and_apply_nothing(gw: Gwadm) -> None:
    gw.ok("apply", "-f", gw.write("gateway.yaml", BASE))
    revision = gw.config()["revision"]
    bad = BASE.replace("paths: [/two]", "paths:\n      - /ok\n      - two")
    cases = {
        "bad.yaml": (bad, 'bad.yaml:14: routes[r2].paths[1]: must start with "/"'),
        "dup.yaml": (BASE + "  r1:\n    paths: [/x]\n    upstream: u1\n", "dup.yaml:14: duplicate key 'r1' in routes"),
        "kind.yaml": ("route:\n  r1: {}\n", "kind.yaml:1: route: unknown kind"),
        "top.yaml": ("- a\n- b\n", "top.yaml:1: the top level must be a mapping"),
        "ref.yaml": (BASE.replace("upstream: u2", "upstream: nope"), "ref.yaml:13: routes[r2].upstream: upstream 'nope'"),
        "bad.json": ('{"routes": {\n  "r1": {"paths": ["x"], "upstream": "u1"}}}', "bad.json:2: routes[r1].paths[0]"),
    }  # fmt: skip
    for name, (text, message) in cases.items():
        gw.write(name, text)
        for command in ("apply", "diff"):
            done = gw(command, "-f", name)
            assert done.returncode == (1 if command == "apply" else 2), (name, done.stderr)
            assert done.stderr.startswith(f"error: {message}"), (name, done.stderr)
            assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert gw.config()["revision"] == revision


def test_export_round_trips_to_an_empty_plan(gw: Gwadm) -> None:
    applied = json.loads(gw.ok("apply", "-f", "-", "--json", stdin=json.dumps(RICH)))
    assert applied["applied"] and applied["plan"]["summary"]["create"] == 9
    gw.ok("export", "-o", "exported.yaml")
    assert (gw.workdir / "exported.yaml").stat().st_mode & 0o777 == 0o600
    diff = gw("diff", "-f", "exported.yaml")
    assert diff.returncode == 0 and diff.stdout.startswith("no changes"), diff.stdout + diff.stderr

    as_json = gw.ok("export", "--format", "json")
    assert gw.ok("apply", "-f", "-", stdin=as_json).startswith("no changes")
    exported = json.loads(as_json)
    assert list(exported) == ["upstreams", "routes", "consumers", "plugins"]
    assert list(exported["plugins"]) == ["cors", "log", "request-id"]
    assert "created_revision" not in as_json and "mod_revision" not in as_json
    assert all("id" not in spec for items in exported.values() for spec in items.values())
    assert exported["consumers"]["alice"]["credentials"]["key-auth"] == [{"key": "<sensitive>"}]  # hidden
    assert "alice-key-0001" not in as_json and "alice-key-0001" not in (gw.workdir / "exported.yaml").read_text()
    shown = json.loads(gw.ok("export", "--format", "json", "--show-secrets"))
    assert shown["consumers"]["alice"]["credentials"]["key-auth"] == [{"key": "alice-key-0001"}]
    assert gw.ok("export") == (gw.workdir / "exported.yaml").read_text()  # stable output
    assert json.loads(gw.ok("diff", "-f", "exported.yaml", "--json"))["changes"] == []


def test_output_formats_and_bad_arguments(gw: Gwadm) -> None:
    gw.ok("apply", "-f", gw.write("gateway.yaml", BASE))
    gw.write("c.yaml", "consumers:\n  c1:\n    credentials: {key-auth: [{key: secret-key-1}]}\n")
    plan = json.loads(gw.ok("apply", "-f", "c.yaml", "--partial", "--dry-run", "--json"))
    assert plan["dry_run"] and not plan["applied"]
    assert plan["plan"]["changes"][0]["spec"]["credentials"]["key-auth"] == [{"key": "<sensitive>"}]
    shown = gw("diff", "-f", "c.yaml", "--partial", "--show-secrets", "--json")
    assert shown.returncode == 1 and "secret-key-1" in shown.stdout
    for args in (["apply"], ["apply", "-f", "missing.yaml"], ["export", "--format", "xml"],
                 ["diff", "-f", "gateway.yaml", "--bogus"]):  # fmt: skip
        done = gw(*args)
        assert done.returncode in (1, 2) and done.stderr.startswith("error: "), (args, done.stderr)
        assert done.stderr.count("\n") == 1, (args, done.stderr)
    for command in (["apply"], ["diff"], ["export"], ["snapshot", "save"], ["snapshot", "restore"]):
        assert "Example" in gw.ok(*command, "--help")
