"""Replay of AI4I rows as the telemetry of a fleet of machines."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from edge_agent.reading import Reading, telemetry_topic
from simulators.ai4i import Ai4iRow
from simulators.fleet import Clock, machine_id, utc_timestamp


def plan_replay(
    rows: Iterable[Ai4iRow],
    *,
    machines: int,
    site: str,
    clock: Clock = utc_timestamp,
) -> Iterator[tuple[str, Reading]]:
    """Yield (topic, reading) for each row, in publish order.

    Rows are dealt out in UDI order like cards: the k-th row (0-based) goes to machine
    ``k % machines`` as that machine's seq ``k // machines``. For the shipped file,
    whose UDIs run from 1 to 10,000, k is UDI - 1. The function is pure apart from
    ``clock``, which stamps each reading as it is yielded, so a test can rebuild
    which row went to which (machine, seq).

    Args:
        rows: AI4I rows in any order; they are sorted by UDI first.
        machines: the number of machines, 1 or more.
        site: the site id that goes into every topic and payload.
        clock: returns the timestamp of the next reading; by default the current
            time in UTC.
    """
    if machines < 1:
        raise ValueError(f"machines is {machines}; expected 1 or more")

    ordered = sorted(rows, key=lambda row: row.udi)
    machine_ids = [machine_id(index) for index in range(machines)]
    for position, row in enumerate(ordered):
        machine = machine_ids[position % machines]
        reading = Reading(
            site=site,
            machine_id=machine,
            ts=clock(),
            machine_seq=position // machines,
            product_type=row.product_type,
            air_temperature_k=row.air_temperature_k,
            process_temperature_k=row.process_temperature_k,
            rotational_speed_rpm=row.rotational_speed_rpm,
            torque_nm=row.torque_nm,
            tool_wear_min=row.tool_wear_min,
        )
        yield telemetry_topic(site, machine), reading
