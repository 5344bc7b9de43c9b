"""OnnxScorer on the session's trained model: outputs, decision rule, failure type."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from onnx import TensorProto, helper

from edge_agent.manifest import ManifestError
from edge_agent.reading import MEASUREMENT_FIELDS, Reading
from edge_agent.scorer import NO_FAILURE_CLASS, OnnxScorer, decide_failure
from tests.conftest import AI4I_CSV

AI4I_COLUMNS = {
    "Type": "product_type",
    "Air temperature [K]": "air_temperature_k",
    "Process temperature [K]": "process_temperature_k",
    "Rotational speed [rpm]": "rotational_speed_rpm",
    "Torque [Nm]": "torque_nm",
    "Tool wear [min]": "tool_wear_min",
}


@pytest.fixture(scope="module")
def ai4i_frame() -> pd.DataFrame:
    frame = pd.read_csv(AI4I_CSV, encoding="utf-8-sig")
    return frame.rename(columns=AI4I_COLUMNS)


def score_frame(scorer: OnnxScorer, frame: pd.DataFrame):  # type: ignore[no-untyped-def]
    return scorer.score_columns(
        frame["product_type"].tolist(),
        frame[list(MEASUREMENT_FIELDS)].to_numpy(dtype=np.float64),
    )


def test_scorer_labels_follow_threshold(
    model_dir: Path, ai4i_frame: pd.DataFrame
) -> None:
    scorer = OnnxScorer(model_dir)

    arrays = score_frame(scorer, ai4i_frame)

    expected = decide_failure(
        arrays.failure_probability, scorer.manifest.decision_threshold
    )
    assert arrays.failure_label.sum() > 100
    assert np.array_equal(arrays.failure_label, expected)


def test_scorer_failure_names_a_failure_type(
    model_dir: Path, ai4i_frame: pd.DataFrame
) -> None:
    scorer = OnnxScorer(model_dir)
    classes = np.asarray(scorer.manifest.failure_type_classes, dtype=object)

    arrays = score_frame(scorer, ai4i_frame)

    failures = arrays.failure_label == 1
    assert failures.any()
    assert not (classes[arrays.failure_type_index[failures]] == NO_FAILURE_CLASS).any()
    # Rows below the threshold keep the type head's own top class.
    quiet = ~failures
    top = arrays.failure_type_probabilities[quiet].argmax(axis=1)
    assert np.array_equal(arrays.failure_type_index[quiet], top)


def test_scorer_single_reading_matches_batch(
    model_dir: Path, ai4i_frame: pd.DataFrame
) -> None:
    scorer = OnnxScorer(model_dir)
    rows = ai4i_frame.head(50)
    readings = [
        Reading(
            "plant-a",
            "m-001",
            "2026-12-04T15:00:00+00:00",
            index,
            row.product_type,
            *(float(getattr(row, name)) for name in MEASUREMENT_FIELDS),
        )
        for index, row in enumerate(rows.itertuples())
    ]

    single = [scorer.score([reading])[0] for reading in readings]
    batch = scorer.score(readings)

    assert single == batch
    assert all(p.model_version == scorer.version for p in batch)


def copy_with_manifest(model_dir: Path, tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    version = tmp_path / model_dir.name
    shutil.copytree(model_dir, version)
    document = json.loads((version / "manifest.json").read_text())
    edit(document)
    (version / "manifest.json").write_text(json.dumps(document))
    return version


def test_scorer_rejects_golden_of_other_class_count(
    model_dir: Path, tmp_path: Path
) -> None:
    def drop_a_class(document: dict) -> None:  # type: ignore[type-arg]
        for case in document["golden"]:
            case["failure_type_probabilities"] = case["failure_type_probabilities"][1:]

    version = copy_with_manifest(model_dir, tmp_path, drop_a_class)

    with pytest.raises(ManifestError, match="does not match its model"):
        OnnxScorer(version)


def test_scorer_rejects_malformed_golden(model_dir: Path, tmp_path: Path) -> None:
    def drop_inputs(document: dict) -> None:  # type: ignore[type-arg]
        del document["golden"][0]["input"]["torque_nm"]

    version = copy_with_manifest(model_dir, tmp_path, drop_inputs)

    with pytest.raises(ManifestError, match="golden vectors are malformed"):
        OnnxScorer(version)


def float32_input_version(model_dir: Path, destination: Path) -> Path:
    """Copy a version with a graph that takes float32 measurements, as versions
    converted before the graph computed in float64 do, and cast them inside."""
    shutil.copytree(model_dir, destination)

    graph = onnx.load(destination / "model.onnx")
    casts = []
    for value in graph.graph.input:
        if value.name not in MEASUREMENT_FIELDS:
            continue
        value.type.tensor_type.elem_type = TensorProto.FLOAT
        for node in graph.graph.node:
            for position, name in enumerate(node.input):
                if name == value.name:
                    node.input[position] = f"{value.name}_float64"
        casts.append(
            helper.make_node(
                "Cast", [value.name], [f"{value.name}_float64"], to=TensorProto.DOUBLE
            )
        )
    nodes = [*casts, *graph.graph.node]
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)

    artifact = graph.SerializeToString()
    (destination / "model.onnx").write_bytes(artifact)
    manifest_path = destination / "manifest.json"
    document = json.loads(manifest_path.read_text(encoding="utf-8"))
    document["artifact"]["sha256"] = hashlib.sha256(artifact).hexdigest()
    document["artifact"]["size_bytes"] = len(artifact)

    # Such a version's golden vectors were computed from float32 inputs.
    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    for case in document["golden"]:
        feeds = {"product_type": np.array([[case["input"]["product_type"]]])}
        for name in MEASUREMENT_FIELDS:
            feeds[name] = np.array([[case["input"][name]]], dtype=np.float32)
        failure, types = session.run(
            [
                document["outputs"]["failure_probability"]["name"],
                document["outputs"]["failure_type_probability"]["name"],
            ],
            feeds,
        )
        case["failure_probability"] = float(failure[0, 1])
        case["failure_type_probabilities"] = [float(p) for p in types[0]]
    manifest_path.write_text(json.dumps(document), encoding="utf-8")
    return destination


def test_scorer_feeds_float32_graph(model_dir: Path, tmp_path: Path) -> None:
    version = float32_input_version(model_dir, tmp_path / "v1")
    current = OnnxScorer(model_dir)

    older = OnnxScorer(version)

    reading = Reading(
        "s", "m", "2026-01-01T00:00:00+00:00", 0, "L", 300.0, 310.0, 1500.0, 40.0, 10.0
    )
    (expected,) = current.score([reading])
    (scored,) = older.score([reading])
    assert scored.failure_probability == pytest.approx(
        expected.failure_probability, abs=1e-5
    )
    assert scored.failure_type == expected.failure_type
