"""Strict parsing of the JSON request bodies into storage records.

A body is checked completely before anything touches the database, and the first
problem found becomes a 400 that names the record's index, the field and the fix.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from control_plane.api.errors import ApiError, PayloadError
from control_plane.storage.records import (
    FLEET_SCOPE,
    MAX_MODEL_VERSION,
    AlertRecord,
    Heartbeat,
    IngestBatch,
    PredictionRecord,
    QuarantineRecord,
    ReadingRecord,
)
from edge_agent.reading import (
    IDENTIFIER_PATTERN,
    MEASUREMENT_FIELDS,
    ReadingError,
    validate_reading,
)

# Body limits per endpoint, in bytes. An ingest batch of 10,000 readings with their
# predictions is about 5 MB of JSON.
MAX_INGEST_BYTES = 32 * 1024 * 1024
MAX_SMALL_BODY_BYTES = 64 * 1024

# Counters use 64-bit columns on both backends.
_MAX_COUNTER = 2**63 - 1

# The text form of uuid.uuid4() that an agent writes into its SQLite file.
_STORE_ID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_INGEST_FIELDS = (
    "agent_id",
    "site",
    "store_id",
    "readings",
    "predictions",
    "quarantine",
    "alerts",
)
_DIGITS_PATTERN = re.compile(r"[0-9]{1,10}")
_ALERT_STATES = ("raised", "cleared")
_MAX_LABEL_CHARS = 64
_MAX_TOPIC_CHARS = 1024
_MAX_TEXT_CHARS = 4096
_MAX_COUNTER_KEYS = 64

T = TypeVar("T")


async def read_json(
    request: web.Request,
    *,
    max_bytes: int,
    subject: str = "request body",
    fix: str = "send smaller batches",
) -> dict[str, Any]:
    """Read a request body of at most ``max_bytes`` as one JSON object.

    Args:
        request: the request to read.
        max_bytes: the largest body accepted.
        subject: what the body is, for the 413 message.
        fix: what the client should do instead, for the 413 message.

    Raises:
        ApiError: 413 when the body is larger than the limit.
        PayloadError: the body is not a UTF-8 JSON object.
    """
    body = await read_body(request, max_bytes=max_bytes, subject=subject, fix=fix)
    return decode_json_object(body)


async def read_body(
    request: web.Request,
    *,
    max_bytes: int,
    subject: str = "request body",
    fix: str = "send smaller batches",
) -> bytes:
    """Read a request body of at most ``max_bytes``.

    Raises:
        ApiError: 413 when the body is larger than the limit. ``subject`` and
            ``fix`` word its message as in ``read_json``.
    """
    size = request.content_length
    if size is not None and size > max_bytes:
        raise _too_large(size, max_bytes, subject=subject, fix=fix)
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body.extend(chunk)
        if len(body) > max_bytes:
            raise _too_large(len(body), max_bytes, subject=subject, fix=fix)
    return bytes(body)


def decode_json_object(body: bytes) -> dict[str, Any]:
    """Decode a body as a JSON object with finite numbers only.

    Raises:
        PayloadError: the body is empty, not UTF-8, not JSON or not an object.
    """
    if not body:
        raise PayloadError("request body is empty; send a JSON object")
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise PayloadError(
            f"request body is not UTF-8 (invalid byte at offset {exc.start}); "
            "encode the JSON as UTF-8"
        ) from exc
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"request body is not JSON: {exc}; send a JSON object"
        ) from exc
    if not isinstance(document, dict):
        raise PayloadError(
            f"request body is a JSON {type(document).__name__}, expected a JSON object"
        )
    return document


def parse_ingest(document: dict[str, Any]) -> IngestBatch:
    """Validate an ingest body and return it as a batch of records.

    Raises:
        PayloadError: a field is missing, of the wrong type or out of range.
    """
    # An unknown key is most likely a misspelled record list, whose records would
    # otherwise be dropped without a word.
    unknown = sorted(set(document) - set(_INGEST_FIELDS))
    if unknown:
        raise PayloadError(
            f"batch: unknown field(s) {', '.join(map(repr, unknown))}; expected only "
            f"{', '.join(_INGEST_FIELDS)}"
        )
    agent_id = _identifier(document, "agent_id", "batch")
    site = _identifier(document, "site", "batch")
    store_id = _store_id(document, "batch")
    return IngestBatch(
        agent_id=agent_id,
        site=site,
        store_id=store_id,
        readings=_records(
            document, "readings", "seq", lambda r, w: _reading(r, w, site)
        ),
        predictions=_records(
            document, "predictions", ("reading_seq", "model_version"), _prediction
        ),
        quarantine=_records(document, "quarantine", "seq", _quarantine),
        alerts=_records(document, "alerts", "seq", _alert),
    )


def parse_heartbeat(document: dict[str, Any]) -> Heartbeat:
    """Validate a heartbeat body.

    Raises:
        PayloadError: a field is missing, of the wrong type or out of range.
    """
    where = "heartbeat"
    model_version = document.get("model_version")
    if model_version is not None:
        model_version = _integer(
            document, "model_version", where, minimum=1, maximum=MAX_MODEL_VERSION
        )
    started_at = None
    if document.get("started_at") is not None:
        started_at = _timestamp(document, "started_at", where)
    return Heartbeat(
        agent_id=_identifier(document, "agent_id", where),
        site=_identifier(document, "site", where),
        store_id=_store_id(document, where),
        sent_at=_timestamp(document, "sent_at", where),
        started_at=started_at,
        model_version=model_version,
        backlog=_counters(document, "backlog", where),
        counters=_counters(document, "counters", where),
    )


def parse_deployment(document: dict[str, Any]) -> tuple[int, str]:
    """Validate a deployment body: ``{"version": N, "scope": "*" or a site}``.

    Raises:
        PayloadError: the version or scope is invalid.
    """
    version = _integer(
        document, "version", "deployment", minimum=1, maximum=MAX_MODEL_VERSION
    )
    scope = _required(document, "scope", "deployment")
    if scope != FLEET_SCOPE and not (
        isinstance(scope, str) and IDENTIFIER_PATTERN.match(scope)
    ):
        raise PayloadError(
            f"deployment: field 'scope' is {scope!r}; expected '*' for the whole "
            "fleet or a site name"
        )
    return version, scope


def parse_site(value: str | None) -> str | None:
    """Validate an optional ``site`` query parameter.

    Raises:
        PayloadError: the value is not a site name.
    """
    if value is None:
        return None
    if not IDENTIFIER_PATTERN.match(value):
        raise PayloadError(
            f"query parameter site={value!r} is not a site name; expected 1 to 64 "
            "letters, digits, '_', '.' or '-'"
        )
    return value


def parse_version(value: str | None, name: str = "version") -> int | None:
    """Validate an optional model version given in a path or query string.

    Raises:
        PayloadError: the value is not a positive whole number.
    """
    if value is None:
        return None
    # str.isdigit would let through digits such as '²' that int() rejects.
    if not _DIGITS_PATTERN.fullmatch(value) or not 1 <= int(value) <= MAX_MODEL_VERSION:
        raise PayloadError(
            f"{name}={value!r} is not a model version; expected a whole number from "
            f"1 to {MAX_MODEL_VERSION} as listed at GET /api/v1/models"
        )
    return int(value)


def _records(
    document: dict[str, Any],
    name: str,
    key: str | tuple[str, ...],
    parse: Callable[[Any, str], T],
) -> tuple[T, ...]:
    items = document.get(name, [])
    if not isinstance(items, list):
        raise PayloadError(
            f"batch: field {name!r} is a JSON {type(items).__name__}; expected a list "
            "of records (or leave it out)"
        )
    records: list[T] = []
    seen: dict[Any, int] = {}
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        if not isinstance(item, dict):
            raise PayloadError(f"{where} is {item!r}; expected a JSON object")
        record = parse(item, where)
        identity = (
            getattr(record, key)
            if isinstance(key, str)
            else tuple(getattr(record, part) for part in key)
        )
        if identity in seen:
            raise PayloadError(
                f"{where} repeats {key} {identity!r} of {name}[{seen[identity]}]; "
                "send each record once per batch"
            )
        seen[identity] = index
        records.append(record)
    return tuple(records)


def _reading(item: dict[str, Any], where: str, site: str) -> ReadingRecord:
    seq = _integer(item, "seq", where)
    machine_seq = _integer(item, "machine_seq", where)
    if item.get("site", site) != site:
        raise PayloadError(
            f"{where}: field 'site' is {item['site']!r} but the batch is from site "
            f"{site!r}; an agent uploads the readings of its own site only"
        )
    received_at = _timestamp(item, "received_at", where)
    # The reading contract's own checks, so the control plane accepts exactly the
    # readings an agent accepts. Its field for the machine's counter is 'seq'.
    contract: dict[str, Any] = {
        **{
            name: item[name]
            for name in ("machine_id", "ts", "product_type")
            if name in item
        },
        **{name: item[name] for name in MEASUREMENT_FIELDS if name in item},
        "site": site,
        "seq": machine_seq,
    }
    try:
        reading = validate_reading(contract)
    except ReadingError as exc:
        raise PayloadError(f"{where}: {exc}") from exc
    return ReadingRecord(
        seq=seq,
        received_at=received_at,
        machine_id=reading.machine_id,
        machine_seq=machine_seq,
        ts=_timestamp(item, "ts", where),
        product_type=reading.product_type,
        air_temperature_k=reading.air_temperature_k,
        process_temperature_k=reading.process_temperature_k,
        rotational_speed_rpm=reading.rotational_speed_rpm,
        torque_nm=reading.torque_nm,
        tool_wear_min=reading.tool_wear_min,
    )


def _prediction(item: dict[str, Any], where: str) -> PredictionRecord:
    label = _integer(item, "failure_label", where)
    if label not in (0, 1):
        raise PayloadError(
            f"{where}: field 'failure_label' is {label}; expected 0 or 1"
        )
    return PredictionRecord(
        reading_seq=_integer(item, "reading_seq", where),
        model_version=_integer(
            item, "model_version", where, minimum=1, maximum=MAX_MODEL_VERSION
        ),
        failure_probability=_probability(item, "failure_probability", where),
        failure_label=label,
        risk_band=_text(item, "risk_band", where, _MAX_LABEL_CHARS),
        failure_type=_text(item, "failure_type", where, _MAX_LABEL_CHARS),
        failure_type_probability=_probability(item, "failure_type_probability", where),
    )


def _quarantine(item: dict[str, Any], where: str) -> QuarantineRecord:
    return QuarantineRecord(
        seq=_integer(item, "seq", where),
        received_at=_timestamp(item, "received_at", where),
        topic=_text(item, "topic", where, _MAX_TOPIC_CHARS, allow_empty=True),
        reason=_text(item, "reason", where, _MAX_TEXT_CHARS),
        excerpt=_text(item, "excerpt", where, _MAX_TEXT_CHARS, allow_empty=True),
        size_bytes=_integer(item, "size_bytes", where),
    )


def _alert(item: dict[str, Any], where: str) -> AlertRecord:
    state = _required(item, "state", where)
    if state not in _ALERT_STATES:
        raise PayloadError(
            f"{where}: field 'state' is {state!r}; expected 'raised' or 'cleared'"
        )
    return AlertRecord(
        seq=_integer(item, "seq", where),
        machine_id=_identifier(item, "machine_id", where),
        ts=_timestamp(item, "ts", where),
        state=state,
        failure_probability=_probability(item, "failure_probability", where),
        risk_band=_text(item, "risk_band", where, _MAX_LABEL_CHARS),
        failure_type=_text(item, "failure_type", where, _MAX_LABEL_CHARS),
        model_version=_integer(
            item, "model_version", where, minimum=1, maximum=MAX_MODEL_VERSION
        ),
        reading_seq=_integer(item, "reading_seq", where),
    )


def _required(document: dict[str, Any], name: str, where: str) -> Any:
    if name not in document:
        raise PayloadError(f"{where}: field {name!r} is missing; it is required")
    return document[name]


def _identifier(document: dict[str, Any], name: str, where: str) -> str:
    value = _required(document, name, where)
    if not isinstance(value, str) or not IDENTIFIER_PATTERN.match(value):
        raise PayloadError(
            f"{where}: field {name!r} is {value!r}; expected 1 to 64 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return value


def _store_id(document: dict[str, Any], where: str) -> str:
    value = _required(document, "store_id", where)
    if not isinstance(value, str) or not _STORE_ID_PATTERN.fullmatch(value):
        raise PayloadError(
            f"{where}: field 'store_id' is {value!r}; expected a UUID such as "
            "'0b9d6f0e-5c1a-4e8b-9f3d-2a7c1e4b6d80', which an agent creates with "
            "its SQLite file"
        )
    return value


def _integer(
    document: dict[str, Any],
    name: str,
    where: str,
    *,
    minimum: int = 0,
    maximum: int = _MAX_COUNTER,
) -> int:
    value = _required(document, name, where)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PayloadError(
            f"{where}: field {name!r} is {value!r}; expected a whole number of at "
            f"least {minimum}"
        )
    if value > maximum:
        raise PayloadError(f"{where}: field {name!r} is {value}, above {maximum}")
    return value


def _probability(document: dict[str, Any], name: str, where: str) -> float:
    value = _required(document, name, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PayloadError(f"{where}: field {name!r} is {value!r}; expected a number")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise PayloadError(
            f"{where}: field {name!r} is {value!r}; expected a probability from 0 to 1"
        )
    return float(value)


def _text(
    document: dict[str, Any],
    name: str,
    where: str,
    max_chars: int,
    *,
    allow_empty: bool = False,
) -> str:
    value = _required(document, name, where)
    if not isinstance(value, str):
        raise PayloadError(f"{where}: field {name!r} is {value!r}; expected a string")
    if not value and not allow_empty:
        raise PayloadError(f"{where}: field {name!r} is empty; expected a name")
    if len(value) > max_chars:
        raise PayloadError(
            f"{where}: field {name!r} has {len(value)} characters, over the limit of "
            f"{max_chars}; shorten it"
        )
    return value


def _timestamp(document: dict[str, Any], name: str, where: str) -> dt.datetime:
    value = _required(document, name, where)
    parsed = None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is not None and parsed.utcoffset() is not None:
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError:  # 0001-01-01T00:00+12:00 is before year 1 in UTC
            pass
    raise PayloadError(
        f"{where}: field {name!r} is {value!r}; expected an ISO 8601 timestamp "
        "with a UTC offset that falls within years 1 to 9999 in UTC, "
        "e.g. 2026-01-31T08:00:00.000+00:00"
    )


def _counters(document: dict[str, Any], name: str, where: str) -> dict[str, int]:
    value = document.get(name, {})
    if not isinstance(value, dict) or len(value) > _MAX_COUNTER_KEYS:
        raise PayloadError(
            f"{where}: field {name!r} is {value!r}; expected an object of at most "
            f'{_MAX_COUNTER_KEYS} counts, e.g. {{"readings": 0}}'
        )
    counters = {}
    for key in value:
        if len(key) > _MAX_LABEL_CHARS:
            raise PayloadError(
                f"{where}: {name} key {key[:80]!r} is longer than {_MAX_LABEL_CHARS} "
                "characters; use a short counter name"
            )
        counters[key] = _integer(value, key, f"{where}.{name}")
    return counters


def _reject_constant(token: str) -> float:
    raise PayloadError(
        f"request body contains the non-standard JSON token {token}; send finite "
        "numbers only"
    )


def _too_large(size: int, limit: int, *, subject: str, fix: str) -> ApiError:
    return ApiError(
        413,
        f"{subject} is too large: {size} bytes, over this endpoint's limit of "
        f"{limit} bytes; {fix}",
    )
