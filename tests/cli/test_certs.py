"""The cluster CA and member certificates (cli/certs.py) and `gwadm cert` (no processes)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import stat
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cli import certs
from cli.main import cli
from cli.supervisor import Supervisor
from cluster import tls


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_and_member_certificates(tmp_path: Path) -> None:
    ca = certs.create_ca(tmp_path)
    assert stat.S_IMODE(os.stat(ca.key).st_mode) == 0o600
    again = certs.create_ca(tmp_path)
    assert again.cert.read_bytes() == ca.cert.read_bytes()  # idempotent: an existing CA is kept
    node = certs.issue(tmp_path, "n1", ["127.0.0.1", "n1", "localhost"])
    cert = load(node.cert)
    assert stat.S_IMODE(os.stat(node.key).st_mode) == 0o600
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["n1", "localhost"]
    assert 364 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 366
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    proxy = load(certs.issue(tmp_path, "p1", ["127.0.0.1"], client=True).cert)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in proxy.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # the contexts of cluster/tls.py accept them
    tls.server_context(str(node.cert), str(node.key), str(ca.cert), verify_clients=True)
    ctx = tls.client_context(str(ca.cert))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_mismatched_key_and_expired_ca_are_named(tmp_path: Path) -> None:
    certs.create_ca(tmp_path)
    a = certs.issue(tmp_path, "a", ["127.0.0.1"])
    b = certs.issue(tmp_path, "b", ["127.0.0.1"])
    try:
        tls.server_context(str(a.cert), str(b.key))
    except tls.TLSConfigError as exc:
        assert str(b.key) in str(exc) and "does not fit" in str(exc)
    else:
        raise AssertionError("a key of another certificate was accepted")
    old = certs.issue(tmp_path, "old", ["127.0.0.1"], not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=400))
    try:
        tls.check_certificate(str(old.cert))
    except tls.TLSConfigError as exc:
        assert "expired on" in str(exc) and "gwadm cert renew" in str(exc)
    else:
        raise AssertionError("an expired certificate was accepted")


def test_cert_renew_reissues_expiring_certificates_with_the_same_sans(tmp_path: Path) -> None:
    d = tmp_path / "gw"
    Supervisor(d).create(1, 1)
    old_sans = certs.sans_of(certs.member_paths(d, "n1").cert)
    # n1 expires in 10 days: due; p1 has a year left: kept unless --all
    certs.issue(d, "n1", old_sans, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=355))
    res = CliRunner().invoke(cli, ["cert", "renew", "--dir", str(d), "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r["result"] for r in json.loads(res.output)}
    assert rows == {"n1": "renewed", "p1": "kept"}
    info = certs.cert_info(certs.member_paths(d, "n1").cert)
    assert info["days_left"] in (364, 365) and info["sans"] == old_sans
    res = CliRunner().invoke(cli, ["cert", "renew", "--dir", str(d), "--all", "--json"])
    assert {r["result"] for r in json.loads(res.output)} == {"renewed"}


def test_cert_init_and_issue_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["cert", "init", "--dir", str(tmp_path)]).exit_code == 0
    res = runner.invoke(cli, ["cert", "issue", "n1", "--dir", str(tmp_path), "--san", "n1", "--san", "10.0.0.1"])
    assert res.exit_code == 0, res.output
    first = certs.member_paths(tmp_path, "n1").cert.read_bytes()
    res = runner.invoke(cli, ["cert", "issue", "n1", "--dir", str(tmp_path), "--san", "n1", "--keep"])
    assert res.exit_code == 0 and certs.member_paths(tmp_path, "n1").cert.read_bytes() == first
    res = runner.invoke(cli, ["cert", "issue", "x", "--dir", str(tmp_path / "empty"), "--san", "x"])
    assert res.exit_code != 0 and "no CA in" in res.output
