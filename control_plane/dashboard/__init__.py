"""The fleet dashboard: agents, machines by risk, alerts, and machine histories."""

from control_plane.dashboard.app import create_dashboard, run_dashboard

__all__ = ["create_dashboard", "run_dashboard"]
