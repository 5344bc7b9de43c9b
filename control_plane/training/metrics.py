"""Quality figures of the two heads: metrics, curves, calibration and leakage flags.

Every evaluation (the held-out test set of a version, each fold of the repeated
cross-validation, fresh synthetic data) computes its figures with these functions,
so the numbers in the manifest, the model card and the benchmark mean the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from edge_agent.scorer import decide_failure

logger = logging.getLogger(__name__)

MIN_PRECISION = 0.9

# The headline figures, in the order the tables print them.
HEADLINE = (
    "failure_f1",
    "failure_pr_auc",
    "recall_at_precision_90",
    "failure_type_macro_f1",
)
HEADLINE_LABELS = {
    "failure_f1": "failure F1",
    "failure_pr_auc": "failure PR-AUC (average precision)",
    "recall_at_precision_90": "recall at precision 0.9 or more",
    "failure_type_macro_f1": "failure type, 6-class macro-F1",
    "failure_brier": "failure Brier score",
}

# AI4I 2020 with 5-fold stratified cross-validation repeated 3 times: an oracle that
# evaluates the published rules in float64 on the written values (the generator's
# arithmetic), and a random forest of 400 balanced trees on engineered features.
CEILING = {
    "failure_f1": 0.917,
    "failure_pr_auc": 0.93,
    "recall_at_precision_90": 0.86,
    "failure_type_macro_f1": 0.68,
}
BASELINE = {
    "failure_f1": 0.867,
    "failure_pr_auc": 0.889,
    "recall_at_precision_90": 0.836,
    "failure_type_macro_f1": 0.640,
}
GOALS = {
    "failure_f1": 0.90,
    "failure_pr_auc": 0.91,
    "recall_at_precision_90": 0.85,
    "failure_type_macro_f1": 0.66,
}

# A held-out figure above these is above what the rules allow on AI4I-like data.
# The model then most likely saw the outcome, through an outcome column, an
# identifier used as a clock, resampling before the split or a threshold tuned on
# the test rows.
LEAKAGE_LIMITS = {
    "failure_f1": 0.93,
    "failure_pr_auc": 0.95,
    "recall_at_precision_90": 0.90,
    "failure_type_macro_f1": 0.70,
}

# Reliability bins: narrow where most probabilities are, wide elsewhere.
RELIABILITY_EDGES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)

# Thresholds at which the precision-recall curve is reported.
CURVE_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


def recall_at_precision(
    target: np.ndarray, probability: np.ndarray, min_precision: float = MIN_PRECISION
) -> float:
    """Return the highest recall of any threshold whose precision is at least that."""
    precision, recall, _ = precision_recall_curve(target, probability)
    reachable = recall[precision >= min_precision]
    return float(reachable.max()) if len(reachable) else 0.0


def failure_metrics(
    target: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Score the failure head's probabilities against the recorded ``Target``.

    Labels come from the decision rule the edge agent applies (float32 P >= float32
    threshold), so the figures hold for the deployed graph.
    """
    predicted = decide_failure(np.asarray(probability), threshold)
    precision, recall, f1, _ = precision_recall_fscore_support(
        target, predicted, average="binary", zero_division=0.0
    )
    return {
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "pr_auc": float(average_precision_score(target, probability)),
        "roc_auc": float(roc_auc_score(target, probability)),
        "recall_at_precision_90": recall_at_precision(target, probability),
        "brier": float(brier_score_loss(target, probability)),
        "threshold": threshold,
        "rows": len(target),
        "failures": int(np.sum(target)),
        "predicted_failures": int(predicted.sum()),
    }


