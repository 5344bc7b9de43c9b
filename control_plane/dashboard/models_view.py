"""The models page and one page per model version, built from its model card.

Like the fleet views, these functions take records and a card document and return
Dash components, with no database, file or Dash app involved.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from dash import dcc, html

from control_plane.dashboard.model_figures import (
    precision_recall_figure,
    reliability_figure,
)
from control_plane.storage.records import FLEET_SCOPE, Deployment, ModelVersion

logger = logging.getLogger(__name__)

MODELS_PATH = "/models"
# Manifest metrics shown on the models page: (section, key, column title).
_HEADLINE_COLUMNS = (
    ("failure", "f1", "Failure F1"),
    ("failure", "pr_auc", "PR-AUC"),
    ("failure", "recall_at_precision_90", "Recall at precision 0.9"),
    ("failure_type", "macro_f1", "Type macro-F1"),
)
_CONSISTENCY_CHECKS = (
    ("failure_without_type", "Failures without a failure type"),
    ("type_without_failure", "Failure types without a failure"),
    ("several_rules", "Rows where several failure rules fire"),
    ("rule_without_failure", "Rows where a failure rule fires without a failure"),
    ("rule_type_without_rule", "Failure types whose rule does not fire"),
    ("heat_boundary", "Rows at exactly 8.6 K below 1380 rpm"),
)


def model_path(version: int) -> str:
    """Return the dashboard path of a model version's page."""
    return f"{MODELS_PATH}/{version}"


def current_scopes(deployments: Sequence[Deployment]) -> dict[int, list[str]]:
    """Map each version to the scopes whose latest deployment names it.

    Args:
        deployments: every deployment, newest first, as ``list_deployments`` returns.
    """
    latest: dict[str, int] = {}
    for deployment in deployments:
        latest.setdefault(deployment.scope, deployment.version)
    scopes: dict[int, list[str]] = {}
    for scope, version in sorted(latest.items()):
        scopes.setdefault(version, []).append(scope)
    return scopes


def scope_name(scope: str) -> str:
    """Return how a deployment scope reads on a page: a site name or ``fleet``."""
    return "fleet" if scope == FLEET_SCOPE else scope


def models_page(
    *,
    versions: Sequence[ModelVersion],
    deployments: Sequence[Deployment],
    fleet_version: int | None,
    now: dt.datetime,
) -> html.Div:
    """Build the models page: every recorded version with its headline figures."""
    scopes = current_scopes(deployments)
    rows = [_version_row(model, scopes, fleet_version) for model in versions]
    headers = ["Version", "Status", "Created", *(t for _, _, t in _HEADLINE_COLUMNS)]
    return html.Div(
        [
            dcc.Link("← fleet", href="/", className="back"),
            html.H1("Model versions"),
            html.P(
                f"{len(versions)} recorded; {_fleet_text(fleet_version)} Figures "
                f"are from each version's held-out rows. Updated {_clock(now)}.",
                className="summary",
            ),
            _table(
                "models-table",
                [*headers, "Current for"],
                rows,
                "No model version is recorded yet.",
            ),
        ]
    )


def model_page(
    *,
    version: int,
    model: ModelVersion | None,
    card: Mapping[str, Any] | None,
    problem: str | None,
    scopes: Sequence[str] = (),
) -> html.Div:
    """Build a version's page from its model card, or show why the card is missing.

    Args:
        version: the version number in the path.
        model: the recorded version, None when the database has no such version.
        card: the model card document, None when it could not be read.
        problem: why there is no card to show, e.g. the loader's error message.
        scopes: the deployment scopes this version is current for.
    """
    header = [
        dcc.Link("← models", href=MODELS_PATH, className="back"),
        html.H1(f"Model v{version}"),
    ]
    if model is not None:
        header.append(html.P(_status_text(model, scopes), className="summary"))
    if card is None:
        return html.Div([*header, _problem(problem or "No model card to show.")])
    try:
        sections = _card_sections(card)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        # A card of the right format can still lack a field or have one of the
        # wrong type, so the page shows the problem instead of failing the callback.
        logger.warning("model card of v%d is malformed: %r", version, exc)
        return html.Div(
            [*header, _problem(f"The model card of v{version} is malformed: {exc!r}.")]
        )
    return html.Div([*header, html.Div(sections, id="model-card")])


def model_not_found_page(version: int, message: str) -> html.Div:
    """Build the page of a version number the database does not record."""
    return model_page(version=version, model=None, card=None, problem=message)


