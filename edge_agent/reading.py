"""The telemetry reading contract: MQTT topics, the JSON payload and its validation.

Simulators publish this payload, the edge agent validates it, and the control plane
validates single readings sent to its scoring endpoint with the same code.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any

TOPIC_ROOT = "edgepm"
MAX_PAYLOAD_BYTES = 16 * 1024
EXCERPT_BYTES = 256
# Readings outside these years (in UTC) come from a clock that was never set or is
# broken; a time series cannot place them.
MIN_YEAR = 2000
MAX_YEAR = 2199
# Sequence numbers are stored as signed 64-bit integers (SQLite and PostgreSQL).
MAX_SEQUENCE = 2**63 - 1
PRODUCT_TYPES = ("L", "M", "H")
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# The five measurements in the order the model graph takes them after product_type.
# Names carry their unit so a payload can be read without a schema at hand.
MEASUREMENT_FIELDS = (
    "air_temperature_k",
    "process_temperature_k",
    "rotational_speed_rpm",
    "torque_nm",
    "tool_wear_min",
)
MODEL_INPUT_FIELDS = ("product_type", *MEASUREMENT_FIELDS)

# Physical ranges, wide enough for any machine tool on a plant floor and narrow enough
# to catch unit mistakes. Kelvin below 200 K is far outside any factory; a value that
# would be a plausible Celsius reading gets a message that names Celsius.
_RANGES: dict[str, tuple[float, float]] = {
    "air_temperature_k": (200.0, 400.0),
    "process_temperature_k": (200.0, 500.0),
    "rotational_speed_rpm": (0.0, 20_000.0),
    "torque_nm": (0.0, 1_000.0),
    "tool_wear_min": (0.0, 10_000.0),
}
# The same ranges under a public name, for code that validates whole columns at once
# (training data, batch uploads) and must agree with single-reading validation.
MEASUREMENT_RANGES = _RANGES
_CELSIUS_LOOKING = (-60.0, 200.0)

# The fixed set of ReadingError.reason values, so metrics labelled by reason stay small.
REJECTION_REASONS = (
    "too_large",
    "not_utf8",
    "not_json",
    "non_finite",
    "not_object",
    "missing_field",
    "invalid_identifier",
    "invalid_timestamp",
    "invalid_seq",
    "invalid_product_type",
    "not_a_number",
    "looks_celsius",
    "out_of_range",
    "invalid_topic",
    "topic_mismatch",
    "unprocessable",
    "invalid",
)


class ReadingError(ValueError):
    """An invalid reading payload; the message names the field and the fix.

    Attributes:
        reason: a short class of the problem from ``REJECTION_REASONS``, fit for a
            metrics label; the message carries the detail.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated telemetry reading of one machine."""

    site: str
    machine_id: str
    ts: str
    machine_seq: int
    product_type: str
    air_temperature_k: float
    process_temperature_k: float
    rotational_speed_rpm: float
    torque_nm: float
    tool_wear_min: float

    def to_payload(self) -> dict[str, Any]:
        """Return the reading as the JSON object that goes on the wire."""
        return {
            "site": self.site,
            "machine_id": self.machine_id,
            "ts": self.ts,
            "seq": self.machine_seq,
            "product_type": self.product_type,
            **{name: getattr(self, name) for name in MEASUREMENT_FIELDS},
        }


def telemetry_topic(site: str, machine_id: str) -> str:
    """Return the topic a machine publishes its readings on."""
    return f"{TOPIC_ROOT}/{site}/{machine_id}/telemetry"


def telemetry_subscription(site: str) -> str:
    """Return the topic filter that matches every machine of one site."""
    return f"{TOPIC_ROOT}/{site}/+/telemetry"


def alert_topic(site: str, machine_id: str) -> str:
    """Return the topic the edge agent publishes a machine's alerts on."""
    return f"{TOPIC_ROOT}/{site}/{machine_id}/alert"


def parse_topic(topic: str) -> tuple[str, str]:
    """Split a telemetry topic into (site, machine_id).

    Raises:
        ReadingError: the topic does not follow ``edgepm/<site>/<machine>/telemetry``.
    """
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != TOPIC_ROOT or parts[3] != "telemetry":
        raise ReadingError(
            f"topic {topic!r} is not a telemetry topic; "
            f"publish on {TOPIC_ROOT}/<site>/<machine_id>/telemetry",
            reason="invalid_topic",
        )
    return parts[1], parts[2]


def excerpt(payload: bytes) -> str:
    """Return a bounded, printable excerpt of a raw payload for the quarantine."""
    head = payload[:EXCERPT_BYTES].decode("utf-8", errors="backslashreplace")
    if len(payload) > EXCERPT_BYTES:
        head += f"... ({len(payload)} bytes in all)"
    return head


