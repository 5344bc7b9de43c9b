"""Nested, repeated cross-validation of a candidate, scored through ONNX, and a
check on fresh data from the synthetic AI4I generator.

Each outer fold runs the whole training procedure (``fit_heads``) on its training
part only, converts the fitted heads to one ONNX graph and scores its test part with
onnxruntime and with scikit-learn, so the figures hold for the deployed artifact.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from control_plane.data import NO_FAILURE, DataFingerprint, Dataset
from control_plane.training.convert import convert_models
from control_plane.training.features import DEFAULT_MODEL_FEATURES
from control_plane.training.labels import (
    ORACLE_THRESHOLD,
    LabelPolicy,
    rule_oracle_scores,
    rule_oracle_types,
)
from control_plane.training.metrics import (
    HEADLINE,
    failure_metrics,
    failure_type_metrics,
    flag_suspected_leakage,
    headline,
    precision_recall_points,
    reliability_curve,
)
from control_plane.training.model import (
    SEED,
    FittedHeads,
    TrainingPlan,
    fit_heads,
    openmp_threads,
    score_heads,
    subset,
    training_plan,
)
from control_plane.training.parity import run_onnx
from edge_agent.reading import MEASUREMENT_FIELDS
from edge_agent.scorer import choose_failure_types, decide_failure

logger = logging.getLogger(__name__)

FULL_OUTER = (5, 3)
QUICK_OUTER = (3, 1)

# The failure-type label of a synthetic process that triggered several modes, in
# the order the AI4I file records them.
_TYPE_PRECEDENCE = (
    "Tool Wear Failure",
    "Power Failure",
    "Heat Dissipation Failure",
    "Overstrain Failure",
    "Random Failures",
)


@dataclass(frozen=True)
class FoldResult:
    """One outer fold: the choices made on its training part and its test figures.

    Attributes:
        sklearn: headline figures of the scikit-learn pipelines on the test part.
        onnx: the same from the converted graph, through onnxruntime.
        oracles: headline figures of the rules oracles on the same test part.
        parity: max absolute probability differences and label flips between them.
    """

    repeat: int
    fold: int
    test_rows: int
    decision_threshold: float
    medium_band: float
    failure_params: dict[str, Any]
    failure_type_params: dict[str, Any]
    sklearn: dict[str, float]
    onnx: dict[str, float]
    oracles: dict[str, dict[str, float]]
    per_class_f1: dict[str, float]
    parity: dict[str, float]
    artifact_bytes: int


@dataclass
class CrossValidationReport:
    """All outer folds of a repeated cross-validation and the pooled ONNX outputs.

    Attributes:
        probability: ONNX failure probabilities, shape (repeats, rows); each repeat
            scores every row once, from the fold that held it out.
        predicted_type: the failure type per row and repeat, as the edge agent
            reports it (see ``choose_failure_types``).
    """

    source: str
    sha256: str
    rows: int
    folds: int
    repeats: int
    seed: int
    plan: TrainingPlan
    threads: int
    target: np.ndarray
    recorded_type: np.ndarray
    results: list[FoldResult] = field(default_factory=list)
    probability: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    predicted_type: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    seconds: float = 0.0

    def spread(self, engine: str) -> dict[str, dict[str, float]]:
        """Return the mean and standard deviation (ddof 1) over folds per figure."""
        figures = [getattr(result, engine) for result in self.results]
        return _spread(figures)

    def oracle_spread(self, name: str) -> dict[str, dict[str, float]]:
        """Return the rules oracle ``name``'s mean and standard deviation."""
        return _spread([result.oracles[name] for result in self.results])

    def per_class_spread(self) -> dict[str, dict[str, float]]:
        """Return each failure type's F1 (ONNX) as mean and standard deviation."""
        return _spread([result.per_class_f1 for result in self.results])

    def pooled(self) -> dict[str, Any]:
        """Score the ONNX outputs of all folds and repeats together.

        Every row appears once per repeat, so counts are ``repeats`` times the rows.
        """
        target = np.tile(self.target, self.repeats)
        recorded = np.tile(self.recorded_type, self.repeats)
        probability = self.probability.reshape(-1)
        predicted = self.predicted_type.reshape(-1)
        labels = sorted(set(recorded) | set(predicted))
        thresholds = [result.decision_threshold for result in self.results]
        return {
            "failure": failure_metrics(
                target, probability, float(np.median(thresholds))
            ),
            "failure_type": failure_type_metrics(recorded, predicted, labels),
            "precision_recall_curve": precision_recall_points(target, probability),
            "reliability_curve": reliability_curve(target, probability),
        }

    def suspected_leakage(self) -> list[str]:
        """Flag mean ONNX figures above what the failure rules allow."""
        means = {name: value["mean"] for name, value in self.spread("onnx").items()}
        return flag_suspected_leakage(means)

    def protocol(self) -> str:
        """Describe the protocol in one paragraph."""
        last_seed = self.seed + self.repeats - 1
        return (
            f"Nested cross-validation: {self.folds} stratified outer folds repeated "
            f"{self.repeats} times (seeds {self.seed} to {last_seed}) on "
            f"{self.rows} rows of {self.source}. Each outer training part alone "
            f"chose the hyperparameters, the decision threshold and the risk bands "
            f"({self.plan.folds}-fold inner cross-validation); the fitted heads were "
            "converted to ONNX and scored on the outer test part with onnxruntime "
            "and scikit-learn. Mean ± standard deviation over folds."
        )

    def summary(self) -> dict[str, Any]:
        """Return the compact figures stored in a manifest and a model card."""
        thresholds = [result.decision_threshold for result in self.results]
        return {
            "protocol": self.protocol(),
            "folds": self.folds,
            "repeats": self.repeats,
            "seed": self.seed,
            "features": list(self.plan.features),
            "tail_copies": self.plan.tails,
            "sklearn": self.spread("sklearn"),
            "onnx": self.spread("onnx"),
            "oracles": {
                name: self.oracle_spread(name) for name in self.results[0].oracles
            },
            "decision_thresholds": thresholds,
            "max_parity_difference": max(
                max(r.parity["failure"], r.parity["failure_type"]) for r in self.results
            ),
            "label_flips": sum(int(r.parity["label_flips"]) for r in self.results),
            "suspected_leakage": self.suspected_leakage(),
        }

    def to_document(self) -> dict[str, Any]:
        """Return everything as JSON-ready data: summary, folds, pooled figures."""
        return {
            **self.summary(),
            "source": self.source,
            "sha256": self.sha256,
            "rows": self.rows,
            "seconds": round(self.seconds, 1),
            "candidates": {
                "failure": list(self.plan.failure_candidates),
                "failure_type": list(self.plan.failure_type_candidates),
            },
            "label_policy": self.plan.policy.to_document(),
            "per_class_f1": self.per_class_spread(),
            "pooled_onnx": self.pooled(),
            "fold_results": [asdict(result) for result in self.results],
        }


