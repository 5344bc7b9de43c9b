"""Plain-text rendering of a cross-validation report and the fresh-data check.

The tables put each figure beside the ceiling of the failure rules, the baseline
and the goal, so a reader sees at once how close a candidate is to the limit.
"""

from __future__ import annotations

import logging
from typing import Any

from control_plane.training.evaluation import CrossValidationReport
from control_plane.training.metrics import (
    BASELINE,
    CEILING,
    GOALS,
    HEADLINE,
    HEADLINE_LABELS,
)

logger = logging.getLogger(__name__)

# Thresholds of the precision-recall curve printed in the text report; the JSON
# report has every 0.01 step.
_PRINTED_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def render_cross_validation(report: CrossValidationReport) -> str:
    """Render the headline table, per-class scores, curves and choices as text."""
    sklearn = report.spread("sklearn")
    onnx = report.spread("onnx")
    oracle64 = report.oracle_spread("float64")
    oracle32 = report.oracle_spread("float32")
    lines = [report.protocol(), ""]
    lines.append(
        f"{'':36} {'ceiling':>8} {'baseline':>8} {'goal':>6} "
        f"{'scikit-learn':>15} {'ONNX':>15} {'oracle f64':>15} {'oracle f32':>15}"
    )
    for name in HEADLINE:
        lines.append(
            f"{HEADLINE_LABELS[name]:36} {CEILING[name]:>8} {BASELINE[name]:>8} "
            f"{GOALS[name]:>6} {_pm(sklearn[name]):>15} {_pm(onnx[name]):>15} "
            f"{_pm(oracle64[name]):>15} {_pm(oracle32[name]):>15}"
        )
    lines.append(
        f"{HEADLINE_LABELS['failure_brier']:36} {'':>8} {'':>8} {'':>6} "
        f"{_pm(sklearn['failure_brier'], 4):>15} {_pm(onnx['failure_brier'], 4):>15}"
    )
    lines += [
        "",
        "oracle f64: the published rules in float64 on the written values (the "
        "generator's arithmetic);",
        "oracle f32: the same rules where float32 arithmetic decides them, the rows "
        "at exactly 8.6 K left undecided (the graph computes in float64).",
        "",
    ]
    lines += _choices(report)
    pooled = report.pooled()
    lines += ["", *_per_class(report, pooled), ""]
    lines += _confusion(pooled["failure_type"]["confusion_matrix"], report.repeats)
    lines += ["", *_curve(pooled["precision_recall_curve"]), ""]
    lines += _reliability(pooled)
    flags = report.suspected_leakage()
    lines += ["", "Suspected leakage: " + ("; ".join(flags) if flags else "none")]
    lines.append(f"Time: {report.seconds:.0f} s")
    return "\n".join(lines)


def render_fresh(fresh: dict[str, Any], cross_validation: dict[str, Any]) -> str:
    """Render the fresh-data figures beside the cross-validated ones."""
    profiles = fresh["profiles"]
    lines = [
        f"Trained on all of {fresh['trained_on']} (threshold "
        f"{fresh['decision_threshold']}), scored through ONNX on fresh synthetic "
        "data; the rules oracles on the same rows for reference.",
        "",
    ]
    header = f"{'':36} {'CV (ONNX)':>15}"
    for name in profiles:
        header += f" {name + ' data':>12} {name + ' oracle':>14}"
    lines.append(header)
    for metric in HEADLINE:
        row = (
            f"{HEADLINE_LABELS[metric]:36} {_pm(cross_validation['onnx'][metric]):>15}"
        )
        for profile in profiles.values():
            row += (
                f" {profile['figures'][metric]:>12.3f}"
                f" {profile['oracles']['float64'][metric]:>14.3f}"
            )
        lines.append(row)
    for name, profile in profiles.items():
        lines.append(
            f"{name}: {profile['rows']} processes on {profile['machines']} machines "
            f"(seed {profile['seed']}), {profile['failures']} failures: "
            + ", ".join(f"{k} {v}" for k, v in profile["failure_type_counts"].items())
        )
    return "\n".join(lines)


def _pm(spread: dict[str, float], digits: int = 3) -> str:
    return f"{spread['mean']:.{digits}f} ± {spread['std']:.{digits}f}"


def _choices(report: CrossValidationReport) -> list[str]:
    thresholds = [result.decision_threshold for result in report.results]
    bands = [result.medium_band for result in report.results]
    parity = max(
        max(result.parity["failure"], result.parity["failure_type"])
        for result in report.results
    )
    flips = sum(int(result.parity["label_flips"]) for result in report.results)
    chosen = sorted({str(result.failure_params) for result in report.results})
    return [
        "Decision threshold per fold (maximum F1 of the inner out-of-fold "
        "probabilities of the outer training part): "
        + " ".join(f"{t:.2f}" for t in thresholds),
        "Medium band per fold: " + " ".join(f"{b:.2f}" for b in bands),
        f"Failure-head hyperparameters chosen: {'; '.join(chosen)}",
        f"Parity per fold: max probability difference {parity:.2g}, "
        f"{flips} failure label flip(s) in all folds",
        f"Artifact per fold: {report.results[0].artifact_bytes} bytes",
    ]


def _per_class(report: CrossValidationReport, pooled: dict[str, Any]) -> list[str]:
    spread = report.per_class_spread()
    lines = [
        "Failure types (ONNX): F1 mean ± std over folds; precision and recall pooled",
        f"{'':28} {'F1':>15} {'precision':>10} {'recall':>8} {'rows':>7}",
    ]
    for label, scores in pooled["failure_type"]["per_class"].items():
        f1 = _pm(spread[label]) if label in spread else "-"
        lines.append(
            f"{label:28} {f1:>15} {scores['precision']:>10.3f} "
            f"{scores['recall']:>8.3f} {scores['support']:>7}"
        )
    return lines


def _confusion(confusion: dict[str, Any], repeats: int) -> list[str]:
    labels = confusion["labels"]
    short = [label.split()[0][:8] for label in labels]
    lines = [
        f"Confusion matrix (ONNX, rows recorded, columns predicted, summed over "
        f"{repeats} repeat(s)):",
        f"{'':28}" + "".join(f"{name:>9}" for name in short),
    ]
    for label, row in zip(labels, confusion["matrix"], strict=True):
        lines.append(f"{label:28}" + "".join(f"{count:>9}" for count in row))
    return lines


def _curve(points: list[dict[str, float]]) -> list[str]:
    lines = [
        "Precision-recall curve (ONNX, pooled):",
        f"{'threshold':>10} {'precision':>10} {'recall':>8} {'flagged':>8}",
    ]
    for point in points:
        if round(point["threshold"], 2) in _PRINTED_THRESHOLDS:
            lines.append(
                f"{point['threshold']:>10.2f} {point['precision']:>10.3f} "
                f"{point['recall']:>8.3f} {point['flagged']:>8}"
            )
    return lines


def _reliability(pooled: dict[str, Any]) -> list[str]:
    lines = [
        f"Calibration (ONNX, pooled): Brier score {pooled['failure']['brier']:.4f}",
        f"{'P from':>7} {'to':>5} {'rows':>7} {'mean P':>8} {'failure rate':>13}",
    ]
    for cell in pooled["reliability_curve"]:
        if cell["rows"]:
            lines.append(
                f"{cell['low']:>7.2f} {cell['high']:>5.2f} {cell['rows']:>7} "
                f"{cell['mean_probability']:>8.3f} {cell['failure_rate']:>13.3f}"
            )
    return lines