def parse_reading(payload: bytes, topic: str | None = None) -> Reading:
    """Decode and validate one raw payload.

    Args:
        payload: the MQTT message body, expected to be a UTF-8 JSON object.
        topic: the topic it arrived on; when given, its site and machine must match
            the payload's.

    Raises:
        ReadingError: the payload is not a valid reading. The message names the first
            problem found and what a valid value looks like.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ReadingError(
            f"payload is {len(payload)} bytes, over the limit of {MAX_PAYLOAD_BYTES}; "
            "send one reading per message",
            reason="too_large",
        )
    if not payload.strip():
        raise ReadingError(
            "payload is empty; send one JSON object per message", reason="not_json"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReadingError(
            f"payload is not UTF-8 (invalid byte at offset {exc.start}); "
            "encode the JSON as UTF-8",
            reason="not_utf8",
        ) from exc
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ReadingError(
            f"payload is not JSON: {exc}; send a JSON object", reason="not_json"
        ) from exc
    if not isinstance(document, dict):
        raise ReadingError(
            f"payload is a JSON {_json_type(document)}, expected a JSON object "
            "with the reading's fields",
            reason="not_object",
        )
    reading = validate_reading(document)

    if topic is not None:
        topic_site, topic_machine = parse_topic(topic)
        if (topic_site, topic_machine) != (reading.site, reading.machine_id):
            raise ReadingError(
                f"payload names site {reading.site!r} and machine "
                f"{reading.machine_id!r} but arrived on topic {topic!r}; "
                "publish on the machine's own topic",
                reason="topic_mismatch",
            )
    return reading


def validate_reading(document: dict[str, Any]) -> Reading:
    """Validate a decoded JSON object and return it as a Reading.

    Raises:
        ReadingError: a field is missing, of the wrong type or out of range.
    """
    site = _identifier(document, "site")
    machine_id = _identifier(document, "machine_id")
    ts = _timestamp(document)
    machine_seq = _sequence(document)
    product_type = _product_type(document)
    values = {name: _measurement(document, name) for name in MEASUREMENT_FIELDS}
    return Reading(site, machine_id, ts, machine_seq, product_type, **values)


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _reject_constant(token: str) -> float:
    raise ReadingError(
        f"payload contains the non-standard JSON token {token}; "
        "send finite numbers only, or leave the reading out",
        reason="non_finite",
    )


def _required(document: dict[str, Any], name: str) -> Any:
    if name not in document:
        raise ReadingError(
            f"field {name!r} is missing; every reading needs it", reason="missing_field"
        )
    return document[name]


def _identifier(document: dict[str, Any], name: str) -> str:
    value = _required(document, name)
    if not isinstance(value, str) or not IDENTIFIER_PATTERN.match(value):
        raise ReadingError(
            f"field {name!r} is {value!r}; expected 1 to 64 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit",
            reason="invalid_identifier",
        )
    return value


def _timestamp(document: dict[str, Any]) -> str:
    value = _required(document, "ts")
    if not isinstance(value, str):
        raise ReadingError(
            f"field 'ts' is {value!r}; expected an ISO 8601 string",
            reason="invalid_timestamp",
        )
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ReadingError(
            f"field 'ts' is {value!r}, not an ISO 8601 timestamp; "
            "send e.g. 2026-01-31T08:00:00.000+00:00",
            reason="invalid_timestamp",
        ) from exc
    if parsed.utcoffset() is None:
        raise ReadingError(
            f"field 'ts' is {value!r} with no UTC offset; "
            "append the offset, e.g. +00:00 or Z",
            reason="invalid_timestamp",
        )
    try:
        year = parsed.astimezone(dt.UTC).year
    except OverflowError:  # 0001-01-01T00:00+12:00 is before year 1 in UTC
        year = 0
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ReadingError(
            f"field 'ts' is {value!r}, outside the years {MIN_YEAR} to {MAX_YEAR} "
            "in UTC; check the machine's clock",
            reason="invalid_timestamp",
        )
    return value


def _sequence(document: dict[str, Any]) -> int:
    value = _required(document, "seq")
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= MAX_SEQUENCE
    ):
        raise ReadingError(
            f"field 'seq' is {value!r}; expected the machine's message counter, "
            f"a whole number from 0 to {MAX_SEQUENCE}",
            reason="invalid_seq",
        )
    return value


def _product_type(document: dict[str, Any]) -> str:
    value = _required(document, "product_type")
    if value not in PRODUCT_TYPES:
        raise ReadingError(
            f"field 'product_type' is {value!r}; expected one of "
            f"{', '.join(PRODUCT_TYPES)} (low, medium, high quality variant)",
            reason="invalid_product_type",
        )
    return str(value)


def _measurement(document: dict[str, Any], name: str) -> float:
    value = _required(document, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReadingError(
            f"field {name!r} is {value!r}; expected a number", reason="not_a_number"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ReadingError(
            f"field {name!r} is {value!r}; expected a finite number",
            reason="non_finite",
        )

    low, high = _RANGES[name]
    if low <= number <= high:
        return number
    if name.endswith("_temperature_k") and _CELSIUS_LOOKING[0] <= number < low:
        raise ReadingError(
            f"field {name!r} is {number} K, which looks like degrees Celsius; "
            f"send kelvin ({number} °C is {number + 273.15:.2f} K)",
            reason="looks_celsius",
        )
    raise ReadingError(
        f"field {name!r} is {number}, outside the physical range {low} to {high}; "
        "check the sensor and its unit",
        reason="out_of_range",
    )
