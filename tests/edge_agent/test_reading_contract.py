"""The reading contract: topics, payload decoding and validation messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_agent.reading import (
    MAX_PAYLOAD_BYTES,
    Reading,
    ReadingError,
    alert_topic,
    excerpt,
    parse_reading,
    parse_topic,
    telemetry_subscription,
    telemetry_topic,
)

GOOD: dict[str, Any] = {
    "site": "plant-a",
    "machine_id": "m-001",
    "ts": "2026-12-04T15:00:00.123+00:00",
    "seq": 17,
    "product_type": "M",
    "air_temperature_k": 298.1,
    "process_temperature_k": 308.6,
    "rotational_speed_rpm": 1551,
    "torque_nm": 42.8,
    "tool_wear_min": 0,
}
TOPIC = "edgepm/plant-a/m-001/telemetry"


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def with_field(name: str, value: Any) -> bytes:
    return encode({**GOOD, name: value})


def test_parse_reading_good_payload() -> None:
    reading = parse_reading(encode(GOOD), TOPIC)

    assert reading.machine_id == "m-001"
    assert reading.machine_seq == 17
    assert reading.rotational_speed_rpm == 1551.0
    assert isinstance(reading.tool_wear_min, float)


def test_parse_reading_round_trips_payload() -> None:
    reading = parse_reading(encode(GOOD), TOPIC)

    assert parse_reading(encode(reading.to_payload()), TOPIC) == reading


def test_parse_reading_accepts_z_suffix() -> None:
    reading = parse_reading(with_field("ts", "2026-12-04T15:00:00Z"))

    assert reading.ts == "2026-12-04T15:00:00Z"


def test_parse_reading_ignores_unknown_fields() -> None:
    reading = parse_reading(with_field("firmware", "1.2.3"))

    assert isinstance(reading, Reading)


BAD_PAYLOADS = [
    ("not json", b"temperature=300", "not JSON"),
    ("not utf8", b'{"site": "\xff\xfe"}', "not UTF-8"),
    ("json array", encode([GOOD]), "JSON array, expected a JSON object"),
    (
        "missing field",
        encode({k: v for k, v in GOOD.items() if k != "torque_nm"}),
        "'torque_nm' is missing",
    ),
    ("string for number", with_field("torque_nm", "42.8"), "expected a number"),
    ("boolean for number", with_field("torque_nm", True), "expected a number"),
    ("nan token", encode(GOOD).replace(b"42.8", b"NaN"), "non-standard JSON token NaN"),
    (
        "infinity token",
        encode(GOOD).replace(b"42.8", b"Infinity"),
        "non-standard JSON token Infinity",
    ),
    ("negative torque", with_field("torque_nm", -3.0), "outside the physical range"),
    ("celsius", with_field("air_temperature_k", 25.0), "looks like degrees Celsius"),
    (
        "unknown product type",
        with_field("product_type", "X"),
        "expected one of L, M, H",
    ),
    ("naive timestamp", with_field("ts", "2026-12-04T15:00:00"), "no UTC offset"),
    ("bad timestamp", with_field("ts", "yesterday"), "not an ISO 8601 timestamp"),
    ("unset clock", with_field("ts", "1970-01-01T00:00:00Z"), "outside the years"),
    ("far future", with_field("ts", "9999-12-31T23:59:59-14:00"), "outside the years"),
    (
        "before year 1 in utc",
        with_field("ts", "0001-01-01T00:00:00+12:00"),
        "outside the years",
    ),
    ("negative seq", with_field("seq", -1), "a whole number from 0"),
    ("huge seq", with_field("seq", 2**63), "a whole number from 0"),
    ("float seq", with_field("seq", 1.5), "a whole number from 0"),
    ("empty", b"", "payload is empty"),
    ("bad machine id", with_field("machine_id", "m/1"), "field 'machine_id'"),
    ("one megabyte", b'{"pad": "' + b"x" * (1 << 20) + b'"}', "over the limit"),
]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [case[1:] for case in BAD_PAYLOADS],
    ids=[case[0] for case in BAD_PAYLOADS],
)
def test_parse_reading_rejects_bad_payload(payload: bytes, reason: str) -> None:
    with pytest.raises(ReadingError, match=reason):
        parse_reading(payload, TOPIC)


def test_parse_reading_rejects_topic_mismatch() -> None:
    with pytest.raises(ReadingError, match="arrived on topic"):
        parse_reading(encode(GOOD), "edgepm/plant-a/m-002/telemetry")


def test_parse_reading_celsius_message_gives_kelvin() -> None:
    with pytest.raises(ReadingError, match=r"298\.15 K"):
        parse_reading(with_field("air_temperature_k", 25.0))


def test_parse_topic_rejects_other_topics() -> None:
    with pytest.raises(ReadingError, match="not a telemetry topic"):
        parse_topic("edgepm/plant-a/m-001/alert")


def test_topics_follow_scheme() -> None:
    assert telemetry_topic("plant-a", "m-001") == TOPIC
    assert parse_topic(TOPIC) == ("plant-a", "m-001")
    assert telemetry_subscription("plant-a") == "edgepm/plant-a/+/telemetry"
    assert alert_topic("plant-a", "m-001") == "edgepm/plant-a/m-001/alert"


def test_excerpt_is_bounded() -> None:
    text = excerpt(b"y" * MAX_PAYLOAD_BYTES * 64)

    assert len(text) < 400
    assert text.endswith(f"({MAX_PAYLOAD_BYTES * 64} bytes in all)")


def test_excerpt_escapes_invalid_utf8() -> None:
    assert excerpt(b"ab\xffcd") == "ab\\xffcd"
