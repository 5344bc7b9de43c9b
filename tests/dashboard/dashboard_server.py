"""The dashboard served from a background thread on a free loopback port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from werkzeug.serving import make_server

from control_plane.dashboard import create_dashboard
from control_plane.storage import Storage


@contextmanager
def serve_dashboard(storage: Storage, *, refresh_s: float = 5.0) -> Iterator[str]:
    """Serve the dashboard on an open storage and yield its base URL."""
    app = create_dashboard(storage, agent_stale_s=30.0, refresh_s=refresh_s)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, name="dashboard-server", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
