"""Tests for training: the data loader, its rejections, the leakage guard, packaging."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from control_plane.data import (
    AI4I_COLUMNS,
    Dataset,
    DatasetError,
    LeakageError,
    check_features,
    load_training_data,
)
from control_plane.model_store import ModelStore, ModelStoreError
from control_plane.training import cli
from control_plane.training.model import TrainedModels, train_models
from control_plane.training.pipeline import train_and_package
from edge_agent.manifest import MANIFEST_FORMAT, ModelManifest, sha256_file
from edge_agent.reading import MEASUREMENT_FIELDS, MODEL_INPUT_FIELDS
from edge_agent.scorer import OnnxScorer

BOM = b"\xef\xbb\xbf"


def read_text_frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_load_training_data_reads_bom_file(ai4i_csv: Path) -> None:
    assert ai4i_csv.read_bytes().startswith(BOM)

    dataset = load_training_data(ai4i_csv)

    assert list(dataset.features.columns) == list(MODEL_INPUT_FIELDS)
    assert len(dataset.features) == 10_000
    for name in MEASUREMENT_FIELDS:
        assert dataset.features[name].dtype == np.float64
    assert dataset.features["air_temperature_k"].iloc[0] == 298.1
    assert dataset.features["product_type"].iloc[0] == "M"
    assert dataset.fingerprint.rows == 10_000
    assert dataset.fingerprint.class_counts == {"0": 9661, "1": 339}
    assert dataset.fingerprint.failure_type_counts["Random Failures"] == 18
    assert dataset.fingerprint.sha256 == sha256_file(ai4i_csv)


def test_load_training_data_reads_file_without_bom(
    ai4i_csv: Path, ai4i_dataset: Dataset, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_bytes(ai4i_csv.read_bytes().removeprefix(BOM))

    dataset = load_training_data(plain)

    pd.testing.assert_frame_equal(dataset.features, ai4i_dataset.features)
    assert np.array_equal(dataset.target, ai4i_dataset.target)
    assert dataset.fingerprint.sha256 != ai4i_dataset.fingerprint.sha256


def test_load_training_data_reads_snake_case_headers(
    ai4i_csv: Path, ai4i_dataset: Dataset, tmp_path: Path
) -> None:
    frame = read_text_frame(ai4i_csv).rename(columns=AI4I_COLUMNS)
    assert "torque_nm" in frame.columns

    dataset = load_training_data(write_frame(frame, tmp_path / "snake.csv"))

    pd.testing.assert_frame_equal(dataset.features, ai4i_dataset.features)
    assert np.array_equal(dataset.failure_type, ai4i_dataset.failure_type)


def _set(column: str, row: int, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row - 1, column] = value
        return frame

    return change


def _drop(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame.drop(columns=[column])


def _no_failures(frame: pd.DataFrame) -> pd.DataFrame:
    frame["Target"] = "0"
    return frame


def _rare_type(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[:2, "Failure Type"] = "Spindle Failure"
    return frame


def _duplicate_type(frame: pd.DataFrame) -> pd.DataFrame:
    frame["product_type"] = frame["Type"]
    return frame


BAD_DATASETS = {
    "missing column": (_drop("Torque [Nm]"), r"missing column\(s\) 'Torque \[Nm\]'"),
    "missing target": (_drop("Target"), r"missing column\(s\) 'Target' \(target\)"),
    "not a number": (
        _set("Air temperature [K]", 5, "hot"),
        r"row 5 \(line 6\), column 'Air temperature \[K\]': value 'hot' is not a "
        "number",
    ),
    "empty measurement": (
        _set("Torque [Nm]", 9, ""),
        r"row 9 .*'Torque \[Nm\]'.*empty",
    ),
    "infinite": (_set("Tool wear [min]", 3, "inf"), "not a finite number"),
    "nan": (_set("Tool wear [min]", 3, "NaN"), "not a finite number"),
    "celsius": (
        _set("Process temperature [K]", 2, "35.5"),
        r"looks like degrees Celsius.*308\.65 K",
    ),
    "out of range": (_set("Torque [Nm]", 4, "-5"), "outside the physical range"),
    "unknown product type": (
        _set("Type", 3, "X"),
        r"row 3 \(line 4\), column 'Type': value 'X' is not a product type",
    ),
    "bad target": (_set("Target", 7, "yes"), "row 7 .*'yes' is not a target label"),
    "empty failure type": (_set("Failure Type", 8, " "), "row 8 .*is empty"),
    "no failures": (_no_failures, "has no failures"),
    "rare failure type": (_rare_type, "'Spindle Failure' has 3 row"),
    "duplicate column": (_duplicate_type, "'Type' and 'product_type' both mean"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATASETS))
def test_load_training_data_rejects_bad_dataset(
    case: str, ai4i_csv: Path, tmp_path: Path
) -> None:
    change, message = BAD_DATASETS[case]
    path = write_frame(change(read_text_frame(ai4i_csv)), tmp_path / "bad.csv")

    with pytest.raises(DatasetError, match=message):
        load_training_data(path)


def test_load_training_data_names_first_bad_row(ai4i_csv: Path, tmp_path: Path) -> None:
    frame = read_text_frame(ai4i_csv)
    frame.loc[99, "Torque [Nm]"] = "x"
    frame.loc[41, "Rotational speed [rpm]"] = "fast"
    frame.loc[500, "Rotational speed [rpm]"] = "?"

    with pytest.raises(DatasetError, match=r"row 42 .*'fast'.*\(1 more row"):
        load_training_data(write_frame(frame, tmp_path / "bad.csv"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"UDI,Type\n", "no data rows"),
        (b"Type,Target\nL,\xff\n", "not UTF-8"),
    ],
)
def test_load_training_data_rejects_unreadable_file(
    content: bytes, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)

    with pytest.raises(DatasetError, match=message):
        load_training_data(path)


def test_load_training_data_rejects_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is a directory, expected a CSV file"):
        load_training_data(tmp_path)


def test_load_training_data_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_training_data(tmp_path / "absent.csv")


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
    "TWF",
    "HDF",
    "PWF",
    "OSF",
    "RNF",
    "twf",
    "rnf",
    "failure type",
    " Machine Failure ",
]


@pytest.mark.parametrize("column", FORBIDDEN)
def test_check_features_rejects_leaking_column(column: str) -> None:
    with pytest.raises(
        LeakageError, match=f"feature {column!r} .* never a model input"
    ):
        check_features([*MODEL_INPUT_FIELDS, column])


def test_check_features_rejects_unknown_and_missing() -> None:
    with pytest.raises(DatasetError, match=r"\['humidity'\] are not reading fields"):
        check_features([*MODEL_INPUT_FIELDS, "humidity"])
    with pytest.raises(DatasetError, match=r"\['torque_nm'\] are missing"):
        check_features([name for name in MODEL_INPUT_FIELDS if name != "torque_nm"])


def test_train_models_rejects_leaking_feature(ai4i_dataset: Dataset) -> None:
    with pytest.raises(LeakageError, match="'Target'"):
        train_models(ai4i_dataset, quick=True, features=[*MODEL_INPUT_FIELDS, "Target"])


def test_train_and_package_bad_data_writes_nothing(
    ai4i_csv: Path, tmp_path: Path
) -> None:
    path = write_frame(
        _set("Type", 10, "Q")(read_text_frame(ai4i_csv)), tmp_path / "bad.csv"
    )
    store = tmp_path / "store"

    with pytest.raises(DatasetError, match="'Q' is not a product type"):
        train_and_package(path, store, version=1, quick=True)
    assert not store.exists()


def test_train_and_package_rejects_existing_version(
    ai4i_csv: Path, model_store_root: Path
) -> None:
    before = sorted(model_store_root.iterdir())

    with pytest.raises(ModelStoreError, match="v1 already exists.*train as v2"):
        train_and_package(ai4i_csv, model_store_root, version=1, quick=True)
    assert sorted(model_store_root.iterdir()) == before


def test_trained_models_keep_features_out_of_targets(
    trained_models: TrainedModels,
) -> None:
    for pipeline in (trained_models.failure, trained_models.failure_type):
        assert list(pipeline.feature_names_in_) == list(MODEL_INPUT_FIELDS)


def test_model_dir_loads_in_scorer(model_dir: Path) -> None:
    scorer = OnnxScorer(model_dir)

    assert scorer.version == 1
    assert len(scorer.manifest.golden) >= 7
    assert scorer.manifest.failure_type_classes[0] == "Heat Dissipation Failure"


def test_manifest_records_training_facts(
    model_dir: Path, ai4i_csv: Path, trained_models: TrainedModels
) -> None:
    document = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest = ModelManifest.from_document(document)

    assert document["format"] == MANIFEST_FORMAT
    assert document["version"] == 1
    created = dt.datetime.fromisoformat(document["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    assert [field["name"] for field in document["inputs"]] == list(MODEL_INPUT_FIELDS)
    assert document["artifact"]["sha256"] == sha256_file(model_dir / "model.onnx")
    assert (
        document["artifact"]["size_bytes"] == (model_dir / "model.onnx").stat().st_size
    )
    assert document["training_data"]["sha256"] == sha256_file(ai4i_csv)
    assert document["training_data"]["class_counts"] == {"0": 9661, "1": 339}
    assert set(document["libraries"]) >= {"scikit-learn", "skl2onnx", "onnxruntime"}

    bands = [band.min_probability for band in manifest.risk_bands]
    assert [band.name for band in manifest.risk_bands] == ["low", "medium", "high"]
    assert bands[0] == 0.0 < bands[1] < bands[2] == manifest.decision_threshold
    assert manifest.decision_threshold == trained_models.decision_threshold

    metrics = document["metrics"]
    for key in ("f1", "precision", "recall", "pr_auc"):
        assert 0.0 <= metrics["failure"][key] <= 1.0
    assert metrics["failure"]["f1"] > 0.75
    assert metrics["failure_type"]["macro_f1"] > 0.5

    golden_types = {case["failure_type"] for case in document["golden"]}
    assert len(golden_types) == 6
    source = read_text_frame(ai4i_csv).rename(columns=AI4I_COLUMNS)
    for case in document["golden"]:
        row = source.iloc[case["training_row"] - 1]
        assert case["input"]["product_type"] == row["product_type"]
        for name in MEASUREMENT_FIELDS:
            assert case["input"][name] == float(row[name])


def test_training_cli_trains_and_scores(
    ai4i_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    shutil.copy(ai4i_csv, tmp_path / "upload.csv")

    status = cli.main(
        ["train", "--data", str(ai4i_csv), "--store", str(store), "--quick"]
    )
    trained = json.loads(capsys.readouterr().out)
    assert status == 0
    assert trained["version"] == 1
    assert ModelStore(store).versions() == [1]

    status = cli.main(
        [
            "score-batch",
            "--model",
            trained["directory"],
            "--input",
            str(tmp_path / "upload.csv"),
            "--output",
            str(tmp_path / "scored.csv"),
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert status == 0
    assert summary["rows"] == 10_000
    assert (tmp_path / "scored.csv").is_file()


def test_training_cli_reports_bad_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("Type,Target\nL,0\n", encoding="utf-8")

    status = cli.main(["train", "--data", str(path), "--store", str(tmp_path / "s")])

    assert status == 1
    assert "missing column(s)" in capsys.readouterr().err
