"""The control plane's HTTP API: ingest from agents, fleet views, models, scoring."""

from control_plane.api.app import create_app, run_api

__all__ = ["create_app", "run_api"]
