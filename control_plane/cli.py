"""The ``edgepm-control-plane`` command: serve the API or dashboard, train, score.

Settings come from EDGEPM_* variables, read once here; errors from any subcommand
end as one ``error:`` line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from control_plane.batch import DEFAULT_CHUNK_ROWS, BatchOutputError
from control_plane.config import ConfigError, Settings
from control_plane.data import DatasetError
from control_plane.file_parts import FilePartError
from control_plane.listen import ListenError
from control_plane.model_store import ModelStore, ModelStoreError
from control_plane.registry import (
    has_accepted_version,
    next_version,
    record_rejection,
    register_store,
    register_version,
)
from control_plane.storage import Storage, StorageError, open_storage
from control_plane.training.cli import (
    add_evaluate_command,
    add_part_arguments,
    evaluate_command,
    positive_int,
    score_batch_command,
)
from control_plane.training.convert import ConversionError
from control_plane.training.parity import ParityError
from edge_agent.manifest import ManifestError

logger = logging.getLogger(__name__)

SHIPPED_DATA = Path(__file__).resolve().parent.parent / "data" / "ai4i2020.csv"

# Errors with a message that names the fix. Anything else is a bug and keeps its
# traceback.
USER_ERRORS = (
    ConfigError,
    StorageError,
    DatasetError,
    ParityError,
    ConversionError,
    ModelStoreError,
    ManifestError,
    FilePartError,
    ListenError,
    BatchOutputError,
)


class CommandError(RuntimeError):
    """A subcommand that cannot run as requested; the message names the fix."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args, settings))
    except (*USER_ERRORS, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="edgepm-control-plane",
        description="The edgepm control plane. Settings come from EDGEPM_* "
        "environment variables; see docs/control_plane.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.set_defaults(handler=serve_command)

    dashboard = commands.add_parser("dashboard", help="serve the fleet dashboard")
    dashboard.set_defaults(handler=dashboard_command)

    init_db = commands.add_parser(
        "init-db",
        help="create or upgrade the database schema and record the model store's "
        "versions",
    )
    init_db.set_defaults(handler=init_db_command)

    train = commands.add_parser(
        "train", help="train a model version, publish it and record it"
    )
    train.add_argument(
        "--data",
        type=Path,
        default=SHIPPED_DATA,
        help="training CSV in the AI4I 2020 layout (default: the shipped file)",
    )
    train.add_argument(
        "--version",
        type=positive_int,
        default=None,
        help="version number to publish as (default: the next free number)",
    )
    train.add_argument(
        "--quick",
        action="store_true",
        help="fewer candidates, folds and trees, for demos and tests",
    )
    train.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when an accepted version is already recorded",
    )
    train.set_defaults(handler=train_command)

    score = commands.add_parser(
        "score-batch", help="score every row of a CSV file with one model version"
    )
    score.add_argument("--input", type=Path, required=True, help="CSV file to score")
    score.add_argument(
        "--output", type=Path, required=True, help="CSV file to write the scores to"
    )
    chosen = score.add_mutually_exclusive_group()
    chosen.add_argument(
        "--model", type=Path, help="a model version directory to score with"
    )
    chosen.add_argument(
        "--version",
        type=positive_int,
        help="a recorded version (default: the current one)",
    )
    score.add_argument(
        "--site", default=None, help="score with this site's current version"
    )
    score.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"rows scored at a time; bounds memory (default {DEFAULT_CHUNK_ROWS})",
    )
    add_part_arguments(score)
    score.set_defaults(handler=score_command)

    add_evaluate_command(commands)
    commands.choices["evaluate"].set_defaults(
        handler=lambda args, settings: evaluate_command(args)
    )
    return parser


def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the API until SIGINT or SIGTERM."""
    from control_plane.api import run_api

    run_api(settings)
    return 0


def dashboard_command(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the dashboard until interrupted."""
    from control_plane.dashboard import run_dashboard

    run_dashboard(settings)
    return 0


def init_db_command(args: argparse.Namespace, settings: Settings) -> int:
    """Migrate the schema and record versions found in the model store."""
    storage = _open_migrated(settings)
    try:
        added = register_store(storage, ModelStore(settings.model_store))
        _print_json(
            {
                "database": storage.description,
                "schema_version": storage.migrate(),
                "registered_versions": added,
            }
        )
    finally:
        storage.close()
    return 0


def train_command(args: argparse.Namespace, settings: Settings) -> int:
    """Train, publish and record a version; record the candidate if it is rejected."""
    from control_plane.training.pipeline import train_and_package

    if args.data.is_dir():
        raise CommandError(
            f"training data {args.data} is a directory, expected a CSV file; pass "
            "--data with an AI4I 2020 CSV"
        )
    if not args.data.is_file():
        raise CommandError(
            f"training data {args.data} not found; pass --data with an AI4I 2020 CSV"
        )
    storage = _open_migrated(settings)
    try:
        store = ModelStore(settings.model_store)
        register_store(storage, store)
        if args.if_missing and has_accepted_version(storage):
            current = storage.current_version()
            logger.info("model v%s is already accepted; not training", current)
            _print_json({"trained": False, "current_version": current})
            return 0

        version = args.version or next_version(storage, store)
        try:
            train_and_package(
                args.data, settings.model_store, version=version, quick=args.quick
            )
        except (ParityError, ConversionError) as exc:
            record_rejection(storage, version, str(exc))
            raise
        model = register_version(storage, store.get(version))
        _print_json(
            {
                "trained": True,
                "version": model.version,
                "directory": model.path,
                "metrics": _headline_metrics(model.metrics),
            }
        )
    finally:
        storage.close()
    return 0


def score_command(args: argparse.Namespace, settings: Settings) -> int:
    """Score a CSV file with a directory, a recorded version or the current one."""
    if args.model is None:
        storage = _open_migrated(settings)
        try:
            version = args.version or storage.current_version(args.site)
            if version is None:
                raise CommandError(
                    "no model version is accepted yet; run edgepm-control-plane "
                    "train, or pass --model with a version directory"
                )
            path = storage.get_model_version(version).path
        finally:
            storage.close()
        if path is None:
            raise CommandError(f"model v{version} was rejected and has no artifact")
        args.model = Path(path)
    return score_batch_command(args)


def _open_migrated(settings: Settings) -> Storage:
    storage = open_storage(settings.database_url)
    try:
        storage.migrate()
    except BaseException:
        storage.close()
        raise
    return storage


def _headline_metrics(metrics: dict[str, object]) -> dict[str, object]:
    failure = metrics.get("failure")
    failure_type = metrics.get("failure_type")
    headline: dict[str, object] = {}
    if isinstance(failure, dict) and "f1" in failure:
        headline["failure_f1"] = failure["f1"]
    if isinstance(failure_type, dict) and "macro_f1" in failure_type:
        headline["failure_type_macro_f1"] = failure_type["macro_f1"]
    return headline


def _print_json(document: dict[str, object]) -> None:
    print(json.dumps(document, default=str))


if __name__ == "__main__":
    sys.exit(main())
