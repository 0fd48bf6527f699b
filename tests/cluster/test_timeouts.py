"""Request timeouts: node.toml defaults and per-request overrides (cluster/timeouts.py)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from cluster.node import SettingsError, load_settings
from cluster.timeouts import Timeouts, request_timeout
from gateway.errors import ValidationError


def test_defaults_and_toml_table() -> None:
    assert Timeouts() == Timeouts(request=5.0, no_leader_wait=0.5, forward=5.0)
    assert Timeouts.from_toml({"request": 2, "no_leader_wait": 0.2}) == Timeouts(2.0, 0.2, 5.0)
    for bad in ({"request": 0}, {"request": "5"}, {"nope": 1}, {"forward": True}, [1]):
        with pytest.raises(ValueError):
            Timeouts.from_toml(bad)


def test_node_toml_timeouts_are_read_and_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = 'node_id = "n1"\nraft_addr = "127.0.0.1:7001"\nadmin_addr = "127.0.0.1:8001"\ndata_dir = "d"\nsecret = "s"\ninsecure = true\n'
    good = tmp_path / "good.toml"
    good.write_text(base + "[timeouts]\nrequest = 2.5\nno_leader_wait = 0.3\n")
    settings = load_settings(str(good), {})
    assert settings.timeouts == Timeouts(request=2.5, no_leader_wait=0.3, forward=5.0)
    bad = tmp_path / "bad.toml"
    bad.write_text(base + "[timeouts]\nrequest = 500\n")
    with pytest.raises(SettingsError, match="request must be a number of seconds"):
        load_settings(str(bad), {})


def test_per_request_header_or_query_wins() -> None:
    assert request_timeout(make_mocked_request("GET", "/v1/routes"), 5.0) == 5.0
    assert request_timeout(make_mocked_request("GET", "/v1/routes?timeout=1.5"), 5.0) == 1.5
    req = make_mocked_request("GET", "/v1/routes?timeout=9", headers={"X-Request-Timeout": "0.25"})
    assert request_timeout(req, 5.0) == 0.25
    with pytest.raises(ValidationError) as err:
        request_timeout(make_mocked_request("GET", "/v1/routes?timeout=soon"), 5.0)
    assert err.value.path == "timeout"
    with pytest.raises(ValidationError) as err:
        request_timeout(make_mocked_request("GET", "/", headers={"X-Request-Timeout": "0"}), 5.0)
    assert err.value.path == "X-Request-Timeout"
    # the header wins, but a bad query value beside it is still refused (nothing invalid is ignored)
    for bad in ("999", "true", "nan"):
        with pytest.raises(ValidationError) as err:
            request_timeout(make_mocked_request("GET", f"/v1/routes?timeout={bad}",
                                                headers={"X-Request-Timeout": "2"}), 5.0)  # fmt: skip
        assert err.value.path == "timeout"