def cross_validate(
    dataset: Dataset,
    *,
    folds: int | None = None,
    repeats: int | None = None,
    quick: bool = False,
    seed: int = SEED,
    features: Sequence[str] = DEFAULT_MODEL_FEATURES,
    policy: LabelPolicy | None = None,
    threads: int = 1,
    tails: bool = True,
) -> CrossValidationReport:
    """Run the nested, repeated cross-validation of one candidate.

    Args:
        dataset: the data to cross-validate on.
        folds: outer folds (default 5, or 3 with ``quick``).
        repeats: outer repetitions with seeds ``seed``, ``seed + 1``, ...
            (default 3, or 1 with ``quick``).
        quick: the quick training plan (one candidate, fewer trees and folds).
        seed: seeds the outer folds, the inner folds and the estimators.
        features: the trees' inputs, from ``MODEL_FEATURES``.
        policy: the labels each head trains on.
        threads: OpenMP threads for HistGradientBoosting.
        tails: whether the wide quantities get tail copies.

    Raises:
        LeakageError: a feature is an identifier or an outcome column.
        DatasetError: a feature is unknown.
        ConversionError: a fold's heads cannot be converted.
    """
    plan = training_plan(quick=quick, features=features, policy=policy, tails=tails)
    default_folds, default_repeats = QUICK_OUTER if quick else FULL_OUTER
    folds = folds or default_folds
    repeats = repeats or default_repeats
    if folds < 2 or repeats < 1:
        raise ValueError(
            f"folds={folds} and repeats={repeats}; expected folds >= 2, repeats >= 1"
        )
    report = CrossValidationReport(
        source=dataset.source.name,
        sha256=dataset.fingerprint.sha256,
        rows=len(dataset.target),
        folds=folds,
        repeats=repeats,
        seed=seed,
        plan=plan,
        threads=threads,
        target=dataset.target,
        recorded_type=dataset.failure_type,
        probability=np.zeros((repeats, len(dataset.target)), dtype=np.float32),
        predicted_type=np.empty((repeats, len(dataset.target)), dtype=object),
    )
    oracle_scores = rule_oracle_scores(dataset)
    oracle_types = rule_oracle_types(dataset)
    started = time.perf_counter()
    for repeat in range(repeats):
        outer = StratifiedKFold(folds, shuffle=True, random_state=seed + repeat)
        for fold, (train_index, test_index) in enumerate(
            outer.split(dataset.features, dataset.failure_type)
        ):
            result = _run_fold(
                report, dataset, train_index, test_index, repeat=repeat, fold=fold
            )
            result.oracles.update(
                _oracle_figures(dataset, test_index, oracle_scores, oracle_types)
            )
            report.results.append(result)
            logger.info(
                "repeat %d fold %d: ONNX F1 %.3f, PR-AUC %.3f, macro-F1 %.3f, "
                "threshold %.2f",
                repeat + 1,
                fold + 1,
                result.onnx["failure_f1"],
                result.onnx["failure_pr_auc"],
                result.onnx["failure_type_macro_f1"],
                result.decision_threshold,
            )
    report.seconds = time.perf_counter() - started
    return report


