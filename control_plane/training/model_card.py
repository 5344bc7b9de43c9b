"""The model card of a version: what it was trained on, how good it is, its limits.

Written as ``model_card.json`` (for the dashboard and the API) and
``model_card.md`` (for people) into the version directory before it is published,
and listed with their sha256 in the manifest's ``documents``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from control_plane.training.metrics import (
    BASELINE,
    CEILING,
    GOALS,
    HEADLINE,
    HEADLINE_LABELS,
)

logger = logging.getLogger(__name__)

MODEL_CARD_FORMAT = "edgepm-model-card/1"
MODEL_CARD_JSON = "model_card.json"
MODEL_CARD_MARKDOWN = "model_card.md"

KNOWN_LIMITS = (
    "Tool-wear failures happen at a tool change with a chance of about 45 in 119, "
    "and one reading does not say that the tool is about to be changed; the model "
    "can only rank worn tools higher, so most tool-wear failures stay below the "
    "threshold.",
    "Random failures (about 0.1 to 0.2 % of processes) carry no signal in the "
    "measurements and are not predictable.",
    "At a written temperature difference of exactly 8.6 K and a speed below "
    "1380 rpm, the AI4I labels depend on the binary rounding of the two "
    "temperatures in float64. The graph computes in float64 and follows the "
    "generator there, but a real sensor with 0.1 K resolution cannot tell these "
    "readings apart: treat a heat-dissipation alert within 0.1 K of the limit as "
    "borderline.",
    "The model learned the AI4I generative process. Real machines with other "
    "failure mechanisms, other sensors or other product types need their own "
    "training data.",
    "Failure-type probabilities come from a second model and need not agree with "
    "the failure head: read the type only when the failure head raises an alert.",
)


class ModelCardError(ValueError):
    """A version directory whose model card is missing or malformed."""


def write_model_card(card: dict[str, Any], directory: Path) -> list[dict[str, str]]:
    """Write the card as JSON and Markdown; return the manifest's ``documents``."""
    files = {
        MODEL_CARD_JSON: json.dumps(card, indent=2) + "\n",
        MODEL_CARD_MARKDOWN: render_markdown(card),
    }
    documents = []
    for name, text in files.items():
        data = text.encode("utf-8")
        (directory / name).write_bytes(data)
        documents.append({"file": name, "sha256": hashlib.sha256(data).hexdigest()})
    return documents


def load_model_card(version_dir: Path) -> dict[str, Any]:
    """Read the model card of a version directory for display.

    Returns:
        The card document, with the keys ``format``, ``version``, ``created_at``,
        ``summary``, ``model``, ``training_data``, ``label_consistency``,
        ``label_policy``, ``evaluation``, ``cross_validation``,
        ``decision_threshold``, ``risk_bands``, ``suspected_leakage``,
        ``known_limits``, ``artifact`` and ``parity``. ``evaluation`` has the
        held-out figures: ``metrics`` rows (name, label, value, ceiling, baseline,
        goal), ``failure``, ``failure_type``, ``precision_recall_curve`` and
        ``reliability_curve``. ``cross_validation`` is None unless the version was
        trained with it.

    Raises:
        ModelCardError: the card is missing, not JSON, or of another format.
    """
    path = version_dir / MODEL_CARD_JSON
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelCardError(
            f"{path} not found; versions trained before model cards existed have "
            "none, retrain to get one"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict) or card.get("format") != MODEL_CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise ModelCardError(
            f"{path} has format {found!r}, expected {MODEL_CARD_FORMAT!r}"
        )
    return card


def metrics_rows(figures: dict[str, float]) -> list[dict[str, Any]]:
    """Return the headline table: each figure beside the ceiling, baseline and goal."""
    return [
        {
            "name": name,
            "label": HEADLINE_LABELS[name],
            "value": figures[name],
            "ceiling": CEILING[name],
            "baseline": BASELINE[name],
            "goal": GOALS[name],
        }
        for name in HEADLINE
    ]


