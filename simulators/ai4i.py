"""Rows of the AI4I 2020 file, read without their targets."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from edge_agent.reading import PRODUCT_TYPES
from simulators.errors import SimulatorError

logger = logging.getLogger(__name__)

# The file shipped with the project; a replay reads it unless given another path.
DEFAULT_AI4I_CSV = Path(__file__).resolve().parent.parent / "data" / "ai4i2020.csv"

UDI_COLUMN = "UDI"
TYPE_COLUMN = "Type"
# File column -> reading field. Target and Failure Type are left out on purpose: they
# are labels, and a simulated machine must never send them.
MEASUREMENT_COLUMNS = {
    "Air temperature [K]": "air_temperature_k",
    "Process temperature [K]": "process_temperature_k",
    "Rotational speed [rpm]": "rotational_speed_rpm",
    "Torque [Nm]": "torque_nm",
    "Tool wear [min]": "tool_wear_min",
}
REQUIRED_COLUMNS = (UDI_COLUMN, TYPE_COLUMN, *MEASUREMENT_COLUMNS)


class Ai4iFileError(SimulatorError):
    """The AI4I file is missing, or a column or value in it is not usable."""


@dataclass(frozen=True, slots=True)
class Ai4iRow:
    """The model inputs of one AI4I row, keyed by its UDI; the targets are not kept."""

    udi: int
    product_type: str
    air_temperature_k: float
    process_temperature_k: float
    rotational_speed_rpm: float
    torque_nm: float
    tool_wear_min: float


def load_ai4i_rows(
    path: Path = DEFAULT_AI4I_CSV, *, limit: int | None = None
) -> list[Ai4iRow]:
    """Read the AI4I rows in UDI order.

    The file may start with a UTF-8 byte order mark, as the published one does.

    Args:
        path: the CSV file with the AI4I column names.
        limit: keep only the first ``limit`` rows in UDI order; None keeps all.

    Raises:
        Ai4iFileError: the file is missing, lacks a column, repeats a UDI or
            contains a value that is not a valid measurement.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit is {limit}; expected at least 1 row, or None for all")
    try:
        # utf-8-sig strips the byte order mark, which would otherwise end up in the
        # name of the first column ("\ufeffUDI").
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = _parse_rows(path, csv.DictReader(handle))
    except FileNotFoundError as exc:
        raise Ai4iFileError(
            f"AI4I file {str(path)!r} not found; pass the path of ai4i2020.csv"
        ) from exc

    rows.sort(key=lambda row: row.udi)
    logger.debug("read %d AI4I rows from %s", len(rows), path)
    return rows if limit is None else rows[:limit]


def _parse_rows(path: Path, reader: csv.DictReader[str]) -> list[Ai4iRow]:
    missing = [
        name for name in REQUIRED_COLUMNS if name not in (reader.fieldnames or ())
    ]
    if missing:
        raise Ai4iFileError(
            f"AI4I file {str(path)!r} lacks the column(s) "
            f"{', '.join(map(repr, missing))}; expected a header with "
            f"{', '.join(REQUIRED_COLUMNS)}"
        )

    rows: list[Ai4iRow] = []
    seen: set[int] = set()
    for record in reader:
        # The header is line 1, so the first record is on line 2.
        where = f"{path}:{reader.line_num}"
        row = _parse_row(record, where)
        if row.udi in seen:
            raise Ai4iFileError(
                f"{where}: UDI {row.udi} appears twice; UDIs must be unique"
            )
        seen.add(row.udi)
        rows.append(row)
    return rows


def _parse_row(record: dict[str, str], where: str) -> Ai4iRow:
    udi_text = record[UDI_COLUMN]
    try:
        udi = int(udi_text)
    except ValueError as exc:
        raise Ai4iFileError(
            f"{where}: UDI is {udi_text!r}; expected an integer"
        ) from exc

    product_type = record[TYPE_COLUMN]
    if product_type not in PRODUCT_TYPES:
        raise Ai4iFileError(
            f"{where}: Type is {product_type!r}; expected one of "
            f"{', '.join(PRODUCT_TYPES)}"
        )

    values: dict[str, float] = {}
    for column, field in MEASUREMENT_COLUMNS.items():
        text = record[column]
        try:
            value = float(text)
        except (TypeError, ValueError) as exc:
            raise Ai4iFileError(
                f"{where}: {column} is {text!r}; expected a number"
            ) from exc
        if not math.isfinite(value):
            raise Ai4iFileError(
                f"{where}: {column} is {text!r}; expected a finite number"
            )
        values[field] = value
    return Ai4iRow(udi=udi, product_type=product_type, **values)