def failure_type_metrics(
    recorded: np.ndarray, predicted: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Score predicted failure types against the recorded ones, over ``labels``.

    A class the model never predicts (in AI4I, random failures) scores 0 and stays
    in the macro average, as in the 6-class figures this is compared with.
    """
    labels = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        recorded, predicted, labels=labels, average=None, zero_division=0.0
    )
    return {
        "macro_f1": float(np.mean(f1)),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "per_class": {
            label: {
                "precision": float(p),
                "recall": float(r),
                "f1": float(score),
                "support": int(n),
            }
            for label, p, r, score, n in zip(
                labels, precision, recall, f1, support, strict=True
            )
        },
        "confusion_matrix": {
            "labels": labels,
            "rows_are": "recorded type",
            "columns_are": "predicted type",
            "matrix": confusion_matrix(recorded, predicted, labels=labels).tolist(),
        },
    }


def headline(failure: Mapping[str, Any], failure_type: Mapping[str, Any]) -> dict:
    """Pick the table's figures from the two heads' metrics."""
    return {
        "failure_f1": failure["f1"],
        "failure_pr_auc": failure["pr_auc"],
        "recall_at_precision_90": failure["recall_at_precision_90"],
        "failure_type_macro_f1": failure_type["macro_f1"],
        "failure_brier": failure["brier"],
    }


def precision_recall_points(
    target: np.ndarray, probability: np.ndarray
) -> list[dict[str, float]]:
    """Return precision and recall at each threshold of ``CURVE_THRESHOLDS``."""
    probability = np.asarray(probability, dtype=np.float32)
    failures = max(int(np.sum(target)), 1)
    points = []
    for threshold in CURVE_THRESHOLDS:
        predicted = probability >= np.float32(threshold)
        caught = int(np.sum(predicted & (target == 1)))
        flagged = int(predicted.sum())
        points.append(
            {
                "threshold": float(threshold),
                "precision": caught / flagged if flagged else 1.0,
                "recall": caught / failures,
                "flagged": flagged,
            }
        )
    return points


def reliability_curve(
    target: np.ndarray,
    probability: np.ndarray,
    edges: Sequence[float] = RELIABILITY_EDGES,
) -> list[dict[str, float]]:
    """Bin the probabilities and compare each bin's mean with its failure rate."""
    probability = np.asarray(probability, dtype=np.float64)
    index = np.clip(
        np.searchsorted(edges, probability, side="right") - 1, 0, len(edges) - 2
    )
    bins = []
    for position in range(len(edges) - 1):
        selected = index == position
        rows = int(selected.sum())
        bins.append(
            {
                "low": float(edges[position]),
                "high": float(edges[position + 1]),
                "rows": rows,
                "mean_probability": float(probability[selected].mean())
                if rows
                else None,
                "failure_rate": float(np.mean(target[selected])) if rows else None,
            }
        )
    return bins


def band_rates(
    target: np.ndarray, probability: np.ndarray, bands: Sequence[tuple[str, float]]
) -> list[dict[str, Any]]:
    """Count rows and failures in each risk band, compared in float32 like the agent.

    Args:
        bands: (name, min_probability) pairs in ascending order, the first at 0.
    """
    bounds = np.array([bound for _, bound in bands], dtype=np.float32)
    index = (
        np.searchsorted(bounds, np.asarray(probability, np.float32), side="right") - 1
    )
    rows = []
    for position, (name, bound) in enumerate(bands):
        selected = index == position
        count = int(selected.sum())
        failures = int(np.sum(target[selected]))
        rows.append(
            {
                "name": name,
                "min_probability": bound,
                "rows": count,
                "failures": failures,
                "failure_rate": failures / count if count else None,
                "share_of_failures": failures / max(int(np.sum(target)), 1),
            }
        )
    return rows


def flag_suspected_leakage(figures: Mapping[str, float]) -> list[str]:
    """Return one sentence per held-out figure above ``LEAKAGE_LIMITS``; else []."""
    flags = []
    for name, limit in LEAKAGE_LIMITS.items():
        value = figures.get(name)
        if value is not None and value > limit:
            flags.append(
                f"{HEADLINE_LABELS[name]} {value:.3f} is above {limit}, more than the "
                f"failure rules allow (ceiling {CEILING[name]}); suspect leakage: an "
                "outcome column or identifier as a feature, resampling before the "
                "split, or a threshold tuned on the test rows"
            )
    for message in flags:
        logger.warning("suspected leakage: %s", message)
    return flags
