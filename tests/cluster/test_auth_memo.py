"""verify_token remembers checked signatures, but expiry, role and policy are checked every time."""

from __future__ import annotations

import time

import pytest

from cluster import auth
from cluster.auth import AuthError, mint_token, verify_token

SECRET = "memo-secret-0123456789"


class Policy:
    def __init__(self) -> None:
        self.token_generation = 0
        self.revoked: set[str] = set()

    def token_revoked(self, jti: str) -> bool:
        return jti in self.revoked


def test_a_remembered_token_still_expires_and_can_be_revoked() -> None:
    token = mint_token(SECRET, "proxy", "p1", ttl_seconds=2)
    policy = Policy()
    first = verify_token(SECRET, token, policy)
    assert (auth.token_key(SECRET), token) in auth._verified
    again = verify_token(SECRET, token, policy)
    assert again == first and again is not first
    policy.revoked.add(first["jti"])
    with pytest.raises(AuthError, match="revoked"):
        verify_token(SECRET, token, policy)
    policy.revoked.clear()
    policy.token_generation = 1  # a rotation after the token was minted
    with pytest.raises(AuthError, match="rotation"):
        verify_token(SECRET, token, policy)
    deadline = time.time() + 10
    while time.time() <= first["exp"] and time.time() < deadline:
        time.sleep(0.1)
    with pytest.raises(AuthError, match="expired"):
        verify_token(SECRET, token)


def test_the_memo_is_per_key_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    token = mint_token(SECRET, "viewer", "v")
    verify_token(SECRET, token)
    with pytest.raises(AuthError, match="invalid token"):
        verify_token("another-secret-0123456789", token)  # remembered under the other key only
    monkeypatch.setattr(auth, "VERIFIED_MEMO", 3)
    for i in range(6):
        verify_token(SECRET, mint_token(SECRET, "viewer", f"v{i}"))
    assert len(auth._verified) == 3
