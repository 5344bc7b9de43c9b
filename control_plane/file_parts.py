"""Byte-range parts of a CSV file, so parallel workers each score one share of it.

Part ``i`` of ``n`` contains the data lines that start within bytes
``[i * size / n, (i + 1) * size / n)`` of the file, plus the header line. Each worker
reads only its own range, so a multi-million-row file is split without a first pass
over it, and the parts concatenated in order (headers dropped but the first) give the
whole file back.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_BLOCK_BYTES = 1 << 20


class FilePartError(ValueError):
    """An invalid part number or part count."""


@dataclass(frozen=True, slots=True)
class FilePart:
    """Part ``index`` (0-based) of ``count`` about equal byte ranges."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise FilePartError(f"--parts is {self.count}; expected 1 or more")
        if not 0 <= self.index < self.count:
            raise FilePartError(
                f"--part is {self.index}; expected 0 to {self.count - 1} for "
                f"--parts {self.count}"
            )


@dataclass(frozen=True, slots=True)
class PartRange:
    """The byte range of one part in its file."""

    header: bytes
    start: int  # offset of the part's first data line
    end: int  # offset just past its last data line
    rows_before: int  # data lines of the file before the part's first one


def locate_part(path: Path, part: FilePart) -> PartRange:
    """Find a part's byte range, moving both ends forward to line starts.

    NOTE: a line is a row here, so a quoted field that contains a newline would be cut
    in two at a part boundary. Batch uploads in the AI4I layout have none.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.readline()
        header_end = handle.tell()
        start = _line_start(handle, size * part.index // part.count, header_end)
        end = (
            size
            if part.index == part.count - 1
            else _line_start(handle, size * (part.index + 1) // part.count, header_end)
        )
        rows_before = _count_lines(handle, header_end, start)
    return PartRange(header, start, max(start, end), rows_before)


def open_part(path: Path, part: FilePart) -> tuple[BinaryIO, PartRange]:
    """Open a part as a binary stream: the header line, then the part's lines."""
    located = locate_part(path, part)
    handle = path.open("rb")
    handle.seek(located.start)
    stream = io.BufferedReader(_PartStream(located.header, handle, located.end))
    return stream, located


def _line_start(handle: BinaryIO, offset: int, header_end: int) -> int:
    if offset <= header_end:
        return header_end
    # The line that contains byte offset-1 ends at or after offset; the next line
    # starts the part. A newline at offset-1 makes offset itself a line start.
    handle.seek(offset - 1)
    handle.readline()
    return handle.tell()


def _count_lines(handle: BinaryIO, start: int, end: int) -> int:
    handle.seek(start)
    remaining = end - start
    lines = 0
    while remaining > 0:
        block = handle.read(min(_BLOCK_BYTES, remaining))
        if not block:
            break
        lines += block.count(b"\n")
        remaining -= len(block)
    return lines


class _PartStream(io.RawIOBase):
    """The header bytes, then the open file up to ``end``; closes the file with it."""

    def __init__(self, header: bytes, handle: BinaryIO, end: int) -> None:
        self._header = memoryview(header)
        self._handle = handle
        self._end = end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._header:
            size = min(len(buffer), len(self._header))
            buffer[:size] = self._header[:size]
            self._header = self._header[size:]
            return size
        remaining = self._end - self._handle.tell()
        if remaining <= 0:
            return 0
        data = self._handle.read(min(len(buffer), remaining))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()
