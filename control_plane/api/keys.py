"""Typed keys for the state the API keeps on its application and requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from control_plane.api.metrics import ApiMetrics
from control_plane.api.scorers import ScorerCache
from control_plane.config import Settings
from control_plane.storage import Storage

SETTINGS = web.AppKey("settings", Settings)
STORAGE = web.AppKey("storage", Storage)
# Runs every blocking call: database queries, onnxruntime, file copies.
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
SCORERS = web.AppKey("scorers", ScorerCache)
METRICS = web.AppKey("metrics", ApiMetrics)
# The caller's identity, as the authentication middleware established it.
PRINCIPAL = web.RequestKey("principal", str)
