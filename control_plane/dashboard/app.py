"""The Dash application: fleet, machine and model pages, refreshed on a timer.

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
from control_plane.dashboard.models_view import (
    MODELS_PATH,
    current_scopes,
    model_not_found_page,
    model_page,
    models_page,
)
from control_plane.dashboard.views import fleet_page, machine_page, not_found_page
from control_plane.listen import open_listening_socket
from control_plane.storage import Storage, open_storage, utc_now
from control_plane.storage.errors import NotFoundError
from control_plane.storage.records import MAX_MODEL_VERSION, ModelVersion
from control_plane.training.model_card import ModelCardError, load_model_card
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
        path = pathname or "/"
        # A version's card does not change, so a timer tick leaves its page and the
        # reader's zoom as they are. Its deployment line updates on the next visit.
        is_tick = set(dash.ctx.triggered_prop_ids) == {"refresh.n_intervals"}
        if is_tick and path.startswith(MODELS_PATH + "/"):
            raise dash.exceptions.PreventUpdate
        return render_path(storage, path, agent_stale_s=agent_stale_s)

    return app


def render_path(storage: Storage, path: str, *, agent_stale_s: float) -> Any:
    """Build the page a path names.

    The paths are ``/``, ``/machines/<site>/<machine_id>``, ``/models`` and
    ``/models/<version>``.
    """
    now = utc_now()
    if path in ("", "/"):
        return fleet_page(
            agents=storage.list_agents(),
            machines=storage.list_machine_risk(),
            alerts=storage.recent_alerts(limit=RECENT_ALERTS),
            now=now,
            stale_s=agent_stale_s,
            fleet_version=storage.current_version(),
        )
    if path.rstrip("/") == MODELS_PATH:
        return models_page(
            versions=storage.list_model_versions(),
            deployments=storage.list_deployments(),
            fleet_version=storage.current_version(),
            now=now,
        )
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == MODELS_PATH.strip("/") and _is_version(parts[1]):
        return render_model(storage, int(parts[1]))
    if (
        len(parts) == 3
        and parts[0] == "machines"
        and all(IDENTIFIER_PATTERN.match(part) for part in parts[1:])
    ):
        site, machine_id = parts[1], parts[2]
        history = storage.machine_history(site, machine_id, limit=HISTORY_POINTS)
        return machine_page(site=site, machine_id=machine_id, history=history, now=now)
    return not_found_page(path)


def render_model(storage: Storage, version: int) -> Any:
    """Build a version's page from its recorded path and the model card there."""
    try:
        model = storage.get_model_version(version)
    except NotFoundError as exc:
        return model_not_found_page(version, str(exc))
    card, problem = None, None
    try:
        card = _read_card(model)
    except ModelCardError as exc:
        problem = str(exc)
        logger.warning("model v%d: no model card to show: %s", version, problem)
    scopes = current_scopes(storage.list_deployments()).get(version, [])
    return model_page(
        version=version, model=model, card=card, problem=problem, scopes=scopes
    )


def run_dashboard(settings: Settings) -> None:
    """Serve the dashboard on the configured host and port until interrupted."""
    # Bound here because werkzeug reports a bind failure itself and calls
    # sys.exit, which would bypass the command's error message.
    sock = open_listening_socket(
        settings.dashboard_host,
        settings.dashboard_port,
        host_variable="EDGEPM_DASHBOARD_HOST",
        port_variable="EDGEPM_DASHBOARD_PORT",
    )
    storage = open_storage(settings.database_url, read_only=True)
    app = create_dashboard(storage, agent_stale_s=settings.agent_stale_s)
    # NOTE: werkzeug's threaded server suits a few operators on a plant network;
    # put a WSGI server such as gunicorn in front of app.server for more.
    try:
        server = make_server(
            settings.dashboard_host,
            settings.dashboard_port,
            app.server,
            threaded=True,
            fd=sock.fileno(),
        )
    finally:
        # The server works on a duplicate of the descriptor.
        sock.close()
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


def _read_card(model: ModelVersion) -> dict[str, Any]:
    if model.path is None:
        raise ModelCardError(
            f"model v{model.version} is {model.status} and has no version directory, "
            "so it has no model card"
        )
    directory = Path(model.path)
    if not directory.is_dir():
        raise ModelCardError(
            f"the directory of model v{model.version}, {directory}, does not exist; "
            "restore it from a backup of the model store to see its model card"
        )
    return load_model_card(directory)


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


def _is_version(text: str) -> bool:
    # isdigit alone admits digits such as "²", and the database stores versions as
    # 32-bit integers.
    return text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_MODEL_VERSION
