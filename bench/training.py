"""Benchmark of training, conversion and scoring, measured side by side in one run.

Run: ``.venv/bin/python bench/training.py [--data data/ai4i2020.csv]``. Prints the
full (non-quick) training and packaging time, parity, test-set quality, the artifact
size, single-reading latency and batch throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from control_plane.batch import score_csv
from control_plane.data import load_training_data
from control_plane.model_store import ModelStore
from control_plane.training.model import train_models
from control_plane.training.pipeline import package_models
from edge_agent.reading import MEASUREMENT_FIELDS, Reading
from edge_agent.scorer import OnnxScorer

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "ai4i2020.csv"


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    """Return the median wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="AI4I CSV")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        dataset = load_training_data(args.data)

        started = time.perf_counter()
        trained = train_models(dataset, quick=False)
        training_s = time.perf_counter() - started
        started = time.perf_counter()
        directory = package_models(trained, dataset, ModelStore(root), version=1)
        packaging_s = time.perf_counter() - started

        scorer = OnnxScorer(directory)
        document = scorer.manifest.document
        features = dataset.features
        product_type = features["product_type"].tolist()
        measurements = features[list(MEASUREMENT_FIELDS)].to_numpy(np.float64)
        reading = Reading(
            "bench",
            "m-1",
            "2026-01-01T00:00:00+00:00",
            0,
            "L",
            *(float(v) for v in measurements[0]),
        )

        single_s = median_seconds(lambda: scorer.score([reading]), 2_000)
        batch_s = median_seconds(
            lambda: scorer.score_columns(product_type, measurements), 20
        )
        file_s = median_seconds(
            lambda: score_csv(args.data, root / "scored.csv", scorer), 3
        )

    rows = len(features)
    figures = {
        "full_training_s": round(training_s, 1),
        "conversion_parity_publish_s": round(packaging_s, 2),
        "parity": document["parity"],
        "test_failure_f1": round(document["metrics"]["failure"]["f1"], 4),
        "test_failure_type_macro_f1": round(
            document["metrics"]["failure_type"]["macro_f1"], 4
        ),
        "decision_threshold": document["decision_threshold"],
        "artifact_bytes": document["artifact"]["size_bytes"],
        "single_reading_ms_median": round(single_s * 1000, 4),
        "onnx_batch_rows_per_s": round(rows / batch_s),
        "score_csv_rows_per_s": round(rows / file_s),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
