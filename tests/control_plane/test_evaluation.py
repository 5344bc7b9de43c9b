"""Tests for the evaluation: quick nested cross-validation on the real file, the
fresh-data check, the command, the leakage guards and the leakage flags."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from control_plane.data import Dataset, LeakageError
from control_plane.training import cli
from control_plane.training.evaluation import cross_validate, synthetic_dataset
from control_plane.training.features import check_model_features
from control_plane.training.metrics import (
    HEADLINE,
    LEAKAGE_LIMITS,
    flag_suspected_leakage,
    recall_at_precision,
)
from control_plane.training.model import (
    THRESHOLD_GRID,
    TrainedModels,
    choose_medium_band,
    score_heads,
    subset,
)

# Lower bounds for the quick plan (3 outer folds x 1 repeat, 100 trees, one
# candidate), somewhat below the goals of the full 5 x 3 evaluation. Measured on
# the shipped file: 0.900, 0.916, 0.859 and 0.664.
QUICK_BOUNDS = {
    "failure_f1": 0.885,
    "failure_pr_auc": 0.90,
    "recall_at_precision_90": 0.835,
    "failure_type_macro_f1": 0.645,
}

# Every spelling of every column that must never be a feature.
FORBIDDEN = [
    "UDI",
    "udi",
    "Product ID",
    "product_id",
    "Target",
    "target",
    "Failure Type",
    "failure_type",
    "Machine failure",
    "machine_failure",
    "TWF",
    "HDF",
    "PWF",
    "OSF",
    "RNF",
    "twf",
    "hdf",
    "pwf",
    "osf",
    "rnf",
]


@pytest.fixture(scope="module")
def quick_evaluation(
    ai4i_csv: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], str]:
    """The evaluate command's JSON report and printed text, quick plan."""
    path = tmp_path_factory.mktemp("evaluation") / "report.json"
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = cli.main(
            [
                "evaluate",
                "--data",
                str(ai4i_csv),
                "--quick",
                "--fresh-rows",
                "5000",
                "--json",
                str(path),
            ]
        )
    assert status == 0
    return json.loads(path.read_text(encoding="utf-8")), output.getvalue()


def test_evaluate_quick_reaches_lower_bounds(
    quick_evaluation: tuple[dict[str, Any], str],
) -> None:
    report, _ = quick_evaluation

    assert report["folds"] == 3
    assert report["repeats"] == 1
    assert len(report["fold_results"]) == 3
    for name, bound in QUICK_BOUNDS.items():
        assert report["onnx"][name]["mean"] >= bound, name
    assert report["suspected_leakage"] == []


def test_evaluate_onnx_matches_sklearn_per_fold(
    quick_evaluation: tuple[dict[str, Any], str],
) -> None:
    report, _ = quick_evaluation

    for fold in report["fold_results"]:
        assert fold["parity"]["failure"] <= 1e-4
        assert fold["parity"]["failure_type"] <= 1e-4
        assert fold["parity"]["label_flips"] == 0
        for name in HEADLINE:
            assert fold["onnx"][name] == pytest.approx(fold["sklearn"][name], abs=1e-5)
        assert fold["decision_threshold"] in THRESHOLD_GRID
        assert 0.0 < fold["medium_band"] < fold["decision_threshold"]


def test_evaluate_reports_curves_and_oracles(
    quick_evaluation: tuple[dict[str, Any], str],
) -> None:
    report, text = quick_evaluation
    pooled = report["pooled_onnx"]

    assert len(pooled["precision_recall_curve"]) == 99
    assert sum(cell["rows"] for cell in pooled["reliability_curve"]) == 10_000
    assert np.sum(pooled["failure_type"]["confusion_matrix"]["matrix"]) == 10_000
    # The rules oracle on the same folds reproduces the published ceiling.
    assert report["oracles"]["float64"]["failure_f1"]["mean"] == pytest.approx(
        0.917, abs=0.005
    )
    for heading in ("ceiling", "ONNX", "Precision-recall curve", "Brier score"):
        assert heading in text
    assert "Suspected leakage: none" in text


def test_evaluate_fresh_data_close_to_cross_validation(
    quick_evaluation: tuple[dict[str, Any], str],
) -> None:
    report, text = quick_evaluation
    fresh = report["fresh_data"]["profiles"]

    assert set(fresh) == {"file", "published"}
    for profile in fresh.values():
        assert profile["rows"] == 5000
        figures, oracle = profile["figures"], profile["oracles"]["float64"]
        # Within a few points of what the rules allow on the same rows, as in
        # cross-validation.
        assert figures["failure_f1"] >= oracle["failure_f1"] - 0.08
        assert figures["failure_pr_auc"] >= oracle["failure_pr_auc"] - 0.08
    assert "published data" in text


