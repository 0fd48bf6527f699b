"""Reusable HTTP-flavoured fields (header names, methods, paths, hosts, CIDRs) for the schemas.

Resource shapes (``validate.py``) and plugin configs (``plugin_schemas.py``) need the same notions of
"a header name" or "a URL path"; defining them once keeps normalization identical everywhere --
header names are lower-cased because HTTP compares them case-insensitively and the proxy looks them
up lower-cased; methods are upper-cased; CIDRs are normalized by ``ipaddress``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any

from .errors import ValidationError
from .schema import REQUIRED, Str

__all__ = [
    "HTTP_METHODS",
    "cidr",
    "header_name",
    "header_value",
    "host_or_ip",
    "http_method",
    "route_host",
    "url_path",
]

HTTP_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"  # RFC 9110 token, after lower-casing
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _has_space_or_control(value: str) -> bool:
    return any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value)


def header_name(*, default: Any = REQUIRED, nullable: bool = False) -> Str:
    """An HTTP header name (RFC 9110 token), lower-cased."""
    return Str(
        default=default,
        nullable=nullable,
        max_len=256,
        lower=True,
        pattern=_TOKEN,
        pattern_hint="must be a valid HTTP header name",
    )


def _check_header_value(value: str, path: str) -> str:
    if any(ch in value for ch in "\r\n\x00"):
        raise ValidationError("must not contain CR, LF or NUL", path)
    return value


def header_value(*, default: Any = REQUIRED) -> Str:
    """An HTTP header value: any string (possibly empty) without CR, LF or NUL."""
    return Str(default=default, min_len=0, max_len=8192, check=_check_header_value)


def http_method(*, default: Any = REQUIRED) -> Str:
    """One of ``HTTP_METHODS``, upper-cased."""
    return Str(default=default, upper=True, choices=HTTP_METHODS)


def url_path(*, default: Any = REQUIRED, nullable: bool = False, exact_prefix: bool = False) -> Str:
    """A URL path starting with ``/`` without whitespace; ``exact_prefix`` also allows ``=/exact``."""

    def check(value: str, path: str) -> str:
        body = value[1:] if exact_prefix and value.startswith("=") else value
        if not body.startswith("/"):
            hint = 'must start with "/" (or "=/" for an exact match)' if exact_prefix else 'must start with "/"'
            raise ValidationError(hint, path)
        if _has_space_or_control(value):
            raise ValidationError("must not contain whitespace or control characters", path)
        return value

    return Str(default=default, nullable=nullable, max_len=2048, check=check)


def _check_hostname(value: str, path: str) -> str:
    if len(value) > 253 or _HOSTNAME.fullmatch(value) is None:
        raise ValidationError("must be a valid hostname", path)
    return value


def route_host(*, default: Any = REQUIRED) -> Str:
    """A hostname to match the Host header, lower-cased; ``*.example.com`` is a wildcard."""

    def check(value: str, path: str) -> str:
        _check_hostname(value[2:] if value.startswith("*.") else value, path)
        return value

    return Str(default=default, max_len=255, lower=True, check=check)


@functools.lru_cache(maxsize=4096)
def _normalized_ip(text: str) -> str | None:
    """``text`` as a normalized IP address, or None if it is not one. Cached: every member
    validates every upstream target on every write, and fleets reuse a few hundred addresses."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def host_or_ip(*, default: Any = REQUIRED) -> Str:
    """An upstream host: an IP address (normalized; ``[::1]`` accepted) or a lower-cased hostname."""

    def check(value: str, path: str) -> str:
        bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        address = _normalized_ip(bare)
        if address is not None:
            return address
        try:
            return _check_hostname(value, path)
        except ValidationError:
            raise ValidationError("must be a hostname or an IP address", path) from None

    return Str(default=default, max_len=255, lower=True, check=check)


def cidr(*, default: Any = REQUIRED) -> Str:
    """An IPv4/IPv6 address or network, normalized to CIDR form (``10.0.0.7`` -> ``10.0.0.7/32``,
    host bits cleared: ``10.0.0.7/24`` -> ``10.0.0.0/24``)."""

    def check(value: str, path: str) -> str:
        try:
            return str(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValidationError("must be an IP address or CIDR network (e.g. 10.0.0.0/8)", path) from None

    return Str(default=default, max_len=64, check=check)
