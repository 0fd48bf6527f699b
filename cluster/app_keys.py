"""Typed keys of the admin application's state, shared by the admin API modules."""

from aiohttp import web

from cluster.store import ConfigStore

STORE_KEY = web.AppKey("store", ConfigStore)
SETTINGS_KEY = web.AppKey("admin_settings", dict)
