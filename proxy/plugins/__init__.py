"""Data-plane plugins, one module each; ``PLUGINS`` maps config names to classes."""

from __future__ import annotations

from proxy.plugins.access_log import AccessLog
from proxy.plugins.base import Plugin, PluginChain, RequestContext, Services, json_error
from proxy.plugins.cors import Cors
from proxy.plugins.ip_restriction import IpRestriction
from proxy.plugins.jwt_auth import JwtAuth
from proxy.plugins.key_auth import KeyAuth
from proxy.plugins.rate_limit import RateLimit
from proxy.plugins.request_id import RequestId
from proxy.plugins.request_transformer import RequestTransformer

PLUGINS: dict[str, type[Plugin]] = {
    cls.name: cls
    for cls in (RequestId, IpRestriction, Cors, JwtAuth, KeyAuth, RateLimit, RequestTransformer, AccessLog)
}

__all__ = ["PLUGINS", "Plugin", "PluginChain", "RequestContext", "Services", "json_error"]
