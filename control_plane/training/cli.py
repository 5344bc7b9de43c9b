"""Command-line entry points for training, evaluating and batch scoring.

``add_training_commands`` registers ``train``, ``evaluate`` and ``score-batch`` on
any argparse subparsers object; ``main`` runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from control_plane.batch import DEFAULT_CHUNK_ROWS, BatchOutputError, score_csv
from control_plane.data import DatasetError, load_training_data
from control_plane.file_parts import FilePart, FilePartError
from control_plane.model_store import ModelStore, ModelStoreError
from control_plane.training.convert import ConversionError
from control_plane.training.evaluation import cross_validate, fresh_data_check
from control_plane.training.features import (
    DEFAULT_MODEL_FEATURES,
    MODEL_FEATURES,
    check_model_features,
)
from control_plane.training.model import SEED
from control_plane.training.parity import ParityError
from control_plane.training.pipeline import train_and_package
from control_plane.training.report import render_cross_validation, render_fresh
from edge_agent.manifest import ManifestError, ModelManifest
from edge_agent.scorer import OnnxScorer

logger = logging.getLogger(__name__)

SHIPPED_DATA = Path(__file__).resolve().parents[2] / "data" / "ai4i2020.csv"

# Errors that describe a bad input or a rejected model. The CLI prints them as one
# line and exits with status 1 instead of showing a traceback.
USER_ERRORS = (
    DatasetError,
    ParityError,
    ConversionError,
    ModelStoreError,
    ManifestError,
    FilePartError,
    BatchOutputError,
)


def add_training_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register the ``train``, ``evaluate`` and ``score-batch`` subcommands."""
    train = subparsers.add_parser(
        "train", help="train a model version on an AI4I CSV file and publish it"
    )
    train.add_argument("--data", type=Path, required=True, help="training CSV file")
    train.add_argument(
        "--store", type=Path, required=True, help="model store directory"
    )
    train.add_argument(
        "--version",
        type=positive_int,
        default=None,
        help="version number to publish as (default: the store's next version)",
    )
    train.add_argument(
        "--quick",
        action="store_true",
        help="fewer candidates, folds and trees: seconds instead of minutes",
    )
    add_features_argument(train)
    train.add_argument(
        "--cross-validate",
        action="store_true",
        help="also run the nested cross-validation (5 folds x 3 repeats, or 3 x 1 "
        "with --quick) and record it in the manifest and model card",
    )
    train.set_defaults(handler=train_command)

    add_evaluate_command(subparsers)

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
        type=positive_int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"rows scored at a time; bounds memory (default {DEFAULT_CHUNK_ROWS})",
    )
    add_part_arguments(score)
    score.set_defaults(handler=score_batch_command)


def add_part_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--part`` and ``--parts``: score one byte-range share of the input."""
    parser.add_argument(
        "--part",
        type=non_negative_int,
        default=None,
        help="0-based part of the input to score, for parallel workers such as an "
        "Indexed Job (default: the whole file)",
    )
    parser.add_argument(
        "--parts",
        type=positive_int,
        default=None,
        help="number of about equal byte-range parts the input is split into",
    )


def add_evaluate_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register the ``evaluate`` subcommand (``evaluate_command`` runs it)."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help="cross-validate a candidate (nested, repeated, through ONNX) and check "
        "it on fresh synthetic data",
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        default=SHIPPED_DATA,
        help="training CSV (default: the shipped AI4I file)",
    )
    evaluate.add_argument(
        "--folds",
        type=positive_int,
        default=None,
        help="outer folds (default 5, or 3 with --quick)",
    )
    evaluate.add_argument(
        "--repeats",
        type=positive_int,
        default=None,
        help="outer repetitions with consecutive seeds (default 3, or 1 with --quick)",
    )
    evaluate.add_argument(
        "--quick",
        action="store_true",
        help="the quick training plan: one candidate, 100 trees, 3 inner folds",
    )
    evaluate.add_argument("--seed", type=int, default=None, help="first seed")
    add_features_argument(evaluate)
    evaluate.add_argument(
        "--no-tail-copies",
        dest="tails",
        action="store_false",
        help="feed the trees the wide quantities without their tail copies",
    )
    evaluate.add_argument(
        "--fresh-rows",
        type=non_negative_int,
        default=20_000,
        help="synthetic processes per profile for the fresh-data check; 0 skips it "
        "(default 20000)",
    )
    evaluate.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the full report (folds, curves as points) to this file",
    )
    evaluate.set_defaults(handler=evaluate_command)


def add_features_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--features``: the trees' inputs, checked by the leakage guard."""
    parser.add_argument(
        "--features",
        type=_feature_list,
        default=DEFAULT_MODEL_FEATURES,
        help="comma-separated tree inputs from "
        f"{','.join(MODEL_FEATURES)} (default {','.join(DEFAULT_MODEL_FEATURES)}); "
        "identifiers and outcome columns are rejected",
    )


def evaluate_command(args: argparse.Namespace) -> int:
    """Cross-validate a candidate, print the table and optionally write JSON."""
    seed = SEED if args.seed is None else args.seed
    features = check_model_features(args.features)
    dataset = load_training_data(args.data)
    report = cross_validate(
        dataset,
        folds=args.folds,
        repeats=args.repeats,
        quick=args.quick,
        seed=seed,
        features=features,
        tails=args.tails,
    )
    print(render_cross_validation(report))
    document = report.to_document()
    if args.fresh_rows > 0:
        fresh = fresh_data_check(
            dataset,
            rows=args.fresh_rows,
            seed=seed,
            quick=args.quick,
            features=features,
            tails=args.tails,
        )
        print()
        print(render_fresh(fresh, document))
        document["fresh_data"] = fresh
    if args.json is not None:
        args.json.write_text(
            json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8"
        )
    return 0


def train_command(args: argparse.Namespace) -> int:
    """Train and publish a version; print its directory and test-set figures."""
    features = check_model_features(args.features)
    version = args.version
    if version is None:
        version = ModelStore(args.store).next_version()
    summary = None
    if args.cross_validate:
        report = cross_validate(
            load_training_data(args.data), quick=args.quick, features=features
        )
        summary = report.summary()
    directory = train_and_package(
        args.data,
        args.store,
        version=version,
        quick=args.quick,
        features=features,
        cross_validation=summary,
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
    part = None
    if args.parts is not None or args.part is not None:
        part = FilePart(args.part or 0, args.parts or 1)
    summary = score_csv(
        args.input, args.output, scorer, chunk_rows=args.chunk_rows, part=part
    )
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
    """Run ``train``, ``evaluate`` or ``score-batch``; return the exit status."""
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


def positive_int(text: str) -> int:
    """Parse an argparse value that must be a whole number of at least 1."""
    return _bounded_int(text, minimum=1, expected="a positive whole number")


def non_negative_int(text: str) -> int:
    """Parse an argparse value that must be a whole number of at least 0."""
    return _bounded_int(text, minimum=0, expected="a whole number of 0 or more")


def _bounded_int(text: str, *, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is not {expected}")
    return value


def _feature_list(text: str) -> tuple[str, ...]:
    # The leakage guard runs in the handlers, so that a forbidden column is reported
    # with its reason rather than as a usage error.
    return tuple(name.strip() for name in text.split(",") if name.strip())


if __name__ == "__main__":
    sys.exit(main())
