"""Reading and validating AI4I-style CSV files: training data and batch uploads.

Headers may use the published AI4I names or the reading contract's snake_case names;
every value is checked before anything is trained or scored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from edge_agent.manifest import sha256_file
from edge_agent.reading import (
    MEASUREMENT_FIELDS,
    MEASUREMENT_RANGES,
    MODEL_INPUT_FIELDS,
    PRODUCT_TYPES,
)

logger = logging.getLogger(__name__)

TARGET_COLUMN = "target"
FAILURE_TYPE_COLUMN = "failure_type"
NO_FAILURE = "No Failure"

# Published AI4I 2020 header -> contract name. The UCI release also carries the
# failure-mode flags; they are mapped so that the leakage guard can name them.
AI4I_COLUMNS = {
    "UDI": "udi",
    "Product ID": "product_id",
    "Type": "product_type",
    "Air temperature [K]": "air_temperature_k",
    "Process temperature [K]": "process_temperature_k",
    "Rotational speed [rpm]": "rotational_speed_rpm",
    "Torque [Nm]": "torque_nm",
    "Tool wear [min]": "tool_wear_min",
    "Target": TARGET_COLUMN,
    "Failure Type": FAILURE_TYPE_COLUMN,
    "Machine failure": "machine_failure",
    "TWF": "twf",
    "HDF": "hdf",
    "PWF": "pwf",
    "OSF": "osf",
    "RNF": "rnf",
}
_AI4I_NAME = {contract: published for published, contract in AI4I_COLUMNS.items()}

# Columns that identify a row or encode its outcome. A model trained on any of them
# learns the outcome instead of the machine's condition, so they are never features.
FORBIDDEN_FEATURES = frozenset(
    {
        "udi",
        "product_id",
        TARGET_COLUMN,
        FAILURE_TYPE_COLUMN,
        "machine_failure",
        "twf",
        "hdf",
        "pwf",
        "osf",
        "rnf",
    }
)

_LEAKAGE_REASONS = {
    "udi": "the row number orders the file in time, so it works as a clock",
    "product_id": "the serial number orders the file in time, so it works as a clock",
    TARGET_COLUMN: "it is the label the model predicts",
    FAILURE_TYPE_COLUMN: "it is the label the failure-type head predicts",
    "machine_failure": "it is the failure label under another name",
    "twf": "failure-mode flags are set only when the machine failed",
    "hdf": "failure-mode flags are set only when the machine failed",
    "pwf": "failure-mode flags are set only when the machine failed",
    "osf": "failure-mode flags are set only when the machine failed",
    "rnf": "failure-mode flags are set only when the machine failed",
}

# Fewer examples than this of a class leave some cross-validation folds without it,
# and its test-set figures would rest on one or two rows.
MIN_CLASS_ROWS = 10

# Measurements outside the physical range that look like degrees Celsius get a hint.
_CELSIUS_LOOKING = (-60.0, 200.0)


class DatasetError(ValueError):
    """A CSV file that cannot be used; the message names the column, row and fix."""


class LeakageError(DatasetError):
    """A request to use an identifier or an outcome column as a model feature."""


@dataclass(frozen=True, slots=True)
class DataFingerprint:
    """The digest and class counts of the data a model was trained on."""

    sha256: str
    rows: int
    class_counts: dict[str, int]
    failure_type_counts: dict[str, int]

    def to_document(self) -> dict[str, object]:
        """Return the fingerprint as the manifest's ``training_data`` object."""
        return {
            "sha256": self.sha256,
            "rows": self.rows,
            "class_counts": self.class_counts,
            "failure_type_counts": self.failure_type_counts,
        }


@dataclass(frozen=True, slots=True)
class Dataset:
    """A validated training set.

    Attributes:
        features: ``product_type`` (str) and the five measurements (float64), in
            ``MODEL_INPUT_FIELDS`` order; nothing else.
        target: 1 where the machine failed, else 0.
        failure_type: the failure-type label of each row.
        fingerprint: the file's digest and class counts.
        udi: the file's row identifiers (the ``UDI`` column, as text) for reports;
            None when the file has no such column. Never a feature.
    """

    source: Path
    features: pd.DataFrame
    target: np.ndarray
    failure_type: np.ndarray
    fingerprint: DataFingerprint
    udi: np.ndarray | None = None


