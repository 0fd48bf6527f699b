"""`gwadm snapshot save|restore`: backups of the whole config that cannot be restored half-right.

A snapshot is one JSON document::

    {"format": "gwadm-snapshot-v1", "revision": 12, "hash": "<server config hash>",
     "created": "2024-05-01T10:00:00+00:00", "cluster": {"endpoint", "leader", "members"},
     "sha256": "<hex sha256 of the canonical JSON of resources>", "resources": {<apply shape>}}

``sha256`` covers ``resources`` serialized canonically (sorted keys, no spaces, UTF-8), so an edited
or truncated file is refused before anything is sent. ``hash`` is the server's hash at ``revision``
(it includes revisions, so a restore does not reproduce it: it identifies what was saved). Restore
is ``gwadm apply`` of ``resources`` (whole state, one CAS transaction, same code); the file is
written 0600 and atomically because it holds consumer credentials.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

from cli import console
from cli.client import AdminClient, ApiError
from cli.commands import apply as apply_mod
from cli.commands.cluster import json_option
from cli.connection import conn_options, make_client
from cli.docfile import Document, write_private
from cli.plan import current_from_config, export_shape

FORMAT = "gwadm-snapshot-v1"


class SnapshotError(click.ClickException):
    """The snapshot file is not one we wrote, or was changed since; nothing is applied."""


def resources_sha256(resources: Any) -> str:
    canonical = json.dumps(
        resources, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_snapshot(
    config: Mapping[str, Any], cluster: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """``GET /v1/config`` output -> the snapshot document. Pure."""
    revision, specs = current_from_config(config)
    resources = export_shape(specs)
    return {
        "format": FORMAT,
        "revision": revision,
        "hash": config.get("hash"),
        "created": now.isoformat(timespec="seconds"),
        "cluster": cluster,
        "sha256": resources_sha256(resources),
        "resources": resources,
    }


def verify_snapshot(doc: Document) -> Document:
    """Check format and checksum; return the ``resources`` part (lines kept for error messages)."""
    data = doc.data
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise SnapshotError(
            f"{doc.name}: not a gwadm snapshot (format {found!r}, expected {FORMAT!r}); nothing was applied"
        )
    recorded, resources = data.get("sha256"), data.get("resources")
    if not isinstance(resources, dict):
        raise SnapshotError(f"{doc.name}: the snapshot has no resources; nothing was applied")
    try:
        actual = resources_sha256(resources)
    except ValueError:
        actual = None  # NaN/Infinity cannot be in a file we wrote
    if not isinstance(recorded, str) or actual != recorded.lower():
        raise SnapshotError(
            f"{doc.name}: checksum mismatch: the resources do not match the recorded sha256 "
            "(the file was edited or corrupted); nothing was applied"
        )
    return doc.sub("resources")


def cluster_info(client: AdminClient) -> dict[str, Any] | None:
    """Which cluster the snapshot came from; best effort (a snapshot is worth more than this)."""
    try:
        info = client.cluster(stale=True)
    except (ApiError, ConnectionError):
        return {"endpoint": client.last_endpoint}
    members = [m.get("id") for m in info.get("members") or []]
    return {"endpoint": client.last_endpoint, "leader": info.get("leader"), "members": members}


@click.group("snapshot")
def snapshot_group() -> None:
    """Back up and restore the whole config (checksummed JSON files).

    \b
    Examples:
      gwadm snapshot save backup.json
      gwadm snapshot restore backup.json --dry-run
      gwadm snapshot restore backup.json
    """


@snapshot_group.command("save")
@conn_options
@click.argument("file", metavar="FILE")
@json_option
def save_cmd(file: str, as_json: bool) -> None:
    """Write the current config to FILE with its revision and a sha256.

    The file is written atomically with mode 0600: it holds consumer
    credentials. An existing FILE is replaced.

    \b
    Example:
      gwadm snapshot save backups/gw-$(date +%F).json
    """
    client = make_client(timeout=30.0)
    with apply_mod.progress("fetching the config"):
        config = client.config()
        info = cluster_info(client)
    snap = build_snapshot(config, info, datetime.now(UTC))
    write_private(file, json.dumps(snap, indent=2, ensure_ascii=False) + "\n")
    counts = {kind: len(items) for kind, items in snap["resources"].items()}
    if as_json:
        console.print_json(
            {"file": file, **{k: v for k, v in snap.items() if k != "resources"}, "counts": counts}
        )
        return
    what = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    click.echo(f"saved revision {snap['revision']} ({what}) to {file} (sha256 {snap['sha256'][:16]}…)")


@snapshot_group.command("restore")
@conn_options
@click.argument("file", metavar="FILE")
@click.option("--dry-run", is_flag=True, help="Verify the file and print the plan only.")
@click.option(
    "--expect-revision",
    type=int,
    default=None,
    metavar="N",
    help="Restore only if the config is still at revision N.",
)
@apply_mod.secrets_option
@json_option
def restore_cmd(
    file: str, dry_run: bool, expect_revision: int | None, show_secrets: bool, as_json: bool
) -> None:
    """Make the config equal to the snapshot in FILE, in one transaction.

    The file's format and checksum are verified first (a changed file is
    refused). Resources created since the snapshot are DELETED. The plan is
    printed, then applied with a revision check, like `gwadm apply`.

    \b
    Examples:
      gwadm snapshot restore backup.json --dry-run
      gwadm snapshot restore backup.json
    """
    doc = apply_mod.read_document(file, "json")
    resources = verify_snapshot(doc)
    apply_mod.run(resources, partial=False, dry_run=dry_run, as_json=as_json,
                  show_secrets=show_secrets, expect_revision=expect_revision)  # fmt: skip


COMMANDS = [snapshot_group]
