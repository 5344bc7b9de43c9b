"""Plotly figures of a model card: the precision-recall and reliability curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

_MARGIN = {"l": 60, "r": 20, "t": 20, "b": 50}


def precision_recall_figure(
    points: Sequence[Mapping[str, Any]], *, threshold: float
) -> go.Figure:
    """Plot held-out precision against recall, one point per threshold.

    Args:
        points: the card's ``precision_recall_curve`` rows (threshold, precision,
            recall, flagged).
        threshold: the decision threshold, marked as the operating point.
    """
    figure = go.Figure(
        go.Scatter(
            x=[point["recall"] for point in points],
            y=[point["precision"] for point in points],
            mode="lines+markers",
            marker={"size": 4},
            name="thresholds",
            customdata=[[point["threshold"], point["flagged"]] for point in points],
            hovertemplate=(
                "P ≥ %{customdata[0]:.2f}<br>recall %{x:.3f}, precision %{y:.3f}"
                "<br>%{customdata[1]} rows flagged<extra></extra>"
            ),
        )
    )
    operating = _nearest_threshold(points, threshold)
    if operating is not None:
        figure.add_trace(
            go.Scatter(
                x=[operating["recall"]],
                y=[operating["precision"]],
                mode="markers",
                marker={"size": 12, "symbol": "diamond", "color": "#cf222e"},
                name=f"decision threshold {threshold:g}",
                hovertemplate=(
                    f"decision threshold {threshold:g}<br>recall %{{x:.3f}}, "
                    "precision %{y:.3f}<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        height=360,
        margin=_MARGIN,
        xaxis={"title": "recall", "range": [0, 1.02]},
        yaxis={"title": "precision", "range": [0, 1.02]},
        legend={"x": 0.02, "y": 0.05},
    )
    return figure


def reliability_figure(bins: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Plot the observed failure rate against the mean predicted probability per bin.

    Args:
        bins: the card's ``reliability_curve`` rows (low, high, rows,
            mean_probability, failure_rate); empty bins are left out.
    """
    filled = [row for row in bins if row["rows"]]
    figure = go.Figure(
        [
            go.Scatter(
                x=[0, 1],
                y=[0, 1],
                mode="lines",
                line={"dash": "dot", "color": "#8c959f"},
                name="perfect calibration",
                hoverinfo="skip",
            ),
            go.Scatter(
                x=[row["mean_probability"] for row in filled],
                y=[row["failure_rate"] for row in filled],
                mode="lines+markers",
                name="held-out rows",
                customdata=[[row["low"], row["high"], row["rows"]] for row in filled],
                hovertemplate=(
                    "P in [%{customdata[0]:.2f}, %{customdata[1]:.2f}): "
                    "%{customdata[2]} rows<br>mean P %{x:.3f}, failure rate "
                    "%{y:.3f}<extra></extra>"
                ),
            ),
        ]
    )
    figure.update_layout(
        height=360,
        margin=_MARGIN,
        xaxis={"title": "mean predicted P(failure)", "range": [0, 1]},
        yaxis={"title": "observed failure rate", "range": [0, 1.02]},
        legend={"x": 0.02, "y": 0.98},
    )
    return figure


def _nearest_threshold(
    points: Sequence[Mapping[str, Any]], threshold: float
) -> Mapping[str, Any] | None:
    if not points:
        return None
    return min(points, key=lambda point: abs(point["threshold"] - threshold))
