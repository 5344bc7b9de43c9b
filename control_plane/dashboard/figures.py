"""Plotly figures of one machine's history."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from control_plane.storage.records import HistoryPoint

_MEASUREMENTS = (
    ("air_temperature_k", "Air temperature (K)"),
    ("process_temperature_k", "Process temperature (K)"),
    ("rotational_speed_rpm", "Rotational speed (rpm)"),
    ("torque_nm", "Torque (N·m)"),
    ("tool_wear_min", "Tool wear (min)"),
)
# A fixed uirevision keeps the user's zoom and pan when the page refreshes.
_KEEP_VIEW = "machine"


def risk_figure(history: Sequence[HistoryPoint]) -> go.Figure:
    """Plot the failure probability of each scored reading over time."""
    scored = [point for point in history if point.failure_probability is not None]
    figure = go.Figure(
        go.Scatter(
            x=[point.ts for point in scored],
            y=[point.failure_probability for point in scored],
            mode="lines+markers",
            name="failure probability",
            text=[
                f"{point.risk_band}, model v{point.model_version}" for point in scored
            ],
            hovertemplate="%{x}<br>%{y:.1%} (%{text})<extra></extra>",
        )
    )
    figure.update_layout(
        height=300,
        margin={"l": 60, "r": 20, "t": 20, "b": 40},
        yaxis={"title": "failure probability", "range": [0, 1], "tickformat": ".0%"},
        uirevision=_KEEP_VIEW,
    )
    return figure


def measurements_figure(history: Sequence[HistoryPoint]) -> go.Figure:
    """Plot the five measurements over time, one panel each on a shared time axis."""
    figure = make_subplots(
        rows=len(_MEASUREMENTS),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.03,
        subplot_titles=[title for _, title in _MEASUREMENTS],
    )
    times = [point.ts for point in history]
    for row, (field, title) in enumerate(_MEASUREMENTS, start=1):
        figure.add_trace(
            go.Scatter(
                x=times,
                y=[getattr(point, field) for point in history],
                mode="lines",
                name=title,
            ),
            row=row,
            col=1,
        )
    figure.update_layout(
        height=160 * len(_MEASUREMENTS),
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
        showlegend=False,
        uirevision=_KEEP_VIEW,
    )
    return figure
