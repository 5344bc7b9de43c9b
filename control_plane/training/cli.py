"""Command-line entry points for training a version and scoring a CSV file.

``add_training_commands`` registers ``train`` and ``score-batch`` on any argparse
subparsers object; ``main`` runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from control_plane.batch import DEFAULT_CHUNK_ROWS, score_csv
from control_plane.data import DatasetError
from control_plane.model_store import ModelStore, ModelStoreError
from control_plane.training.convert import ConversionError
from control_plane.training.parity import ParityError
from control_plane.training.pipeline import train_and_package
from edge_agent.manifest import ManifestError, ModelManifest
from edge_agent.scorer import OnnxScorer

logger = logging.getLogger(__name__)

# Errors that describe a bad input or a rejected model. The CLI prints them as one
# line and exits with status 1 instead of showing a traceback.
USER_ERRORS = (
    DatasetError,
    ParityError,
    ConversionError,
    ModelStoreError,
    ManifestError,
)


def add_training_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register the ``train`` and ``score-batch`` subcommands."""
    train = subparsers.add_parser(
        "train", help="train a model version on an AI4I CSV file and publish it"
    )
    train.add_argument("--data", type=Path, required=True, help="training CSV file")
    train.add_argument(
        "--store", type=Path, required=True, help="model store directory"
    )
    train.add_argument(
        "--version",
        type=int,
        default=None,
        help="version number to publish as (default: the store's next version)",
    )
    train.add_argument(
        "--quick",
        action="store_true",
        help="fewer candidates, folds and trees: seconds instead of minutes",
    )
    train.set_defaults(handler=train_command)

    score = subparsers.add_parser(
        "score-batch", help="score every row of a CSV file with one model version"
    )
    score.add_argument(
        "--model", type=Path, required=True, help="model version directory"
    )
    score.add_argument("--input", type=Path, required=True, help="CSV file to score")
    score.add_argument(
        "--output", type=Path, required=True, help="CSV file to write the scores to"
    )
    score.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"rows scored at a time; bounds memory (default {DEFAULT_CHUNK_ROWS})",
    )
    score.set_defaults(handler=score_batch_command)


def train_command(args: argparse.Namespace) -> int:
    """Train and publish a version; print its directory and test-set figures."""
    version = args.version
    if version is None:
        version = ModelStore(args.store).next_version()
    directory = train_and_package(
        args.data, args.store, version=version, quick=args.quick
    )
    metrics = ModelManifest.from_directory(directory).document["metrics"]
    print(
        json.dumps(
            {
                "version": version,
                "directory": str(directory),
                "failure_f1": round(metrics["failure"]["f1"], 4),
                "failure_type_macro_f1": round(metrics["failure_type"]["macro_f1"], 4),
            }
        )
    )
    return 0


def score_batch_command(args: argparse.Namespace) -> int:
    """Score a CSV file with a model version directory; print the summary."""
    scorer = OnnxScorer(args.model)
    summary = score_csv(args.input, args.output, scorer, chunk_rows=args.chunk_rows)
    print(
        json.dumps(
            {
                "output": str(args.output),
                "model_version": summary.model_version,
                "rows": summary.rows,
                "predicted_failures": summary.predicted_failures,
                "risk_bands": summary.risk_band_counts,
                "seconds": round(summary.seconds, 3),
            }
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``train`` or ``score-batch``; return the process exit status."""
    parser = argparse.ArgumentParser(
        prog="edgepm-training", description="Train models and score CSV files."
    )
    add_training_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.handler(args))
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