def render_markdown(card: dict[str, Any]) -> str:
    """Render a card as Markdown."""
    evaluation = card["evaluation"]
    lines = [
        f"# Model card: edgepm model v{card['version']}",
        "",
        card["summary"],
        "",
        "## Training data",
        "",
        f"- File: `{card['training_data']['file']}`, sha256 "
        f"`{card['training_data']['sha256']}`",
        f"- Rows: {card['training_data']['rows']}, failures: "
        f"{card['training_data']['class_counts'].get('1', 0)}",
        f"- Features of the trees: {', '.join(card['model']['features'])}",
        "",
        "## Quality",
        "",
        evaluation["protocol"],
        "",
        "| figure | this model | ceiling | baseline | goal |",
        "|---|---|---|---|---|",
    ]
    for row in evaluation["metrics"]:
        lines.append(
            f"| {row['label']} | {row['value']:.3f} | {row['ceiling']} | "
            f"{row['baseline']} | {row['goal']} |"
        )
    cross_validation = card.get("cross_validation")
    if cross_validation:
        lines += ["", cross_validation["protocol"], ""]
        lines += ["| figure | scikit-learn | ONNX |", "|---|---|---|"]
        for name in HEADLINE:
            sklearn = cross_validation["sklearn"][name]
            onnx = cross_validation["onnx"][name]
            lines.append(
                f"| {HEADLINE_LABELS[name]} | {sklearn['mean']:.3f} ± "
                f"{sklearn['std']:.3f} | {onnx['mean']:.3f} ± {onnx['std']:.3f} |"
            )
    lines += ["", "Failure types on the held-out rows:", ""]
    lines += ["| type | precision | recall | F1 | rows |", "|---|---|---|---|---|"]
    for label, scores in evaluation["failure_type"]["per_class"].items():
        lines.append(
            f"| {label} | {scores['precision']:.3f} | {scores['recall']:.3f} | "
            f"{scores['f1']:.3f} | {scores['support']} |"
        )
    threshold = card["decision_threshold"]
    lines += [
        "",
        "## Decision threshold and risk bands",
        "",
        f"Failure when P(failure) >= {threshold['value']}: {threshold['selection']}.",
        "",
        "| band | from P | meaning | held-out rows | failure rate |",
        "|---|---|---|---|---|",
    ]
    for band in card["risk_bands"]:
        rate = band["test"]["failure_rate"]
        lines.append(
            f"| {band['name']} | {band['min_probability']} | {band['meaning']} | "
            f"{band['test']['rows']} | {'-' if rate is None else f'{rate:.3f}'} |"
        )
    lines += ["", "## Label consistency", ""]
    report = card["label_consistency"]
    for key, title in (
        ("failure_without_type", "failures without a failure type"),
        ("type_without_failure", "failure types without a failure"),
        ("several_rules", "rows where several failure rules fire"),
    ):
        lines.append(f"- {title}: {report[key]['count']}")
    for key, text in card["label_policy"].items():
        lines.append(f"- {key.replace('_', ' ')}: {text}")
    lines += ["", "## Suspected leakage", ""]
    lines += [f"- {flag}" for flag in card["suspected_leakage"]] or ["None flagged."]
    lines += ["", "## Known limits", ""]
    lines += [f"- {limit}" for limit in card["known_limits"]]
    artifact = card["artifact"]
    lines += [
        "",
        "## Artifact",
        "",
        f"`{artifact['file']}`, {artifact['size_bytes']} bytes, sha256 "
        f"`{artifact['sha256']}`. Parity with scikit-learn on "
        f"{card['parity']['rows']} rows: max probability difference "
        f"{card['parity']['failure_max_abs_difference']:.2g}, "
        f"{card['parity']['label_flips']} label flips.",
        "",
    ]
    return "\n".join(lines)
