"""The dashboard's pages built from a real database, without a browser."""

from __future__ import annotations

import json
import urllib.request

from dash.development.base_component import Component

from control_plane.dashboard.app import render_path
from control_plane.storage import Storage
from tests.dashboard.dashboard_server import serve_dashboard


def _ids(component: Component) -> set[str]:
    found = set()
    stack = [component]
    while stack:
        node = stack.pop()
        if isinstance(node, Component):
            if getattr(node, "id", None):
                found.add(node.id)
            children = getattr(node, "children", None)
            stack.extend(children if isinstance(children, list) else [children])
    return found


def _text(component: object) -> str:
    return json.dumps(component, default=lambda node: node.to_plotly_json())


def test_dashboard_fleet_page_lists_fleet(fleet_storage: Storage) -> None:
    page = render_path(fleet_storage, "/", agent_stale_s=30.0)

    text = _text(page)
    assert {"agents-table", "machines-table", "alerts-table"} <= _ids(page)
    assert "plant-a-agent" in text
    assert "/machines/plant-a/m-001" in text
    assert "93.0%" in text


def test_dashboard_machine_page_has_graphs(fleet_storage: Storage) -> None:
    page = render_path(fleet_storage, "/machines/plant-a/m-001", agent_stale_s=30.0)

    assert {"machine-risk-graph", "machine-measurements-graph"} <= _ids(page)


def test_dashboard_unknown_machine_shows_empty(fleet_storage: Storage) -> None:
    page = render_path(fleet_storage, "/machines/plant-a/m-999", agent_stale_s=30.0)

    assert "No readings from this machine yet" in _text(page)


def test_dashboard_unknown_path_is_not_found(fleet_storage: Storage) -> None:
    page = render_path(fleet_storage, "/machines/../etc", agent_stale_s=30.0)

    assert "Page not found" in _text(page)


def test_dashboard_serves_scripts_locally(fleet_storage: Storage) -> None:
    with (
        serve_dashboard(fleet_storage) as base_url,
        urllib.request.urlopen(base_url + "/", timeout=10) as response,
    ):
        html = response.read().decode()

    assert "_dash-component-suites" in html
    assert "cdn" not in html.lower()
    assert "unpkg" not in html.lower()