def reject_leaking_columns(features: Sequence[str]) -> None:
    """Reject any requested feature that is an identifier or an outcome column.

    Every path that lets a caller name model features goes through this check: the
    graph inputs (``check_features``), the tree inputs of a candidate and the feature
    lists given on the command line.

    Raises:
        LeakageError: a feature is an identifier, the target, the failure type or a
            failure-mode flag, in either AI4I or snake_case spelling.
    """
    for name in features:
        # "Failure Type", "failure type" and "failure_type" all name the same column.
        spelled = str(name).strip()
        contract = AI4I_COLUMNS.get(spelled) or re.sub(r"\W+", "_", spelled.lower())
        if contract.strip("_") in FORBIDDEN_FEATURES:
            raise LeakageError(
                f"feature {name!r} is an identifier or an outcome column and is never "
                f"a model input (forbidden: {', '.join(sorted(FORBIDDEN_FEATURES))}); "
                f"{_LEAKAGE_REASONS[contract.strip('_')]}. Train on the reading "
                f"fields {', '.join(MODEL_INPUT_FIELDS)}"
            )


def check_features(features: Sequence[str]) -> tuple[str, ...]:
    """Check a requested feature list against the leakage guard and the contract.

    Returns:
        The features, in the order requested.

    Raises:
        LeakageError: a feature is an identifier, the target, the failure type or a
            failure-mode flag, in either AI4I or snake_case spelling.
        DatasetError: a feature is not a reading field, or one is missing.
    """
    requested = tuple(features)
    reject_leaking_columns(requested)
    unknown = [name for name in requested if name not in MODEL_INPUT_FIELDS]
    if unknown:
        raise DatasetError(
            f"features {unknown} are not reading fields; the model graph takes "
            f"exactly {', '.join(MODEL_INPUT_FIELDS)}"
        )
    missing = [name for name in MODEL_INPUT_FIELDS if name not in requested]
    if missing:
        raise DatasetError(
            f"features {missing} are missing; the edge agent feeds every reading "
            f"field ({', '.join(MODEL_INPUT_FIELDS)}), so train on all of them"
        )
    return requested


def canonical_names(source: Path, columns: Sequence[str]) -> dict[str, str]:
    """Map a file's headers to contract names; headers not recognised map to themselves.

    Raises:
        DatasetError: two headers map to the same contract name.
    """
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for header in columns:
        name = str(header).strip()
        contract = AI4I_COLUMNS.get(name, name)
        if contract in seen:
            raise DatasetError(
                f"{source}: columns {seen[contract]!r} and {header!r} both mean "
                f"{contract!r}; keep only one of them"
            )
        seen[contract] = str(header)
        mapping[str(header)] = contract
    return mapping


