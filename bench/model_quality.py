"""Benchmark of model quality against the AI4I ceiling, through scikit-learn and ONNX.

Run: ``.venv/bin/python bench/model_quality.py [--quick] [--json out.json]``. Runs the
nested cross-validation (5 outer folds x 3 repeats by default), the fresh-data check
on synthetic data, then trains and publishes a full version into a temporary store
and measures its artifact size and single-reading latency. Takes about 5 minutes on
one busy core; ``--quick`` takes about 20 seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from control_plane.data import load_training_data
from control_plane.model_store import ModelStore
from control_plane.training.evaluation import cross_validate, fresh_data_check
from control_plane.training.model import train_models
from control_plane.training.pipeline import package_models
from control_plane.training.report import render_cross_validation, render_fresh
from edge_agent.reading import MEASUREMENT_FIELDS, Reading
from edge_agent.scorer import OnnxScorer

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "ai4i2020.csv"
LATENCY_CALLS = 2_000


def single_reading_latency(directory: Path, features_row: dict[str, object]) -> dict:
    """Return median and p99 latency of scoring one reading, in milliseconds.

    Measured through ``OnnxScorer.score`` (what the edge agent calls per reading)
    and through the bare onnxruntime session, both on one thread.
    """
    scorer = OnnxScorer(directory)
    reading = Reading(
        "bench",
        "m-1",
        "2026-01-01T00:00:00+00:00",
        0,
        str(features_row["product_type"]),
        *(float(features_row[name]) for name in MEASUREMENT_FIELDS),
    )
    measurements = np.array(
        [[features_row[name] for name in MEASUREMENT_FIELDS]], dtype=np.float64
    )
    product = [str(features_row["product_type"])]
    figures = {}
    for name, action in (
        ("scorer_score", lambda: scorer.score([reading])),
        ("score_columns", lambda: scorer.score_columns(product, measurements)),
    ):
        times = []
        for _ in range(LATENCY_CALLS):
            started = time.perf_counter()
            action()
            times.append(time.perf_counter() - started)
        times.sort()
        figures[f"{name}_ms_median"] = round(statistics.median(times) * 1000, 4)
        figures[f"{name}_ms_p99"] = round(times[int(0.99 * len(times))] * 1000, 4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="AI4I CSV")
    parser.add_argument("--quick", action="store_true", help="3 x 1 quick plan")
    parser.add_argument("--folds", type=int, default=None, help="outer folds")
    parser.add_argument("--repeats", type=int, default=None, help="outer repeats")
    parser.add_argument(
        "--fresh-rows", type=int, default=20_000, help="synthetic rows per profile"
    )
    parser.add_argument("--json", type=Path, default=None, help="write figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    dataset = load_training_data(args.data)
    report = cross_validate(
        dataset, folds=args.folds, repeats=args.repeats, quick=args.quick
    )
    print(render_cross_validation(report))
    document = report.to_document()
    fresh = fresh_data_check(dataset, rows=args.fresh_rows, quick=args.quick)
    print()
    print(render_fresh(fresh, document))

    started = time.perf_counter()
    trained = train_models(dataset, quick=args.quick)
    training_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as work:
        directory = package_models(trained, dataset, ModelStore(Path(work)), version=1)
        manifest = OnnxScorer(directory).manifest.document
        latency = single_reading_latency(directory, dataset.features.iloc[0].to_dict())
    artifact = {
        "training_s": round(training_s, 1),
        "artifact_bytes": manifest["artifact"]["size_bytes"],
        "held_out_failure_f1": round(manifest["metrics"]["failure"]["f1"], 4),
        **latency,
    }
    print()
    print(json.dumps(artifact, indent=2))
    if args.json is not None:
        document.update(fresh_data=fresh, artifact=artifact)
        args.json.write_text(
            json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    main()
