"""The Dash application: a fleet page and one page per machine, refreshed on a timer.

The dashboard only reads the control plane's database; it opens it read-only.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import dash
from dash import Input, Output, dcc, html
from werkzeug.serving import BaseWSGIServer, make_server

from control_plane.config import Settings
from control_plane.dashboard.views import fleet_page, machine_page, not_found_page
from control_plane.storage import Storage, open_storage, utc_now
from edge_agent.reading import IDENTIFIER_PATTERN

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_REFRESH_S = 5.0
RECENT_ALERTS = 20
HISTORY_POINTS = 500


def create_dashboard(
    storage: Storage,
    *,
    agent_stale_s: float = 30.0,
    refresh_s: float = DEFAULT_REFRESH_S,
) -> dash.Dash:
    """Build the dashboard on an open storage.

    Args:
        storage: the database to read; the dashboard never writes to it.
        agent_stale_s: seconds without a heartbeat after which an agent is down.
        refresh_s: seconds between page refreshes.
    """
    app = dash.Dash(
        __name__,
        title="edgepm fleet",
        assets_folder=str(ASSETS),
        # Every script comes from the server itself, so the page works offline.
        serve_locally=True,
        suppress_callback_exceptions=True,
        # An empty title keeps the page title still while a refresh runs.
        update_title="",
    )
    app.layout = html.Div(
        [
            dcc.Location(id="url"),
            dcc.Interval(id="refresh", interval=int(refresh_s * 1000)),
            html.Main(id="page", className="page"),
        ]
    )

    @app.callback(
        Output("page", "children"),
        Input("url", "pathname"),
        Input("refresh", "n_intervals"),
    )
    def render_page(pathname: str | None, _tick: int | None) -> Any:
        return render_path(storage, pathname or "/", agent_stale_s=agent_stale_s)

    return app


def render_path(storage: Storage, path: str, *, agent_stale_s: float) -> Any:
    """Build the page a path names: ``/`` or ``/machines/<site>/<machine_id>``."""
    now = utc_now()
    if path in ("", "/"):
        return fleet_page(
            agents=storage.list_agents(),
            machines=storage.list_machine_risk(),
            alerts=storage.recent_alerts(limit=RECENT_ALERTS),
            now=now,
            stale_s=agent_stale_s,
        )
    parts = path.strip("/").split("/")
    if (
        len(parts) == 3
        and parts[0] == "machines"
        and all(IDENTIFIER_PATTERN.match(part) for part in parts[1:])
    ):
        site, machine_id = parts[1], parts[2]
        history = storage.machine_history(site, machine_id, limit=HISTORY_POINTS)
        return machine_page(site=site, machine_id=machine_id, history=history, now=now)
    return not_found_page(path)


def run_dashboard(settings: Settings) -> None:
    """Serve the dashboard on the configured host and port until interrupted."""
    storage = open_storage(settings.database_url, read_only=True)
    app = create_dashboard(storage, agent_stale_s=settings.agent_stale_s)
    # NOTE: werkzeug's threaded server suits a few operators on a plant network;
    # put a WSGI server such as gunicorn in front of app.server for more.
    server = make_server(
        settings.dashboard_host, settings.dashboard_port, app.server, threaded=True
    )
    if settings.log_level != "DEBUG":
        # werkzeug logs every request at INFO, and each open page polls every few
        # seconds.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logger.info(
        "serving the dashboard on http://%s:%d from %s",
        settings.dashboard_host,
        settings.dashboard_port,
        storage.description,
    )
    _stop_on_signals(server)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        storage.close()
        logger.info("dashboard stopped")


def _stop_on_signals(server: BaseWSGIServer) -> None:
    """Make SIGINT and SIGTERM end ``serve_forever`` so the cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        logger.info("dashboard stopping on %s", signal.Signals(signum).name)
        # shutdown() waits for serve_forever() to return, and serve_forever() runs
        # on this thread, so the call has to come from another one.
        threading.Thread(target=server.shutdown, name="dashboard-stop").start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
