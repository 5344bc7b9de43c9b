"""The dashboard's pages, built from storage records as Dash components.

Functions here take records and return components, with no database or Dash app
involved, so each page can be checked on plain data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from dash import dcc, html

from control_plane.dashboard.figures import measurements_figure, risk_figure
from control_plane.storage.records import AgentRow, AlertRow, HistoryPoint, MachineRisk

_BAND_CLASSES = {"low": "band-low", "medium": "band-medium", "high": "band-high"}


def machine_path(site: str, machine_id: str) -> str:
    """Return the dashboard path of a machine's page."""
    return f"/machines/{site}/{machine_id}"


def fleet_page(
    *,
    agents: Sequence[AgentRow],
    machines: Sequence[MachineRisk],
    alerts: Sequence[AlertRow],
    now: dt.datetime,
    stale_s: float,
    fleet_version: int | None = None,
) -> html.Div:
    """Build the fleet page: agents, machines by risk, recent alerts.

    Args:
        fleet_version: the model version the fleet runs, None when none is accepted.
    """
    up = sum(agent.is_up(now, stale_s) for agent in agents)
    return html.Div(
        [
            html.Nav(
                [
                    _fleet_model(fleet_version),
                    dcc.Link("Model versions", href="/models", id="models-link"),
                ],
                className="page-nav",
            ),
            html.H1("edgepm fleet"),
            html.P(
                f"{_count(len(agents), 'agent')} ({up} up), "
                f"{_count(len(machines), 'machine')}. "
                f"Updated {_clock(now)}; an agent is down after {stale_s:g} s "
                "without a heartbeat.",
                className="summary",
            ),
            html.H2("Agents"),
            _agents_table(agents, now, stale_s),
            html.H2("Machines by risk"),
            _machines_table(machines),
            html.H2("Recent alerts"),
            _alerts_table(alerts),
        ]
    )


def machine_page(
    *,
    site: str,
    machine_id: str,
    history: Sequence[HistoryPoint],
    now: dt.datetime,
) -> html.Div:
    """Build a machine's page: risk and the five measurements over time."""
    header = [
        dcc.Link("← fleet", href="/", className="back"),
        html.H1(f"Machine {machine_id} at {site}"),
    ]
    if not history:
        return html.Div(
            [*header, html.P("No readings from this machine yet.", id="machine-empty")]
        )
    latest = history[-1]
    scored = [point for point in history if point.failure_probability is not None]
    summary = (
        f"Latest of {len(history)} readings shown: {_clock(latest.ts)}, agent "
        f"{latest.agent_id}. "
    )
    if scored:
        last = scored[-1]
        summary += (
            f"Latest risk {_percent(last.failure_probability)} ({last.risk_band}) "
            f"from model v{last.model_version}."
        )
    else:
        summary += "No reading is scored yet."
    return html.Div(
        [
            *header,
            html.P(summary + f" Updated {_clock(now)}.", className="summary"),
            html.H2("Failure risk"),
            dcc.Graph(id="machine-risk-graph", figure=risk_figure(history)),
            html.H2("Measurements"),
            dcc.Graph(
                id="machine-measurements-graph", figure=measurements_figure(history)
            ),
        ]
    )


def not_found_page(path: str) -> html.Div:
    """Build the page for a path that names no page."""
    return html.Div(
        [
            html.H1("Page not found"),
            html.P(f"Nothing is at {path}. "),
            dcc.Link("Go to the fleet page", href="/"),
        ]
    )


def _fleet_model(version: int | None) -> Any:
    label: Any = _version(version)
    if version is not None:
        label = dcc.Link(label, href=f"/models/{version}")
    return html.Span(["Fleet model: ", label], id="fleet-model-version")


def _agents_table(agents: Sequence[AgentRow], now: dt.datetime, stale_s: float) -> Any:
    rows = []
    for agent in agents:
        is_up = agent.is_up(now, stale_s)
        backlog = sum(agent.backlog.values())
        rows.append(
            html.Tr(
                [
                    html.Td(agent.agent_id),
                    html.Td(agent.site),
                    html.Td(
                        "up" if is_up else "down",
                        className="status-up" if is_up else "status-down",
                    ),
                    html.Td(_version(agent.model_version)),
                    html.Td(
                        str(backlog),
                        title=", ".join(f"{k}: {v}" for k, v in agent.backlog.items()),
                    ),
                    html.Td(_age(agent.heartbeat_age_s(now), agent.last_heartbeat_at)),
                ],
                className="agent-row",
            )
        )
    return _table(
        "agents-table",
        ["Agent", "Site", "Status", "Model", "Backlog", "Last heartbeat"],
        rows,
        "No agent has reported yet.",
    )


def _machines_table(machines: Sequence[MachineRisk]) -> Any:
    rows = [
        html.Tr(
            [
                html.Td(
                    dcc.Link(
                        machine.machine_id,
                        href=machine_path(machine.site, machine.machine_id),
                    )
                ),
                html.Td(machine.site),
                html.Td(_percent(machine.failure_probability)),
                html.Td(
                    machine.risk_band or "not scored",
                    className=_band(machine.risk_band),
                ),
                html.Td(machine.failure_type or ""),
                html.Td(_version(machine.model_version)),
                html.Td(machine.agent_id),
                html.Td(_clock(machine.last_reading_at)),
            ],
            className="machine-row",
        )
        for machine in machines
    ]
    return _table(
        "machines-table",
        ["Machine", "Site", "Failure risk", "Band", "Failure type", "Model", "Agent",
         "Last reading"],
        rows,
        "No machine has sent a reading yet.",
    )  # fmt: skip


def _alerts_table(alerts: Sequence[AlertRow]) -> Any:
    rows = [
        html.Tr(
            [
                html.Td(_clock(alert.ts)),
                html.Td(alert.site),
                html.Td(
                    dcc.Link(
                        alert.machine_id,
                        href=machine_path(alert.site, alert.machine_id),
                    )
                ),
                html.Td(alert.state, className=f"alert-{alert.state}"),
                html.Td(_percent(alert.failure_probability)),
                html.Td(alert.risk_band, className=_band(alert.risk_band)),
                html.Td(alert.failure_type),
                html.Td(_version(alert.model_version)),
            ],
            className="alert-row",
        )
        for alert in alerts
    ]
    return _table(
        "alerts-table",
        ["Time", "Site", "Machine", "State", "Failure risk", "Band", "Failure type",
         "Model"],
        rows,
        "No alerts.",
    )  # fmt: skip


def _table(table_id: str, headers: list[str], rows: list[Any], empty: str) -> Any:
    body = rows or [html.Tr(html.Td(empty, colSpan=len(headers), className="empty"))]
    return html.Table(
        [html.Thead(html.Tr([html.Th(name) for name in headers])), html.Tbody(body)],
        id=table_id,
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _band(name: str | None) -> str:
    return _BAND_CLASSES.get(name or "", "band-none")


def _percent(probability: float | None) -> str:
    return "–" if probability is None else f"{probability:.1%}"


def _version(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def _clock(moment: dt.datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(age_s: float | None, moment: dt.datetime | None) -> str:
    if age_s is None:
        return "never"
    if age_s < 120:
        ago = f"{age_s:.0f} s ago"
    elif age_s < 7200:
        ago = f"{age_s / 60:.0f} min ago"
    else:
        ago = f"{age_s / 3600:.1f} h ago"
    return f"{ago} ({_clock(moment)})"
