"""Fitting and honest evaluation of the failure and failure-type models.

``fit_heads`` is the whole training procedure on one training set: every choice
(hyperparameters, the decision threshold, the medium risk band) is made by
cross-validation inside that set. ``train_models`` holds out a seeded, stratified
test set, runs ``fit_heads`` on the rest and scores the test set once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, f1_score
from sklearn.model_selection import (
    StratifiedKFold,
    cross_val_predict,
    train_test_split,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from control_plane.data import Dataset
from control_plane.training.features import (
    DEFAULT_MODEL_FEATURES,
    PhysicalFeatures,
    check_model_features,
)
from control_plane.training.labels import LabelPolicy, type_labels
from control_plane.training.metrics import failure_metrics, failure_type_metrics
from edge_agent.reading import MEASUREMENT_FIELDS, PRODUCT_TYPES
from edge_agent.scorer import choose_failure_types, decide_failure

logger = logging.getLogger(__name__)

SEED = 20_200_101
TEST_SIZE = 0.2

# Candidate thresholds: a 0.01 grid keeps the chosen value readable and away from
# the exact probabilities of single training rows.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)

# The medium band starts at the lowest 0.01 step below the threshold at which the
# out-of-fold readings between it and the threshold failed at this rate or more:
# about three times the AI4I base rate of 3.4 %.
MEDIUM_BAND_FAILURE_RATE = 0.10
MEDIUM_BAND_FLOOR = 0.01

# Boosted trees are fitted on unscaled float64 inputs, and the ONNX graph computes the
# features and compares the splits in float64 too, so both engines take one branch.
# Without class weights the log-loss fit keeps the probabilities calibrated, which
# the risk bands rely on. A leaf needs 20 rows: the smallest rule region of AI4I
# (power below 3500 W) has about 25 rows in a training part.
_BASE_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "early_stopping": False,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 20,
}
FULL_CANDIDATES: tuple[dict[str, Any], ...] = tuple(
    {"max_iter": 200, "l2_regularization": l2} for l2 in (1.0, 10.0)
)
QUICK_CANDIDATES: tuple[dict[str, Any], ...] = (
    {"max_iter": 100, "l2_regularization": 10.0},
)
FULL_FOLDS = 5
QUICK_FOLDS = 3


@dataclass(frozen=True)
class HeadSelection:
    """The hyperparameters chosen for one head and the cross-validation scores."""

    params: dict[str, Any]
    cv_score: float | None
    cv_scores: list[dict[str, Any]]
    metric: str


@dataclass(frozen=True)
class TrainingPlan:
    """The candidates, folds, features and label policy of a training run.

    Attributes:
        failure_candidates: hyperparameters tried for the failure head.
        failure_type_candidates: hyperparameters tried for the failure-type head.
        folds: inner cross-validation folds for every choice.
        features: the trees' inputs (``MODEL_FEATURES`` names).
        policy: the labels each head trains on.
        tails: whether the wide quantities get tail copies (see ``TAIL_FEATURES``).
    """

    failure_candidates: tuple[dict[str, Any], ...]
    failure_type_candidates: tuple[dict[str, Any], ...]
    folds: int
    features: tuple[str, ...]
    policy: LabelPolicy = field(default_factory=LabelPolicy)
    tails: bool = True


@dataclass(frozen=True)
class FittedHeads:
    """Both fitted pipelines and the choices made for them inside the training set.

    Attributes:
        out_of_fold: failure probabilities (float32) of the chosen candidate for the
            training rows, each from a model that did not see the row.
    """

    failure: Pipeline
    failure_type: Pipeline
    failure_type_classes: tuple[str, ...]
    decision_threshold: float
    medium_band: float
    failure_selection: HeadSelection
    failure_type_selection: HeadSelection
    out_of_fold: np.ndarray
    out_of_fold_f1: float
    folds: int


@dataclass(frozen=True)
class TrainedModels:
    """The final pipelines and everything the manifest reports about them.

    Attributes:
        test_index: rows of the dataset held out from training and scored once.
    """

    failure: Pipeline
    failure_type: Pipeline
    failure_type_classes: tuple[str, ...]
    decision_threshold: float
    medium_band: float
    failure_selection: HeadSelection
    failure_type_selection: HeadSelection
    metrics: dict[str, Any]
    folds: int
    seed: int
    features: tuple[str, ...] = DEFAULT_MODEL_FEATURES
    policy: LabelPolicy = field(default_factory=LabelPolicy)
    test_index: np.ndarray | None = None


def training_plan(
    *,
    quick: bool = False,
    features: Sequence[str] = DEFAULT_MODEL_FEATURES,
    policy: LabelPolicy | None = None,
    tails: bool = True,
) -> TrainingPlan:
    """Return the full or quick plan for the given tree inputs.

    Raises:
        LeakageError: a feature is an identifier or an outcome column.
        DatasetError: a feature is unknown.
    """
    candidates = QUICK_CANDIDATES if quick else FULL_CANDIDATES
    return TrainingPlan(
        failure_candidates=candidates,
        failure_type_candidates=candidates,
        folds=QUICK_FOLDS if quick else FULL_FOLDS,
        features=check_model_features(features),
        policy=policy or LabelPolicy(),
        tails=tails,
    )


def build_pipeline(
    params: dict[str, Any],
    *,
    seed: int,
    features: Sequence[str] = DEFAULT_MODEL_FEATURES,
    tails: bool = True,
) -> Pipeline:
    """Build the feature steps and a HistGradientBoosting classifier.

    The pipeline takes all six reading fields, as the graph does, and feeds the trees
    the selected features: product type one-hot encoded, the physical quantities
    unscaled in float64, and their tail copies.
    """
    selected = check_model_features(features)
    transformers: list[tuple[str, Any, list[str]]] = []
    if "product_type" in selected:
        transformers.append(
            (
                "product_type",
                OneHotEncoder(categories=[list(PRODUCT_TYPES)], sparse_output=False),
                ["product_type"],
            )
        )
    physical = tuple(name for name in selected if name != "product_type")
    if physical:
        transformers.append(
            (
                "physical",
                PhysicalFeatures(features=physical, tails=tails),
                list(MEASUREMENT_FIELDS),
            )
        )
    classifier = HistGradientBoostingClassifier(
        **{**_BASE_PARAMS, **params}, random_state=seed
    )
    return Pipeline(
        [("features", ColumnTransformer(transformers)), ("classifier", classifier)]
    )


def train_models(
    dataset: Dataset,
    *,
    quick: bool = False,
    seed: int = SEED,
    features: Sequence[str] = DEFAULT_MODEL_FEATURES,
    threads: int = 1,
    policy: LabelPolicy | None = None,
) -> TrainedModels:
    """Hold out a test set, fit both heads on the rest and score the test set.

    Args:
        dataset: validated training data.
        quick: one candidate, fewer folds and trees; for tests and demos.
        seed: seeds the split, the folds and the estimators.
        features: the trees' inputs, from ``MODEL_FEATURES``.
        threads: OpenMP threads for HistGradientBoosting.
        policy: the labels each head trains on (default ``LabelPolicy()``).

    Raises:
        LeakageError: a feature is an identifier or an outcome column.
        DatasetError: a feature is unknown.
    """
    plan = training_plan(quick=quick, features=features, policy=policy)
    train_index, test_index = train_test_split(
        np.arange(len(dataset.target)),
        test_size=TEST_SIZE,
        stratify=dataset.failure_type,
        random_state=seed,
    )
    with openmp_threads(threads):
        heads = fit_heads(subset(dataset, train_index), plan, seed=seed)
        test = subset(dataset, test_index)
        probability = heads.failure.predict_proba(test.features)[:, 1]
        types = heads.failure_type.predict_proba(test.features)

    metrics = score_heads(heads, test, probability, types)
    metrics["cross_validation"] = {
        "folds": plan.folds,
        "failure_f1_at_threshold": heads.out_of_fold_f1,
        "failure_average_precision": heads.failure_selection.cv_score,
        "failure_type_macro_f1": heads.failure_type_selection.cv_score,
    }
    metrics["split"] = {
        "train_rows": len(train_index),
        "test_rows": len(test_index),
        "stratified_by": "failure_type",
        "seed": seed,
    }
    logger.info(
        "trained: test F1 %.3f, macro-F1 %.3f, threshold %.2f",
        metrics["failure"]["f1"],
        metrics["failure_type"]["macro_f1"],
        heads.decision_threshold,
    )
    return TrainedModels(
        failure=heads.failure,
        failure_type=heads.failure_type,
        failure_type_classes=heads.failure_type_classes,
        decision_threshold=heads.decision_threshold,
        medium_band=heads.medium_band,
        failure_selection=heads.failure_selection,
        failure_type_selection=heads.failure_type_selection,
        metrics=metrics,
        folds=plan.folds,
        seed=seed,
        features=plan.features,
        policy=plan.policy,
        test_index=np.sort(test_index),
    )


def fit_heads(dataset: Dataset, plan: TrainingPlan, *, seed: int) -> FittedHeads:
    """Choose and fit both heads using only ``dataset``.

    Inner folds are stratified by the recorded failure type, so every fold has each
    failure mode. The failure head's candidates are compared by average precision of
    their out-of-fold probabilities, and the threshold and the medium band are read
    off the winner's out-of-fold probabilities. The failure-type head is compared by
    macro-F1 against the recorded types, unless there is only one candidate.
    """
    x = dataset.features
    splits = list(
        StratifiedKFold(plan.folds, shuffle=True, random_state=seed).split(
            x, dataset.failure_type
        )
    )
    failure_selection, out_of_fold = _select_failure_head(dataset, splits, plan, seed)
    threshold, out_of_fold_f1 = choose_threshold(dataset.target, out_of_fold)
    medium = choose_medium_band(dataset.target, out_of_fold, threshold)

    labels = type_labels(dataset, plan.policy)
    typed = subset(dataset, np.flatnonzero(labels.mask))
    training_types = labels.labels[labels.mask]
    type_selection = _select_type_head(typed, training_types, plan, seed)

    failure = build_pipeline(
        failure_selection.params, seed=seed, features=plan.features, tails=plan.tails
    ).fit(x, dataset.target)
    failure_type = build_pipeline(
        type_selection.params, seed=seed, features=plan.features, tails=plan.tails
    ).fit(typed.features, training_types)
    return FittedHeads(
        failure=failure,
        failure_type=failure_type,
        failure_type_classes=tuple(str(label) for label in failure_type.classes_),
        decision_threshold=threshold,
        medium_band=medium,
        failure_selection=failure_selection,
        failure_type_selection=type_selection,
        out_of_fold=out_of_fold,
        out_of_fold_f1=out_of_fold_f1,
        folds=plan.folds,
    )


def score_heads(
    heads: FittedHeads | TrainedModels,
    test: Dataset,
    probability: np.ndarray,
    type_probabilities: np.ndarray,
) -> dict[str, Any]:
    """Score both heads' outputs on a test set against its recorded labels.

    Failure types are scored as the edge agent reports them: where the failure head
    raises an alert, the most likely failure mode (see ``choose_failure_types``).
    """
    classes = np.asarray(heads.failure_type_classes, dtype=object)
    failure_label = decide_failure(np.asarray(probability), heads.decision_threshold)
    predicted = classes[
        choose_failure_types(
            np.asarray(type_probabilities), failure_label, heads.failure_type_classes
        )
    ]
    labels = sorted(set(test.failure_type) | set(heads.failure_type_classes))
    failure_type = failure_type_metrics(test.failure_type, predicted, labels)
    failure_type["per_class_f1"] = {
        label: scores["f1"] for label, scores in failure_type["per_class"].items()
    }
    return {
        "failure": failure_metrics(
            test.target, np.asarray(probability, np.float32), heads.decision_threshold
        ),
        "failure_type": failure_type,
    }


def subset(dataset: Dataset, index: np.ndarray) -> Dataset:
    """Return the rows ``index`` of a dataset, renumbered from 0; same fingerprint."""
    return dataclasses.replace(
        dataset,
        features=dataset.features.iloc[index].reset_index(drop=True),
        target=dataset.target[index],
        failure_type=dataset.failure_type[index],
        udi=None if dataset.udi is None else dataset.udi[index],
    )


def openmp_threads(threads: int) -> threadpool_limits:
    """Limit OpenMP threads (HistGradientBoosting fit and predict) in a with block.

    One thread is the default because OpenMP threads that wait on a busy core spin.
    On a 2-core machine whose cores other processes were using, quick training took
    6 s with one thread and 100 s with two (set with ``OMP_NUM_THREADS``).
    """
    return threadpool_limits(limits=threads, user_api="openmp")


def choose_threshold(
    target: np.ndarray, probability: np.ndarray
) -> tuple[float, float]:
    """Return the grid threshold with the highest F1, and that F1."""
    scores = [
        f1_score(target, decide_failure(probability, float(t)), zero_division=0.0)
        for t in THRESHOLD_GRID
    ]
    best = int(np.argmax(scores))
    return float(THRESHOLD_GRID[best]), float(scores[best])


def choose_medium_band(
    target: np.ndarray, probability: np.ndarray, threshold: float
) -> float:
    """Return the lowest 0.01 step whose band up to the threshold fails often enough.

    The band [bound, threshold) must have failed at ``MEDIUM_BAND_FAILURE_RATE`` or
    more. When no band does, medium is the last 0.01 step below the threshold.
    """
    values = np.asarray(probability, dtype=np.float32)
    below = values < np.float32(threshold)
    cuts = np.round(np.arange(MEDIUM_BAND_FLOOR, threshold - 0.005, 0.01), 2)
    chosen = None
    for cut in cuts:
        band = below & (values >= np.float32(cut))
        if band.any() and float(np.mean(target[band])) >= MEDIUM_BAND_FAILURE_RATE:
            chosen = float(cut)
            break
    if chosen is None:
        chosen = float(cuts[-1]) if len(cuts) else MEDIUM_BAND_FLOOR
    return chosen


def _select_failure_head(
    dataset: Dataset,
    splits: list[tuple[np.ndarray, np.ndarray]],
    plan: TrainingPlan,
    seed: int,
) -> tuple[HeadSelection, np.ndarray]:
    # The tail bounds and bins are computed by each fit from its own training folds,
    # so the held-out fold never shapes them.
    best: tuple[float, dict[str, Any], np.ndarray] | None = None
    scores = []
    for params in plan.failure_candidates:
        pipeline = build_pipeline(
            params, seed=seed, features=plan.features, tails=plan.tails
        )
        oof = cross_val_predict(
            pipeline,
            dataset.features,
            dataset.target,
            cv=splits,
            method="predict_proba",
        )[:, 1].astype(np.float32)
        score = float(average_precision_score(dataset.target, oof))
        scores.append({"params": params, "average_precision": score})
        if best is None or score > best[0]:
            best = (score, params, oof)
    assert best is not None
    selection = HeadSelection(best[1], best[0], scores, "average_precision")
    return selection, best[2]


def _select_type_head(
    typed: Dataset, training_types: np.ndarray, plan: TrainingPlan, seed: int
) -> HeadSelection:
    candidates = plan.failure_type_candidates
    if len(candidates) == 1:
        return HeadSelection(dict(candidates[0]), None, [], "macro_f1")
    splits = list(
        StratifiedKFold(plan.folds, shuffle=True, random_state=seed).split(
            typed.features, typed.failure_type
        )
    )
    labels = sorted(set(typed.failure_type))
    best: tuple[float, dict[str, Any]] | None = None
    scores = []
    for params in candidates:
        pipeline = build_pipeline(
            params, seed=seed, features=plan.features, tails=plan.tails
        )
        oof = cross_val_predict(pipeline, typed.features, training_types, cv=splits)
        score = float(
            f1_score(
                typed.failure_type,
                oof,
                labels=labels,
                average="macro",
                zero_division=0.0,
            )
        )
        scores.append({"params": params, "macro_f1": score})
        if best is None or score > best[0]:
            best = (score, params)
    assert best is not None
    return HeadSelection(best[1], best[0], scores, "macro_f1")
