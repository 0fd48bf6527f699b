"""node.toml's [push] table: the stream limits reach the hub, and bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.node import SettingsError, load_settings
from cluster.push import PushHub
from cluster.push_limits import PUSH_SETTINGS
from tests.cluster.test_push_fakes import FakeStore


def write(tmp_path: Path, push: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(
        'node_id = "n1"\nraft_addr = "127.0.0.1:7001"\nadmin_addr = "127.0.0.1:8001"\ndata_dir = "d"\n'
        f'secret = "s3cret-s3cret-s3cret"\ninsecure = true\n{push}'
    )
    return str(path)


def test_push_limits_are_read_and_reach_the_hub(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[push]\nhello_timeout = 2.5\nmax_frame = 4096\nmax_streams = 9\n"
                                             "max_streams_per_address = 3\nstatus_interval = 1\n"), {})
    assert settings.push == {"hello_timeout": 2.5, "max_frame": 4096, "max_streams": 9,
                             "max_streams_per_address": 3, "status_interval": 1}
    hub = PushHub(FakeStore(), "v", **settings.push)
    assert (hub.hello_timeout, hub.max_frame, hub.max_streams, hub.max_streams_per_address, hub.status_interval) == (
        2.5, 4096, 9, 3, 1)
    assert set(PUSH_SETTINGS) == set(settings.push)
    assert load_settings(write(tmp_path, ""), {}).push == {}  # all optional: the hub's defaults


@pytest.mark.parametrize(
    ("push", "message"),
    [
        ("[push]\nmax_conns = 5\n", "unknown [push] setting 'max_conns'"),
        ("[push]\nmax_streams = 0\n", "max_streams must be an integer >= 1"),
        ("[push]\nmax_frame = 1.5\n", "max_frame must be an integer"),
        ("[push]\nhello_timeout = \"10\"\n", "hello_timeout must be a number"),
        ("[push]\nmax_streams_per_address = true\n", "max_streams_per_address"),
    ],
)
def test_bad_push_settings_are_named(tmp_path: Path, push: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(write(tmp_path, push), {})


def test_admission_counts_per_address_and_in_total_and_gives_slots_back() -> None:
    from cluster.push_limits import Admission

    adm = Admission(max_streams=3, max_per_address=2)
    with adm.holding("a"), adm.holding("a"):
        assert adm.refusal("a") == (429, "too many push streams from a (limit 2)")
        with adm.holding("b"):
            assert adm.refusal("c") == (503, "too many push streams on this node (limit 3)")
        assert adm.refusal("c") is None
    assert adm.total == 0 and adm.refusal("a") is None and adm.refused == {"too_many_streams": 2}
    with pytest.raises(RuntimeError), adm.holding("a"):
        raise RuntimeError("a handler that fails still gives its slot back")
    assert adm.total == 0