def _card_sections(card: Mapping[str, Any]) -> list[Any]:
    evaluation = card["evaluation"]
    threshold = card["decision_threshold"]
    return [
        html.P(card["summary"], className="card-summary"),
        *_training_section(card),
        html.H2("Quality on held-out rows"),
        html.P(evaluation["protocol"], className="summary"),
        _metrics_table(evaluation["metrics"]),
        *_cross_validation_section(card.get("cross_validation"), evaluation),
        *_failure_type_section(evaluation["failure_type"]),
        html.H2("Precision and recall"),
        dcc.Graph(
            id="model-pr-graph",
            figure=precision_recall_figure(
                evaluation["precision_recall_curve"], threshold=threshold["value"]
            ),
        ),
        html.H2("Reliability"),
        html.P(
            "Each point is a bin of held-out rows by predicted probability; a "
            "calibrated model lies on the diagonal.",
            className="summary",
        ),
        dcc.Graph(
            id="model-reliability-graph",
            figure=reliability_figure(evaluation["reliability_curve"]),
        ),
        *_threshold_section(threshold, card["risk_bands"]),
        *_labels_section(card["label_consistency"], card["label_policy"]),
        *_parity_section(card["parity"], card["artifact"]),
        html.H2("Suspected leakage"),
        _bullets(card["suspected_leakage"], "None flagged.", "model-leakage"),
        html.H2("Known limits"),
        _bullets(card["known_limits"], "None recorded.", "model-limits"),
    ]


def _training_section(card: Mapping[str, Any]) -> list[Any]:
    data = card["training_data"]
    model = card["model"]
    failures = data["class_counts"].get("1", 0)
    engineered = {row["name"]: row["formula"] for row in model["engineered_features"]}
    features = [
        html.Li(
            [html.Code(name), f" = {engineered[name]}" if name in engineered else ""]
        )
        for name in model["features"]
    ]
    return [
        html.H2("Training data"),
        html.P(
            [
                f"{data['file']}: {data['rows']} rows, {failures} failures. sha256 ",
                html.Code(data["sha256"], id="model-fingerprint"),
            ]
        ),
        html.H2("Model"),
        html.P(
            f"{model['family']} on {len(model['features'])} features, computed in "
            f"the graph from the inputs {', '.join(model['inputs'])}. Failure head "
            f"parameters {_params(model['failure_params'])}; failure-type head "
            f"parameters {_params(model['failure_type_params'])}; classes "
            f"{', '.join(model['failure_type_classes'])}."
        ),
        html.Ul(features, id="model-features"),
    ]


def _metrics_table(rows: Sequence[Mapping[str, Any]]) -> Any:
    body = []
    for row in rows:
        meets_goal = row["value"] >= row["goal"]
        body.append(
            html.Tr(
                [
                    html.Td(row["label"]),
                    html.Td(
                        _number(row["value"]),
                        className="goal-met" if meets_goal else "goal-missed",
                    ),
                    html.Td(_number(row["ceiling"])),
                    html.Td(_number(row["baseline"])),
                    html.Td(_number(row["goal"])),
                ]
            )
        )
    return _table(
        "model-metrics-table",
        ["Figure", "This model", "Ceiling", "Baseline", "Goal"],
        body,
        "The card has no metrics.",
    )


def _cross_validation_section(
    cross_validation: Mapping[str, Any] | None, evaluation: Mapping[str, Any]
) -> list[Any]:
    if not cross_validation:
        return [
            html.P("Trained without repeated cross-validation.", className="summary")
        ]
    rows = [
        html.Tr(
            [
                html.Td(row["label"]),
                html.Td(_spread(cross_validation["sklearn"][row["name"]])),
                html.Td(_spread(cross_validation["onnx"][row["name"]])),
            ]
        )
        for row in evaluation["metrics"]
    ]
    return [
        html.H2("Cross-validation"),
        html.P(cross_validation["protocol"], className="summary"),
        _table("model-cv-table", ["Figure", "scikit-learn", "ONNX"], rows, "No folds."),
    ]


def _failure_type_section(failure_type: Mapping[str, Any]) -> list[Any]:
    per_class = [
        html.Tr(
            [
                html.Td(label),
                html.Td(_number(scores["precision"])),
                html.Td(_number(scores["recall"])),
                html.Td(_number(scores["f1"])),
                html.Td(str(scores["support"])),
            ]
        )
        for label, scores in failure_type["per_class"].items()
    ]
    confusion = failure_type["confusion_matrix"]
    labels = confusion["labels"]
    matrix_rows = [
        html.Tr(
            [
                html.Th(label),
                *(
                    html.Td(str(count), className="diagonal" if i == j else "")
                    for j, count in enumerate(counts)
                ),
            ]
        )
        for i, (label, counts) in enumerate(
            zip(labels, confusion["matrix"], strict=True)
        )
    ]
    return [
        html.H2("Failure types"),
        _table(
            "model-class-table",
            ["Type", "Precision", "Recall", "F1", "Held-out rows"],
            per_class,
            "No classes.",
        ),
        html.P(
            f"Confusion matrix: rows are the {confusion['rows_are']}, columns the "
            f"{confusion['columns_are']}.",
            className="summary matrix-caption",
        ),
        _table(
            "model-confusion-matrix",
            ["", *labels],
            matrix_rows,
            "No rows.",
        ),
    ]


