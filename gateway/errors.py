"""The exception tree of gwadm, written down once.

Every error that can reach a user carries a stable ``code``, a human ``message`` and, where it
concerns one field, a ``path`` such as ``routes[r1].paths[0]``. The admin API maps codes to HTTP
statuses (``cluster/admin_api.py``); the CLI prints ``message`` without a traceback.

    GatewayError                 base; never raised directly
    +-- ValidationError          422  a field is missing, unknown, of the wrong type or out of range
    +-- ReferenceViolation       422  a resource points at one that does not exist
    +-- NotFound                 404  the resource (or kind) does not exist
    +-- Conflict                 409  CAS failed: revision / mod_revision is not the expected one
    +-- InUse                    409  the resource is referenced and cannot be deleted
    +-- CodecError               400  bytes that do not decode into the expected structure
    +-- DeltaBaseMismatch        -    a delta whose base is not the state's revision (proxy resyncs)
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base of every error raised by the pure core; carries a code, a message and a field path."""

    code = "error"

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message if path is None else f"{path}: {message}")
        self.message = message
        self.path = path

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body used on every API: ``{"code", "message", "path"}``."""
        return {"code": self.code, "message": self.message, "path": self.path}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GatewayError:
        """Rebuild the right subclass from ``to_dict()`` output (results cross Raft as data)."""
        for sub in _ALL:
            if sub.code == data.get("code"):
                return sub(str(data.get("message", "")), data.get("path"))
        return GatewayError(str(data.get("message", "")), data.get("path"))


class ValidationError(GatewayError):
    code = "invalid"


class ReferenceViolation(GatewayError):
    code = "invalid_reference"


class NotFound(GatewayError):
    code = "not_found"


class Conflict(GatewayError):
    code = "conflict"


class InUse(GatewayError):
    code = "in_use"


class CodecError(GatewayError):
    code = "bad_encoding"


class DeltaBaseMismatch(GatewayError):
    code = "base_mismatch"


_ALL: tuple[type[GatewayError], ...] = (
    ValidationError,
    ReferenceViolation,
    NotFound,
    Conflict,
    InUse,
    CodecError,
    DeltaBaseMismatch,
)
