"""Byte-range parts of a CSV file, and batch scoring one part at a time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from control_plane.batch import score_csv
from control_plane.data import DatasetError
from control_plane.file_parts import FilePart, FilePartError, locate_part, open_part
from edge_agent.scorer import OnnxScorer


@pytest.fixture
def small_csv(ai4i_csv: Path, tmp_path: Path) -> Path:
    lines = ai4i_csv.read_bytes().splitlines(keepends=True)
    path = tmp_path / "first-301.csv"
    path.write_bytes(b"".join(lines[:301]))
    return path


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64])
def test_parts_cover_every_line_once(small_csv: Path, count: int) -> None:
    header, *rows = small_csv.read_bytes().splitlines(keepends=True)
    seen: list[bytes] = []

    for index in range(count):
        stream, located = open_part(small_csv, FilePart(index, count))
        with stream:
            part_header, *part_rows = stream.read().splitlines(keepends=True)
        assert part_header == header
        assert located.rows_before == len(seen)
        seen.extend(part_rows)

    assert seen == rows


def test_part_starts_on_line_boundary(small_csv: Path) -> None:
    data = small_csv.read_bytes()

    located = locate_part(small_csv, FilePart(1, 2))

    assert data[located.start - 1 : located.start] == b"\n"
    assert located.start >= len(data) // 2


@pytest.mark.parametrize(("index", "count"), [(0, 0), (-1, 2), (2, 2)])
def test_file_part_rejects_bad_numbers(index: int, count: int) -> None:
    with pytest.raises(FilePartError, match="--part"):
        FilePart(index, count)


def test_score_csv_parts_concatenate_to_whole(
    small_csv: Path, model_dir: Path, tmp_path: Path
) -> None:
    scorer = OnnxScorer(model_dir)
    whole = tmp_path / "whole.csv"
    score_csv(small_csv, whole, scorer)

    frames = []
    for index in range(3):
        output = tmp_path / f"part-{index}.csv"
        summary = score_csv(small_csv, output, scorer, part=FilePart(index, 3))
        frames.append(pd.read_csv(output, dtype=str))
        assert summary.rows == len(frames[-1])

    assert pd.concat(frames, ignore_index=True).equals(pd.read_csv(whole, dtype=str))


def test_score_csv_empty_part_keeps_header(
    ai4i_csv: Path, model_dir: Path, tmp_path: Path
) -> None:
    lines = ai4i_csv.read_bytes().splitlines(keepends=True)
    tiny = tmp_path / "tiny.csv"
    tiny.write_bytes(b"".join(lines[:3]))
    output = tmp_path / "part.csv"

    summary = score_csv(tiny, output, OnnxScorer(model_dir), part=FilePart(0, 50))

    assert summary.rows == 0
    header = output.read_text(encoding="utf-8").splitlines()
    assert len(header) == 1
    assert header[0].endswith(
        "failure_probability,failure_label,risk_band,failure_type"
    )


def test_score_csv_part_error_names_file_row(
    small_csv: Path, model_dir: Path, tmp_path: Path
) -> None:
    lines = small_csv.read_bytes().splitlines(keepends=True)
    lines[250] = (
        lines[250]
        .replace(b",L,", b",X,")
        .replace(b",M,", b",X,")
        .replace(b",H,", b",X,")
    )
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"".join(lines))
    output = tmp_path / "part.csv"

    with pytest.raises(DatasetError, match="row 250"):
        score_csv(broken, output, OnnxScorer(model_dir), part=FilePart(2, 3))
    assert not output.exists()