def _threshold_section(
    threshold: Mapping[str, Any], bands: Sequence[Mapping[str, Any]]
) -> list[Any]:
    rows = [
        html.Tr(
            [
                html.Td(band["name"], className=f"band-{band['name']}"),
                html.Td(f"{band['min_probability']:g}"),
                html.Td(band["meaning"]),
                html.Td(str(band["test"]["rows"])),
                html.Td(str(band["test"]["failures"])),
                html.Td(_rate(band["test"]["failure_rate"])),
            ]
        )
        for band in bands
    ]
    return [
        html.H2("Decision threshold and risk bands"),
        html.P(
            [
                "A reading is a failure when P(failure) ≥ ",
                html.Strong(f"{threshold['value']:g}", id="model-threshold"),
                f". Chosen by {threshold['selection']}.",
            ]
        ),
        _table(
            "model-bands-table",
            ["Band", "From P", "Meaning", "Held-out rows", "Failures", "Failure rate"],
            rows,
            "No risk bands.",
        ),
    ]


def _labels_section(report: Mapping[str, Any], policy: Mapping[str, str]) -> list[Any]:
    rows = [
        html.Tr(
            [
                html.Td(title),
                html.Td(str(report[key]["count"])),
                html.Td(_udi_sample(report[key].get("udi", []))),
            ]
        )
        for key, title in _CONSISTENCY_CHECKS
        if key in report
    ]
    return [
        html.H2("Label consistency"),
        html.P(
            f"Checked on {report['rows']} rows of the training file.",
            className="summary",
        ),
        _table(
            "model-labels-table",
            ["Check", "Rows", "UDI of the rows"],
            rows,
            "No checks recorded.",
        ),
        html.H3("Label policy"),
        html.Ul(
            [
                html.Li([html.Strong(key.replace("_", " ") + ": "), text])
                for key, text in policy.items()
            ],
            id="model-label-policy",
        ),
    ]


def _parity_section(
    parity: Mapping[str, Any], artifact: Mapping[str, Any]
) -> list[Any]:
    return [
        html.H2("ONNX parity"),
        html.P(
            f"On {parity['rows']} rows, ONNX and scikit-learn differ by at most "
            f"{parity['failure_max_abs_difference']:.2g} in P(failure) and "
            f"{parity['failure_type_max_abs_difference']:.2g} in the type "
            f"probabilities (tolerance {parity['tolerance']:g}), with "
            f"{parity['label_flips']} failure-label flips and "
            f"{parity['failure_type_flips']} failure-type flips at threshold "
            f"{parity['decision_threshold']:g}.",
            id="model-parity",
        ),
        html.P(
            [
                f"Artifact {artifact['file']}, {artifact['size_bytes']:,} bytes, "
                "sha256 ",
                html.Code(artifact["sha256"]),
            ],
            className="summary",
        ),
    ]


def _version_row(
    model: ModelVersion, scopes: Mapping[int, list[str]], fleet_version: int | None
) -> Any:
    current = [scope_name(scope) for scope in scopes.get(model.version, [])]
    if model.version == fleet_version and "fleet" not in current:
        # No fleet deployment names it, so the fleet runs it as the newest accepted.
        current.insert(0, "fleet (newest accepted)")
    cells = [
        html.Td(dcc.Link(f"v{model.version}", href=model_path(model.version))),
        html.Td(
            model.status,
            className=f"model-{model.status}",
            title=model.rejection_reason or "",
        ),
        html.Td(_clock(model.created_at)),
    ]
    for section, key, _ in _HEADLINE_COLUMNS:
        value = model.metrics.get(section, {}).get(key)
        cells.append(html.Td("–" if value is None else _number(value)))
    cells.append(html.Td(", ".join(current)))
    return html.Tr(cells, className="model-row")


def _status_text(model: ModelVersion, scopes: Sequence[str]) -> str:
    text = f"{model.status.capitalize()}, created {_clock(model.created_at)}."
    if model.rejection_reason:
        text += f" Rejected because {model.rejection_reason}."
    if scopes:
        text += f" Current for {', '.join(scope_name(scope) for scope in scopes)}."
    return text


def _fleet_text(fleet_version: int | None) -> str:
    if fleet_version is None:
        return "no version is accepted, so the fleet has none to run."
    return f"the fleet runs v{fleet_version} unless a site has its own deployment."


def _problem(message: str) -> Any:
    return html.P(message, id="model-card-missing", className="problem")


def _bullets(items: Sequence[str], empty: str, element_id: str) -> Any:
    if not items:
        return html.P(empty, id=element_id)
    return html.Ul([html.Li(item) for item in items], id=element_id)


def _table(table_id: str, headers: list[str], rows: list[Any], empty: str) -> Any:
    body = rows or [html.Tr(html.Td(empty, colSpan=len(headers), className="empty"))]
    return html.Table(
        [html.Thead(html.Tr([html.Th(name) for name in headers])), html.Tbody(body)],
        id=table_id,
    )


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items()) or "defaults"


def _udi_sample(udis: Sequence[str], limit: int = 12) -> str:
    listed = ", ".join(udis[:limit])
    if len(udis) > limit:
        return f"{listed}, … ({len(udis) - limit} more)"
    return listed


def _spread(figure: Mapping[str, float]) -> str:
    return f"{figure['mean']:.3f} ± {figure['std']:.3f}"


def _number(value: float) -> str:
    return f"{value:.3f}"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _clock(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