def fresh_data_check(
    dataset: Dataset,
    *,
    rows: int = 20_000,
    machines: int = 100,
    seed: int = SEED,
    profiles: Sequence[str] = ("file", "published"),
    quick: bool = False,
    features: Sequence[str] = DEFAULT_MODEL_FEATURES,
    policy: LabelPolicy | None = None,
    threads: int = 1,
    tails: bool = True,
) -> dict[str, Any]:
    """Train on the whole dataset and score fresh synthetic data through ONNX.

    The ``file`` profile follows the process as measured on the AI4I file. The
    ``published`` profile follows its published description, where the product mix
    differs and the two temperature walks are independent. A model that uses their
    chance correlation in the file loses there.

    Many machines of a few hundred processes each cover more of the temperature
    walks' range than one long run would: with 10 machines, two seeds gave 5
    heat-dissipation failures in 10,000 processes and 301 in 20,000.

    Returns:
        Per profile: the failure counts, the headline figures, per-class F1 and the
        rules oracles' figures on the same rows; and the threshold the model chose.
    """
    plan = training_plan(quick=quick, features=features, policy=policy, tails=tails)
    with openmp_threads(threads):
        heads = fit_heads(dataset, plan, seed=seed)
    model = convert_models(heads.failure, heads.failure_type, version=0)
    results: dict[str, Any] = {
        "decision_threshold": heads.decision_threshold,
        "trained_on": dataset.source.name,
        "features": list(plan.features),
        "profiles": {},
    }
    for name in profiles:
        fresh = synthetic_dataset(rows, machines=machines, seed=seed, profile=name)
        failure, types = run_onnx(model, fresh.features)
        scores = score_heads(heads, fresh, failure[:, 1], types)
        oracles = _oracle_figures(
            fresh,
            np.arange(rows),
            rule_oracle_scores(fresh),
            rule_oracle_types(fresh),
        )
        results["profiles"][name] = {
            "rows": rows,
            "machines": machines,
            "seed": seed,
            "failures": int(fresh.target.sum()),
            "failure_type_counts": fresh.fingerprint.failure_type_counts,
            "figures": headline(scores["failure"], scores["failure_type"]),
            "per_class_f1": scores["failure_type"]["per_class_f1"],
            "oracles": oracles,
        }
        logger.info(
            "fresh %s data, %d rows: F1 %.3f, PR-AUC %.3f, macro-F1 %.3f",
            name,
            rows,
            scores["failure"]["f1"],
            scores["failure"]["pr_auc"],
            scores["failure_type"]["macro_f1"],
        )
    return results


