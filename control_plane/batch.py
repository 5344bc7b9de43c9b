"""Batch scoring of uploaded CSV files with one model version.

Files are read, validated, scored and written in chunks, so memory stays bounded
by the chunk size. Output goes to a temporary file beside the destination and is
renamed into place only after every row was valid and scored.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from control_plane.data import (
    DatasetError,
    canonical_names,
    read_csv_chunks,
    require_columns,
    validate_inputs,
)
from control_plane.file_parts import FilePart, open_part
from edge_agent.reading import MODEL_INPUT_FIELDS
from edge_agent.scorer import OnnxScorer, ScoreArrays

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("failure_probability", "failure_label", "risk_band", "failure_type")
DEFAULT_CHUNK_ROWS = 100_000


class BatchOutputError(RuntimeError):
    """The scored file cannot be written at the requested path."""


@dataclass
class BatchSummary:
    """Counts over one scored upload."""

    model_version: int
    rows: int = 0
    predicted_failures: int = 0
    risk_band_counts: dict[str, int] = field(default_factory=dict)
    failure_type_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, scored: pd.DataFrame) -> None:
        """Add a scored chunk's rows to the counts."""
        self.rows += len(scored)
        self.predicted_failures += int(scored["failure_label"].sum())
        for name, column in (
            ("risk_band_counts", "risk_band"),
            ("failure_type_counts", "failure_type"),
        ):
            counts = Counter(getattr(self, name))
            counts.update(scored[column].value_counts().to_dict())
            setattr(self, name, {str(key): int(n) for key, n in counts.items()})


def score_frame(
    frame: pd.DataFrame,
    scorer: OnnxScorer,
    *,
    source: str | Path = "upload",
    first_row: int = 1,
) -> pd.DataFrame:
    """Validate and score a frame; return a copy with the four output columns added.

    Args:
        frame: the rows, with AI4I or contract column names; other columns are kept.
        scorer: the model version to score with.
        source: names the file in error messages.
        first_row: 1-based row number of the frame's first row in the file.

    Raises:
        DatasetError: a column is missing, a value is invalid (the first such row is
            named), or the frame already has an output column.
    """
    source = Path(source)
    _reject_output_columns(source, frame.columns)
    mapping = canonical_names(source, [str(column) for column in frame.columns])
    headers = require_columns(source, mapping, MODEL_INPUT_FIELDS)
    if frame.empty:
        return frame.assign(
            **{name: pd.Series(dtype=object) for name in OUTPUT_COLUMNS}
        )
    text = frame[list(headers.values())].apply(_as_text)
    product_type, measurements = validate_inputs(
        source, text, headers, first_row=first_row
    )

    arrays = scorer.score_columns(product_type, measurements)
    scored = frame.copy()
    scored["failure_probability"] = arrays.failure_probability
    scored["failure_label"] = arrays.failure_label
    scored["risk_band"] = _risk_bands(scorer, arrays)
    classes = np.asarray(scorer.manifest.failure_type_classes, dtype=object)
    scored["failure_type"] = classes[arrays.failure_type_index]
    return scored


def score_csv(
    source: Path,
    destination: Path,
    scorer: OnnxScorer,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    part: FilePart | None = None,
) -> BatchSummary:
    """Score a CSV file into another CSV file with the output columns appended.

    Args:
        source: the upload; UTF-8 with or without a byte order mark.
        destination: the scored file; replaced only when the whole upload is valid.
        scorer: the model version to score with.
        chunk_rows: rows read, scored and written at a time; bounds memory use.
        part: score only this byte-range part of the file (see file_parts); the
            destination then contains the header and that part's rows. Row numbers in
            errors still count from the start of the file.

    Raises:
        DatasetError: the upload is invalid. Nothing is written to ``destination``.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows is {chunk_rows}, expected at least 1")
    started = time.perf_counter()
    summary = BatchSummary(model_version=scorer.version)
    partial = destination.with_name(f".{destination.name}.{uuid.uuid4().hex}.partial")
    stream, rows_before, header = None, 0, b""
    if part is not None:
        stream, located = open_part(source, part)
        rows_before, header = located.rows_before, located.header
    try:
        with _open_output(partial, destination) as output:
            for chunk in read_csv_chunks(source, chunk_rows, stream=stream):
                if chunk.empty:
                    continue
                scored = score_frame(
                    chunk,
                    scorer,
                    source=source,
                    first_row=rows_before + summary.rows + 1,
                )
                scored.to_csv(output, header=summary.rows == 0, index=False)
                summary.add(scored)
            if summary.rows == 0 and part is None:
                raise DatasetError(f"{source} has no data rows; nothing to score")
            if summary.rows == 0:
                # A part past the last line of a small file is empty; its output
                # keeps the header so the parts still concatenate.
                names = header.decode("utf-8-sig").rstrip("\r\n")
                output.write(",".join([names, *OUTPUT_COLUMNS]) + "\n")
            output.flush()
            os.fsync(output.fileno())
        try:
            os.replace(partial, destination)
        except OSError as exc:
            raise _output_error(destination, exc) from exc
    finally:
        partial.unlink(missing_ok=True)
        if stream is not None:
            stream.close()

    summary.seconds = time.perf_counter() - started
    logger.info(
        "scored %d rows of %s with model v%d in %.2f s (%d predicted failures)",
        summary.rows,
        source,
        scorer.version,
        summary.seconds,
        summary.predicted_failures,
    )
    return summary


def _reject_output_columns(source: Path, columns: pd.Index) -> None:
    clashes = [name for name in OUTPUT_COLUMNS if name in columns]
    if clashes:
        raise DatasetError(
            f"{source}: columns {clashes} already exist and would be overwritten by "
            "the model's outputs; rename or drop them before scoring"
        )


def _as_text(column: pd.Series) -> pd.Series:
    # Frames read by read_csv_chunks are text already; frames built in code may hold
    # numbers, which validation reads back from their text form. Missing values
    # (NaN, None) become empty strings, which validation reports as empty.
    if not pd.api.types.is_string_dtype(column):
        column = column.astype(str)
    return column.fillna("")


def _risk_bands(scorer: OnnxScorer, arrays: ScoreArrays) -> np.ndarray:
    # The manifest's own rule, so a batch row gets the band the agent would give
    # the same reading.
    return scorer.manifest.risk_band_array(arrays.failure_probability)


def _open_output(partial: Path, destination: Path) -> TextIO:
    try:
        return partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise _output_error(destination, exc) from exc


def _output_error(destination: Path, exc: OSError) -> BatchOutputError:
    return BatchOutputError(
        f"cannot write the scores to {destination}: {exc.strerror or exc}; give "
        "a file path in an existing, writable directory"
    )
