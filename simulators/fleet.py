"""Machine ids, timestamps and the wire encoding shared by every simulated fleet."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from edge_agent.reading import Reading

# A clock returns the ISO 8601 timestamp that goes into the next reading.
Clock = Callable[[], str]


def machine_id(index: int) -> str:
    """Return the id of the machine at 0-based ``index``: m-001, m-002, ..."""
    if index < 0:
        raise ValueError(f"machine index is {index}; expected 0 or more")
    return f"m-{index + 1:03d}"


def utc_timestamp() -> str:
    """Return the current time in UTC with millisecond precision and its offset."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def encode_reading(reading: Reading) -> bytes:
    """Return the MQTT payload of a reading: compact UTF-8 JSON."""
    return json.dumps(reading.to_payload(), separators=(",", ":")).encode("utf-8")
