"""The proxy's plugins and the control plane's plugin schemas are one list, and a plugin's config is
exactly what ``gateway.plugin_schemas`` normalizes (no second, hand-written parser in the proxy)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.plugin_schemas import ACCESS_LOG_FIELDS, JWT_ALGORITHMS, PLUGIN_NAMES, validate_plugin_config
from proxy.plugins import PLUGINS
from proxy.plugins.access_log import FIELDS
from proxy.plugins.jwt_auth import ALGORITHMS

MINIMAL: dict[str, dict[str, Any]] = {
    "rate-limit": {"limit": 5},
    "ip-restriction": {"allow": ["10.1.2.3/8"]},
}


def test_the_two_plugin_lists_agree() -> None:
    assert sorted(PLUGINS) == sorted(PLUGIN_NAMES)
    assert FIELDS == ACCESS_LOG_FIELDS and ALGORITHMS == JWT_ALGORITHMS


@pytest.mark.parametrize("name", sorted(PLUGIN_NAMES))
def test_a_plugin_config_is_the_schema_normalized_config(name: str) -> None:
    raw = MINIMAL.get(name, {})
    plugin = PLUGINS[name](raw)
    normalized = validate_plugin_config(name, raw, name)
    if name == "key-auth":
        normalized["query_param"] = normalized["query_param"] or None
    assert plugin.config == normalized


def test_a_schema_error_is_a_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"rate-limit\.window"):
        PLUGINS["rate-limit"]({"limit": 1, "window": 0})
    with pytest.raises(ValueError, match=r"cors\.methods\[0\]"):
        PLUGINS["cors"]({"methods": ["NOT A METHOD"]})