@pytest.mark.parametrize("column", FORBIDDEN)
def test_check_model_features_rejects_leaking_column(column: str) -> None:
    with pytest.raises(LeakageError, match=f"feature {column!r} .* never a model"):
        check_model_features(["product_type", "torque_nm", column])


@pytest.mark.parametrize("column", ["Target", "UDI", "Product ID", "HDF"])
def test_cross_validate_rejects_leaking_feature(
    ai4i_dataset: Dataset, column: str
) -> None:
    with pytest.raises(LeakageError, match=f"{column!r}"):
        cross_validate(ai4i_dataset, quick=True, features=["torque_nm", column])


@pytest.mark.parametrize("command", ["evaluate", "train"])
@pytest.mark.parametrize("column", ["Failure Type", "udi", "OSF"])
def test_cli_rejects_leaking_feature(
    command: str,
    column: str,
    ai4i_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [command, "--data", str(ai4i_csv), "--features", f"torque_nm,{column}"]
    if command == "train":
        argv += ["--store", str(tmp_path / "store")]

    status = cli.main(argv)

    error = capsys.readouterr().err
    assert status == 1
    assert f"feature {column!r} is an identifier or an outcome column" in error
    assert not (tmp_path / "store").exists()


def test_flag_suspected_leakage_names_high_figures() -> None:
    honest = {"failure_f1": 0.89, "failure_type_macro_f1": 0.65}
    leaking = {"failure_f1": 0.99, "failure_type_macro_f1": 0.95}

    assert flag_suspected_leakage(honest) == []
    flags = flag_suspected_leakage(leaking)
    assert len(flags) == 2
    assert flags[0].startswith("failure F1 0.990 is above 0.93")
    assert "suspect leakage" in flags[1]
    assert set(LEAKAGE_LIMITS) == set(HEADLINE)


def test_recall_at_precision_reads_curve() -> None:
    target = np.array([1, 1, 0, 1, 0, 0, 0, 1])
    probability = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])

    # Ranked: 1 1 0 1 ... the best cut with precision >= 0.9 keeps the top two.
    assert recall_at_precision(target, probability) == 0.5
    assert recall_at_precision(target, probability, min_precision=0.7) == 0.75


def test_choose_medium_band_meets_failure_rate() -> None:
    probability = np.array([0.01] * 100 + [0.2] * 10 + [0.6] * 5)
    target = np.array([0] * 99 + [1] + [1] * 2 + [0] * 8 + [1] * 5)

    # [0.2, 0.5) fails at 20 %; adding the 100 rows at 0.01 gives 3 in 110.
    assert choose_medium_band(target, probability, threshold=0.5) == 0.02
    assert choose_medium_band(np.zeros(115, int), probability, threshold=0.5) == 0.49


def test_synthetic_dataset_labels_processes() -> None:
    dataset = synthetic_dataset(3000, machines=30, seed=5, profile="published")

    counts = dataset.fingerprint.failure_type_counts
    assert len(dataset.target) == 3000
    assert dataset.fingerprint.class_counts["1"] == int(dataset.target.sum())
    assert sum(counts.values()) == 3000
    failed_types = set(dataset.failure_type[dataset.target == 1])
    assert "No Failure" not in failed_types
    assert set(dataset.failure_type[dataset.target == 0]) == {"No Failure"}
    with pytest.raises(ValueError, match="profile 'other' is unknown"):
        synthetic_dataset(10, machines=1, seed=5, profile="other")


def test_score_heads_names_mode_of_alerts(
    trained_models: TrainedModels, ai4i_dataset: Dataset
) -> None:
    power = int(np.flatnonzero(ai4i_dataset.failure_type == "Power Failure")[0])
    quiet = int(np.flatnonzero(ai4i_dataset.failure_type == "No Failure")[0])
    test = subset(ai4i_dataset, np.array([power, quiet]))
    classes = list(trained_models.failure_type_classes)
    # The type head ranks "No Failure" first on both rows; only the first row
    # raises an alert.
    types = np.zeros((2, len(classes)))
    types[:, classes.index("No Failure")] = 0.6
    types[:, classes.index("Power Failure")] = 0.4
    threshold = trained_models.decision_threshold
    probability = np.array([min(threshold + 0.2, 1.0), threshold / 2])

    scores = score_heads(trained_models, test, probability, types)

    per_class = scores["failure_type"]["per_class"]
    assert per_class["Power Failure"]["recall"] == 1.0
    assert per_class["Power Failure"]["precision"] == 1.0
    assert per_class["No Failure"]["f1"] == 1.0
