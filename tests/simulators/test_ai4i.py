"""Reading the AI4I file: byte order mark, UDI order, and rejected files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from simulators.ai4i import Ai4iFileError, Ai4iRow, load_ai4i_rows

HEADER = (
    "UDI,Product ID,Type,Air temperature [K],Process temperature [K],"
    "Rotational speed [rpm],Torque [Nm],Tool wear [min],Target,Failure Type"
)


def write_csv(path: Path, *lines: str, bom: bool = True) -> Path:
    text = "\n".join((HEADER, *lines)) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_load_ai4i_rows_reads_shipped_file(ai4i_csv: Path) -> None:
    rows = load_ai4i_rows(ai4i_csv)

    assert len(rows) == 10_000
    assert rows[0] == Ai4iRow(1, "M", 298.1, 308.6, 1551.0, 42.8, 0.0)
    assert [row.udi for row in rows] == list(range(1, 10_001))


def test_load_ai4i_rows_keeps_no_targets() -> None:
    fields = {field.name for field in dataclasses.fields(Ai4iRow)}

    assert "target" not in fields
    assert "failure_type" not in fields


@pytest.mark.parametrize("bom", [True, False])
def test_load_ai4i_rows_sorts_by_udi_and_limits(tmp_path: Path, bom: bool) -> None:
    path = write_csv(
        tmp_path / "rows.csv",
        "3,L3,L,300.0,310.0,1500,40.0,7,0,No Failure",
        "1,M1,M,298.1,308.6,1551,42.8,0,0,No Failure",
        "2,H2,H,298.2,308.7,1408,46.3,3,1,Power Failure",
        bom=bom,
    )

    rows = load_ai4i_rows(path, limit=2)

    assert [row.udi for row in rows] == [1, 2]
    assert rows[1].product_type == "H"
    assert rows[1].rotational_speed_rpm == 1408.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "x,M1,M,298.1,308.6,1551,42.8,0,0,No Failure",
            "UDI is 'x'; expected an integer",
        ),
        ("1,X1,X,298.1,308.6,1551,42.8,0,0,No Failure", "Type is 'X'; expected one of"),
        ("1,M1,M,298.1,308.6,1551,abc,0,0,No Failure", r"Torque \[Nm\] is 'abc'"),
        ("1,M1,M,nan,308.6,1551,42.8,0,0,No Failure", "expected a finite number"),
    ],
)
def test_load_ai4i_rows_rejects_bad_value(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write_csv(tmp_path / "bad.csv", line)

    with pytest.raises(Ai4iFileError, match=message):
        load_ai4i_rows(path)


def test_load_ai4i_rows_rejects_repeated_udi(tmp_path: Path) -> None:
    line = "1,M1,M,298.1,308.6,1551,42.8,0,0,No Failure"
    path = write_csv(tmp_path / "twice.csv", line, line)

    with pytest.raises(Ai4iFileError, match=r"bad\.csv:3: UDI 1 appears twice"):
        load_ai4i_rows(path.rename(tmp_path / "bad.csv"))


def test_load_ai4i_rows_rejects_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("UDI,Type,Torque [Nm]\n1,M,42.8\n", encoding="utf-8")

    with pytest.raises(Ai4iFileError, match=r"lacks the column\(s\) 'Air temperature"):
        load_ai4i_rows(path)


def test_load_ai4i_rows_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(Ai4iFileError, match="not found; pass the path of ai4i2020.csv"):
        load_ai4i_rows(tmp_path / "absent.csv")
