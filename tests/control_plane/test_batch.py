"""Tests for batch scoring of CSV uploads against OnnxScorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from control_plane.batch import OUTPUT_COLUMNS, score_csv, score_frame
from control_plane.data import AI4I_COLUMNS, DatasetError
from edge_agent.reading import MEASUREMENT_FIELDS
from edge_agent.scorer import OnnxScorer


@pytest.fixture(scope="module")
def scorer(model_dir: Path) -> OnnxScorer:
    return OnnxScorer(model_dir)


def read_text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)


def expected_scores(frame: pd.DataFrame, scorer: OnnxScorer) -> pd.DataFrame:
    """Score the rows one by one through OnnxScorer's own Prediction path."""
    contract = frame.rename(columns=AI4I_COLUMNS)
    arrays = scorer.score_columns(
        contract["product_type"].tolist(),
        contract[list(MEASUREMENT_FIELDS)].astype(np.float64).to_numpy(),
    )
    predictions = scorer.to_predictions(arrays)
    return pd.DataFrame(
        {
            "failure_probability": arrays.failure_probability,
            "failure_label": [p.failure_label for p in predictions],
            "risk_band": [p.risk_band for p in predictions],
            "failure_type": [p.failure_type for p in predictions],
        }
    )


def test_score_csv_matches_scorer(
    ai4i_csv: Path, scorer: OnnxScorer, tmp_path: Path
) -> None:
    destination = tmp_path / "scored.csv"

    summary = score_csv(ai4i_csv, destination, scorer, chunk_rows=3_000)

    source = read_text(ai4i_csv)
    scored = read_text(destination)
    expected = expected_scores(source, scorer)
    assert summary.rows == 10_000
    assert summary.model_version == 1
    assert list(scored.columns) == [*source.columns, *OUTPUT_COLUMNS]
    pd.testing.assert_frame_equal(scored[list(source.columns)], source)
    probability = scored["failure_probability"].astype(np.float32).to_numpy()
    assert np.array_equal(probability, expected["failure_probability"].to_numpy())
    labels = scored["failure_label"].astype(int)
    assert labels.tolist() == expected["failure_label"].tolist()
    assert scored["risk_band"].tolist() == expected["risk_band"].tolist()
    assert scored["failure_type"].tolist() == expected["failure_type"].tolist()
    assert summary.predicted_failures == int(labels.sum())
    assert sum(summary.risk_band_counts.values()) == 10_000
    assert set(summary.failure_type_counts) <= set(scorer.manifest.failure_type_classes)


def test_score_csv_accepts_contract_names(
    ai4i_csv: Path, scorer: OnnxScorer, tmp_path: Path
) -> None:
    source = read_text(ai4i_csv).head(50).rename(columns=AI4I_COLUMNS)
    source = source.drop(columns=["target", "failure_type", "udi"])
    source["line"] = "press-4"
    upload = tmp_path / "upload.csv"
    source.to_csv(upload, index=False)

    score_csv(upload, tmp_path / "scored.csv", scorer)

    scored = read_text(tmp_path / "scored.csv")
    assert scored["line"].eq("press-4").all()
    assert scored["product_id"].tolist() == source["product_id"].tolist()
    expected = expected_scores(source, scorer)
    assert scored["failure_type"].tolist() == expected["failure_type"].tolist()


def test_score_csv_bad_row_writes_nothing(
    ai4i_csv: Path, scorer: OnnxScorer, tmp_path: Path
) -> None:
    source = read_text(ai4i_csv)
    source.loc[7_499, "Torque [Nm]"] = "12,5"
    upload = tmp_path / "upload.csv"
    source.to_csv(upload, index=False)
    destination = tmp_path / "out" / "scored.csv"
    destination.parent.mkdir()

    with pytest.raises(
        DatasetError,
        match=r"row 7500 \(line 7501\), column 'Torque \[Nm\]': value '12,5' is not",
    ):
        score_csv(upload, destination, scorer, chunk_rows=3_000)
    assert list(destination.parent.iterdir()) == []


def test_score_csv_bad_upload_keeps_previous_output(
    scorer: OnnxScorer, tmp_path: Path
) -> None:
    upload = tmp_path / "upload.csv"
    upload.write_text(
        "Type,Air temperature [K],Process temperature [K],Rotational speed [rpm],"
        "Torque [Nm],Tool wear [min]\nL,298.1,308.6,1551,42.8,0\nZ,1,2,3,4,5\n",
        encoding="utf-8",
    )
    destination = tmp_path / "scored.csv"
    destination.write_text("previous result\n", encoding="utf-8")

    with pytest.raises(DatasetError, match="row 2 .*'Z' is not a product type"):
        score_csv(upload, destination, scorer)
    assert destination.read_text(encoding="utf-8") == "previous result\n"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == [
        "scored.csv",
        "upload.csv",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Type,Torque [Nm]\nL,40\n", r"missing column\(s\) 'Air temperature \[K\]'"),
        ("", "is empty"),
        (
            "product_type,air_temperature_k,process_temperature_k,"
            "rotational_speed_rpm,torque_nm,tool_wear_min\n",
            "no data rows",
        ),
        (
            "product_type,air_temperature_k,process_temperature_k,"
            "rotational_speed_rpm,torque_nm,tool_wear_min,risk_band\n"
            "L,298.1,308.6,1551,42.8,0,low\n",
            r"columns \['risk_band'\] already exist",
        ),
    ],
)
def test_score_csv_rejects_bad_upload(
    content: str, message: str, scorer: OnnxScorer, tmp_path: Path
) -> None:
    upload = tmp_path / "upload.csv"
    upload.write_text(content, encoding="utf-8")

    with pytest.raises(DatasetError, match=message):
        score_csv(upload, tmp_path / "scored.csv", scorer)
    assert not (tmp_path / "scored.csv").exists()


def test_score_frame_accepts_numeric_columns(scorer: OnnxScorer) -> None:
    frame = pd.DataFrame(
        {
            "product_type": ["L", "H"],
            "air_temperature_k": [298.1, 302.3],
            "process_temperature_k": [308.6, 310.9],
            "rotational_speed_rpm": [1551, 1300],
            "torque_nm": [42.8, 68.0],
            "tool_wear_min": [0, 210],
        }
    )

    scored = score_frame(frame, scorer)

    expected = expected_scores(frame, scorer)
    assert list(scored.columns) == [*frame.columns, *OUTPUT_COLUMNS]
    assert np.array_equal(
        scored["failure_probability"].to_numpy(),
        expected["failure_probability"].to_numpy(),
    )
    assert scored["risk_band"].tolist() == expected["risk_band"].tolist()


def test_score_frame_rejects_missing_value(scorer: OnnxScorer) -> None:
    frame = pd.DataFrame(
        {
            "product_type": ["L"],
            "air_temperature_k": [float("nan")],
            "process_temperature_k": [308.6],
            "rotational_speed_rpm": [1551],
            "torque_nm": [42.8],
            "tool_wear_min": [0],
        }
    )

    with pytest.raises(
        DatasetError, match="row 1 .*'air_temperature_k'.*is empty or missing"
    ):
        score_frame(frame, scorer)


def test_score_frame_accepts_empty_frame(scorer: OnnxScorer) -> None:
    frame = pd.DataFrame({name: [] for name in ("product_type", *MEASUREMENT_FIELDS)})

    scored = score_frame(frame, scorer)

    assert len(scored) == 0
    assert list(scored.columns) == [*frame.columns, *OUTPUT_COLUMNS]