def synthetic_dataset(rows: int, *, machines: int, seed: int, profile: str) -> Dataset:
    """Draw ``rows`` processes from the synthetic generator as a labelled dataset.

    ``Target`` is 1 for every process that triggered a failure mode, random failures
    included. The failure type is the first mode in the AI4I file's precedence.
    """
    # Imported here: only this check needs the simulators package.
    from simulators.synthetic import PROFILES, simulate_processes

    if profile not in PROFILES:
        raise ValueError(
            f"profile {profile!r} is unknown; expected one of {', '.join(PROFILES)}"
        )
    processes = simulate_processes(
        rows,
        machines=machines,
        seed=seed,
        profile=PROFILES[profile],
        clock=lambda: "2026-01-01T00:00:00+00:00",
    )
    features = pd.DataFrame(
        {"product_type": [p.reading.product_type for p in processes]}
    )
    for name in MEASUREMENT_FIELDS:
        features[name] = np.array(
            [getattr(p.reading, name) for p in processes], dtype=np.float64
        )
    target = np.array([int(p.is_failure) for p in processes], dtype=np.int64)
    failure_type = np.array([_first_mode(p.failures) for p in processes], dtype=object)
    labels, counts = np.unique(failure_type, return_counts=True)
    fingerprint = DataFingerprint(
        sha256=hashlib.sha256(features.to_csv(index=False).encode()).hexdigest(),
        rows=rows,
        class_counts={str(k): int((target == k).sum()) for k in (0, 1)},
        failure_type_counts={
            str(k): int(n) for k, n in zip(labels, counts, strict=True)
        },
    )
    source = Path(f"synthetic-{profile}-seed{seed}-{rows}.csv")
    return Dataset(source, features, target, failure_type, fingerprint)


def _first_mode(failures: Sequence[str]) -> str:
    for mode in _TYPE_PRECEDENCE:
        if mode in failures:
            return mode
    return NO_FAILURE


def _run_fold(
    report: CrossValidationReport,
    dataset: Dataset,
    train_index: np.ndarray,
    test_index: np.ndarray,
    *,
    repeat: int,
    fold: int,
) -> FoldResult:
    test = subset(dataset, test_index)
    with openmp_threads(report.threads):
        heads = fit_heads(subset(dataset, train_index), report.plan, seed=report.seed)
        sklearn_failure = heads.failure.predict_proba(test.features)[:, 1]
        sklearn_types = heads.failure_type.predict_proba(test.features)
    model = convert_models(heads.failure, heads.failure_type, version=0)
    onnx_failure, onnx_types = run_onnx(model, test.features)
    onnx_failure = onnx_failure[:, 1]

    report.probability[repeat, test_index] = onnx_failure
    classes = np.asarray(heads.failure_type_classes, dtype=object)
    report.predicted_type[repeat, test_index] = classes[
        choose_failure_types(
            onnx_types,
            decide_failure(onnx_failure, heads.decision_threshold),
            heads.failure_type_classes,
        )
    ]
    onnx_scores = score_heads(heads, test, onnx_failure, onnx_types)
    sklearn_scores = score_heads(heads, test, sklearn_failure, sklearn_types)
    return FoldResult(
        repeat=repeat + 1,
        fold=fold + 1,
        test_rows=len(test_index),
        decision_threshold=heads.decision_threshold,
        medium_band=heads.medium_band,
        failure_params=heads.failure_selection.params,
        failure_type_params=heads.failure_type_selection.params,
        sklearn=headline(sklearn_scores["failure"], sklearn_scores["failure_type"]),
        onnx=headline(onnx_scores["failure"], onnx_scores["failure_type"]),
        oracles={},
        per_class_f1=onnx_scores["failure_type"]["per_class_f1"],
        parity=_parity(heads, sklearn_failure, sklearn_types, onnx_failure, onnx_types),
        artifact_bytes=len(model),
    )


def _parity(
    heads: FittedHeads,
    sklearn_failure: np.ndarray,
    sklearn_types: np.ndarray,
    onnx_failure: np.ndarray,
    onnx_types: np.ndarray,
) -> dict[str, float]:
    threshold = heads.decision_threshold
    flips = decide_failure(onnx_failure, threshold) != decide_failure(
        sklearn_failure, threshold
    )
    return {
        "failure": float(np.max(np.abs(onnx_failure - sklearn_failure))),
        "failure_type": float(np.max(np.abs(onnx_types - sklearn_types))),
        "label_flips": int(flips.sum()),
        "failure_type_flips": int(
            (onnx_types.argmax(axis=1) != sklearn_types.argmax(axis=1)).sum()
        ),
    }


def _oracle_figures(
    dataset: Dataset,
    test_index: np.ndarray,
    scores: dict[str, np.ndarray],
    types: dict[str, np.ndarray],
) -> dict[str, dict[str, float]]:
    test = subset(dataset, test_index)
    labels = sorted(set(test.failure_type))
    return {
        name: headline(
            failure_metrics(test.target, values[test_index], ORACLE_THRESHOLD),
            failure_type_metrics(test.failure_type, types[name][test_index], labels),
        )
        for name, values in scores.items()
    }


def _spread(figures: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    names = list(figures[0]) if figures else list(HEADLINE)
    spread = {}
    for name in names:
        values = np.array([figure[name] for figure in figures], dtype=np.float64)
        spread[name] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return spread
