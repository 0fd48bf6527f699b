"""A small private CA for a cluster: the CA itself and the certificates of nodes and proxies.

Files (``DIR/tls/``, written by `gwadm cluster up`, `gwadm cert init|issue|renew`):

```
ca.pem  ca.key (0600)        the cluster's CA (10 years); its key never leaves DIR
<name>.pem  <name>.key (0600) a member's certificate (1 year) and key, signed by the CA
```

Keys are ECDSA P-256. A node certificate is a server certificate (``serverAuth``) whose SANs are
the addresses it binds (IPs as IP SANs, names as DNS SANs); a proxy certificate is a client
certificate (``clientAuth``, for mutual TLS on the push stream) and also a server certificate for
its own listener when that serves TLS. Nothing here talks to the network.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE_DAYS = 30  # `gwadm cert renew` without --all re-issues certificates expiring sooner than this


class CertError(Exception):
    """A CA or certificate file is missing or unusable; the message names the file."""


@dataclass(frozen=True)
class CertPaths:
    cert: Path
    key: Path


def tls_dir(cluster_dir: str | os.PathLike[str]) -> Path:
    return Path(cluster_dir) / "tls"


def ca_paths(cluster_dir: str | os.PathLike[str]) -> CertPaths:
    d = tls_dir(cluster_dir)
    return CertPaths(d / "ca.pem", d / "ca.key")


def member_paths(cluster_dir: str | os.PathLike[str], name: str) -> CertPaths:
    d = tls_dir(cluster_dir)
    return CertPaths(d / f"{name}.pem", d / f"{name}.key")


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(cluster_dir: str | os.PathLike[str], common_name: str = "gwadm cluster CA") -> CertPaths:
    """Create the CA in ``DIR/tls`` unless one exists there already (idempotent)."""
    paths = ca_paths(cluster_dir)
    if paths.cert.exists() and paths.key.exists():
        return paths
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(paths.key, _key_bytes(key), 0o600)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def load_ca(cluster_dir: str | os.PathLike[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    paths = ca_paths(cluster_dir)
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(f"no CA in {paths.cert.parent} ({exc.filename} is missing): run `gwadm cert init`") from exc
    except (OSError, ValueError) as exc:
        raise CertError(f"cannot read the CA in {paths.cert.parent}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{paths.key} is not an ECDSA key")
    return cert, key


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(n.strip() for n in names if n.strip()):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n.strip("[]"))))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def issue(
    cluster_dir: str | os.PathLike[str],
    name: str,
    sans: Sequence[str],
    *,
    server: bool = True,
    client: bool = False,
    days: int = LEAF_DAYS,
    not_before: dt.datetime | None = None,
) -> CertPaths:
    """Issue (or re-issue) ``DIR/tls/<name>.pem`` + ``.key`` signed by the cluster's CA.

    ``not_before`` (tests: an already expired certificate) defaults to now minus 5 minutes.
    """
    if not sans:
        raise CertError(f"certificate {name}: at least one SAN (address or name) is needed")
    ca_cert, ca_key = load_ca(cluster_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (_now() - dt.timedelta(minutes=5))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    if not usages:
        raise CertError(f"certificate {name}: neither a server nor a client certificate")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = member_paths(cluster_dir, name)
    _write(paths.key, _key_bytes(key), 0o600)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def cert_info(path: str | os.PathLike[str]) -> dict[str, object]:
    """Subject CN, SANs and validity of a PEM certificate (for `gwadm cert list`)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CertError(f"cannot read certificate {path}: {exc}") from exc
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {
        "name": str(cn[0].value) if cn else "",
        "sans": names,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "days_left": (cert.not_valid_after_utc - _now()).days,
    }


def sans_of(path: str | os.PathLike[str]) -> list[str]:
    info = cert_info(path)
    sans = info["sans"]
    assert isinstance(sans, list)
    return [str(s) for s in sans]