def read_csv_chunks(
    source: Path, chunk_rows: int, *, stream: BinaryIO | None = None
) -> Iterator[pd.DataFrame]:
    """Read a CSV file as text columns, ``chunk_rows`` rows at a time.

    Every value stays the string written in the file, so columns the caller does not
    validate pass through unchanged. A UTF-8 byte order mark is accepted. When
    ``stream`` is given it is read instead of the file, and ``source`` only names it
    in messages.

    Raises:
        DatasetError: the file is missing, empty, not UTF-8 or not well-formed CSV.
    """
    try:
        reader = pd.read_csv(
            source if stream is None else stream,
            encoding="utf-8-sig",
            dtype=str,
            keep_default_na=False,
            chunksize=chunk_rows,
        )
        with reader:
            yield from reader
    except FileNotFoundError as exc:
        raise DatasetError(f"{source} not found; check the path") from exc
    except IsADirectoryError as exc:
        raise DatasetError(
            f"{source} is a directory, expected a CSV file; pass the file's path"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(
            f"{source} is empty; expected a header line and data rows"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{source} is not UTF-8 (invalid byte at offset {exc.start}); "
            "save the file as UTF-8"
        ) from exc
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{source} is not well-formed CSV: {exc}") from exc


def require_columns(
    source: Path, mapping: dict[str, str], required: Sequence[str]
) -> dict[str, str]:
    """Return contract name -> file header for the required columns.

    Raises:
        DatasetError: a required column is missing; the message names both spellings.
    """
    by_contract = {contract: header for header, contract in mapping.items()}
    missing = [name for name in required if name not in by_contract]
    if missing:
        spelled = ", ".join(
            f"{_AI4I_NAME.get(name, name)!r} ({name})" for name in missing
        )
        raise DatasetError(
            f"{source}: missing column(s) {spelled}; the header needs "
            f"{', '.join(_AI4I_NAME.get(name, name) for name in required)} "
            "(AI4I names) or the snake_case contract names"
        )
    return {name: by_contract[name] for name in required}


def validate_inputs(
    source: Path, frame: pd.DataFrame, headers: dict[str, str], *, first_row: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate the model-input columns of a text frame.

    Args:
        source: the file, for messages.
        frame: text columns as read by ``read_csv_chunks``.
        headers: contract name -> header in ``frame`` for the six input fields.
        first_row: 1-based data-row number of the frame's first row in the file.

    Returns:
        The product types (object array of str, shape (n,)) and the measurements
        (float64, shape (n, 5), ``MEASUREMENT_FIELDS`` order).

    Raises:
        DatasetError: a value is empty, not a number, not finite, outside the
            physical range, or an unknown product type; the first such row is named.
    """
    problems: list[tuple[int, str, str, str]] = []

    product_type = frame[headers["product_type"]].str.strip().to_numpy(dtype=object)
    bad = ~np.isin(product_type, PRODUCT_TYPES)
    if bad.any():
        problems.append(
            _first_problem(
                bad,
                headers["product_type"],
                frame[headers["product_type"]],
                f"is not a product type; use one of {', '.join(PRODUCT_TYPES)}",
            )
        )

    measurements = np.empty((len(frame), len(MEASUREMENT_FIELDS)), dtype=np.float64)
    for column, name in enumerate(MEASUREMENT_FIELDS):
        text = frame[headers[name]]
        values, problem = _parse_measurement(name, headers[name], text)
        if problem is not None:
            problems.append(problem)
        measurements[:, column] = values

    if problems:
        # The first bad row in file order; within it, the leftmost bad column.
        index, header, value, reason = min(
            problems, key=lambda p: (p[0], frame.columns.get_loc(p[1]))
        )
        row = first_row + index
        raise DatasetError(
            f"{source}: row {row} (line {row + 1}), column {header!r}: value "
            f"{value!r} {reason}"
        )
    return product_type, measurements


def load_training_data(source: Path) -> Dataset:
    """Read and validate an AI4I training file.

    Raises:
        DatasetError: the file cannot be read, a column is missing, a value is
            invalid, or a class has too few rows to train and evaluate on.
    """
    frames = list(read_csv_chunks(source, chunk_rows=1_000_000))
    if not frames or sum(len(frame) for frame in frames) == 0:
        raise DatasetError(f"{source} has a header but no data rows")
    frame = pd.concat(frames, ignore_index=True)
    mapping = canonical_names(source, list(frame.columns))
    headers = require_columns(
        source, mapping, (*MODEL_INPUT_FIELDS, TARGET_COLUMN, FAILURE_TYPE_COLUMN)
    )

    product_type, measurements = validate_inputs(source, frame, headers, first_row=1)
    target = _parse_target(
        source, frame[headers[TARGET_COLUMN]], headers[TARGET_COLUMN]
    )
    failure_type = _parse_failure_type(
        source, frame[headers[FAILURE_TYPE_COLUMN]], headers[FAILURE_TYPE_COLUMN]
    )
    class_counts = {str(label): int((target == label).sum()) for label in (0, 1)}
    type_counts = {
        str(label): int(count)
        for label, count in zip(
            *np.unique(failure_type, return_counts=True), strict=True
        )
    }
    _check_class_sizes(source, class_counts, type_counts, headers)

    features = pd.DataFrame({"product_type": product_type})
    for column, name in enumerate(MEASUREMENT_FIELDS):
        features[name] = measurements[:, column]
    fingerprint = DataFingerprint(
        sha256=sha256_file(source),
        rows=len(frame),
        class_counts=class_counts,
        failure_type_counts=type_counts,
    )
    logger.info(
        "training data %s: %d rows, %d failures", source, len(frame), class_counts["1"]
    )
    udi = None
    if "udi" in mapping.values():
        header = next(h for h, contract in mapping.items() if contract == "udi")
        udi = frame[header].str.strip().to_numpy(dtype=object)
    return Dataset(source, features, target, failure_type, fingerprint, udi)


def _first_problem(
    bad: np.ndarray, header: str, text: pd.Series, reason: str
) -> tuple[int, str, str, str]:
    index = int(np.flatnonzero(bad)[0])
    count = int(bad.sum())
    if count > 1:
        reason += f" ({count - 1} more row(s) in this column have the same problem)"
    return index, header, str(text.iloc[index]), reason


def _parse_measurement(
    name: str, header: str, text: pd.Series
) -> tuple[np.ndarray, tuple[int, str, str, str] | None]:
    stripped = text.str.strip()
    empty = (stripped == "").to_numpy()
    if empty.any():
        reason = "is empty or missing; fill in the measurement or drop the row"
        return np.zeros(len(text)), _first_problem(empty, header, text, reason)

    values = pd.to_numeric(stripped, errors="coerce").to_numpy(dtype=np.float64)
    not_number = (
        np.isnan(values) & ~stripped.str.lower().isin(["nan", "-nan"]).to_numpy()
    )
    if not_number.any():
        reason = "is not a number; write measurements as decimal numbers, e.g. 298.1"
        return values, _first_problem(not_number, header, text, reason)
    not_finite = ~np.isfinite(values)
    if not_finite.any():
        reason = "is not a finite number; drop the row or fill in a measurement"
        return values, _first_problem(not_finite, header, text, reason)

    low, high = MEASUREMENT_RANGES[name]
    outside = (values < low) | (values > high)
    if not outside.any():
        return values, None
    index = int(np.flatnonzero(outside)[0])
    reason = f"is outside the physical range {low} to {high}; check the sensor and unit"
    if name.endswith("_temperature_k") and _CELSIUS_LOOKING[0] <= values[index] < low:
        reason = (
            "looks like degrees Celsius; temperatures are in kelvin "
            f"({values[index]} °C is {values[index] + 273.15:.2f} K)"
        )
    return values, _first_problem(outside, header, text, reason)


def _parse_target(source: Path, text: pd.Series, header: str) -> np.ndarray:
    stripped = text.str.strip()
    bad = ~stripped.isin(["0", "1"]).to_numpy()
    if bad.any():
        index, _, value, reason = _first_problem(
            bad, header, text, "is not a target label; use 1 for a failure, 0 otherwise"
        )
        raise DatasetError(
            f"{source}: row {index + 1} (line {index + 2}), column {header!r}: value "
            f"{value!r} {reason}"
        )
    return (stripped == "1").to_numpy(dtype=np.int64)


def _parse_failure_type(source: Path, text: pd.Series, header: str) -> np.ndarray:
    stripped = text.str.strip().to_numpy(dtype=object)
    bad = stripped == ""
    if bad.any():
        index, _, value, reason = _first_problem(
            bad, header, text, f"is empty; write the failure type, or {NO_FAILURE!r}"
        )
        raise DatasetError(
            f"{source}: row {index + 1} (line {index + 2}), column {header!r}: value "
            f"{value!r} {reason}"
        )
    return stripped


def _check_class_sizes(
    source: Path,
    class_counts: dict[str, int],
    type_counts: dict[str, int],
    headers: dict[str, str],
) -> None:
    if class_counts["1"] == 0:
        raise DatasetError(
            f"{source}: column {headers[TARGET_COLUMN]!r} has no failures (no row "
            "with 1); a failure model needs failed rows, so add failure records"
        )
    for label, count in class_counts.items():
        if count < MIN_CLASS_ROWS:
            raise DatasetError(
                f"{source}: column {headers[TARGET_COLUMN]!r} has {count} row(s) with "
                f"{label}, expected at least {MIN_CLASS_ROWS} to train and evaluate; "
                "add more rows"
            )
    if NO_FAILURE not in type_counts:
        raise DatasetError(
            f"{source}: column {headers[FAILURE_TYPE_COLUMN]!r} has no "
            f"{NO_FAILURE!r} rows; label healthy rows {NO_FAILURE!r}"
        )
    if len(type_counts) < 2:
        raise DatasetError(
            f"{source}: column {headers[FAILURE_TYPE_COLUMN]!r} has only "
            f"{NO_FAILURE!r}; label the failed rows with their failure type"
        )
    for label, count in type_counts.items():
        if count < MIN_CLASS_ROWS:
            raise DatasetError(
                f"{source}: failure type {label!r} has {count} row(s), expected at "
                f"least {MIN_CLASS_ROWS}; add examples or merge it into another type"
            )
