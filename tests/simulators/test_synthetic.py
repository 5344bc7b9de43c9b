"""Synthetic machines: seeded streams, the failure rules, and fidelity to the file."""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge_agent.reading import MEASUREMENT_FIELDS, Reading, parse_reading
from simulators.ai4i import load_ai4i_rows
from simulators.fleet import encode_reading
from simulators.synthetic import (
    FAILURE_MODES,
    FILE_PROFILE,
    HEAT_DISSIPATION_FAILURE,
    OVERSTRAIN_FAILURE,
    POWER_FAILURE,
    PUBLISHED_PROFILE,
    RANDOM_FAILURE,
    TOOL_WEAR_FAILURE,
    WEAR_INCREMENT_MIN,
    Process,
    ProcessProfile,
    SyntheticFleet,
    SyntheticMachine,
    failure_modes,
    simulate_processes,
    speed_for_torque,
)

TS = "2026-12-04T15:00:00.000+00:00"
RULE_MODES = (HEAT_DISSIPATION_FAILURE, POWER_FAILURE, OVERSTRAIN_FAILURE)

# The fidelity tests draw many machines for few processes each. Every machine starts
# in the walks' stationary state, so machines are close to independent samples, while
# one long machine would revisit the same slow temperature excursion for thousands of
# processes (the walks relax over about 1,600 to 2,600 processes).
FIDELITY_MACHINES = 5_000
FIDELITY_PROCESSES = 100_000


def fixed_clock() -> str:
    return TS


def measurements(readings: list[Reading]) -> dict[str, np.ndarray]:
    return {
        name: np.array([getattr(reading, name) for reading in readings])
        for name in MEASUREMENT_FIELDS
    }


@pytest.fixture(scope="module")
def file_rows(ai4i_csv: Path) -> list[Reading]:
    """The file's rows as readings, so the same rule code applies to both."""
    return [
        Reading("plant-a", "m-001", TS, row.udi, row.product_type,
                row.air_temperature_k, row.process_temperature_k,
                row.rotational_speed_rpm, row.torque_nm, row.tool_wear_min)
        for row in load_ai4i_rows(ai4i_csv)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def file_labels(ai4i_csv: Path) -> list[str]:
    """The file's Failure Type column, in UDI order."""
    with ai4i_csv.open(encoding="utf-8-sig", newline="") as handle:
        records = sorted(csv.DictReader(handle), key=lambda record: int(record["UDI"]))
    return [record["Failure Type"] for record in records]


@pytest.fixture(scope="module")
def file_profile_processes() -> list[Process]:
    return simulate_processes(
        FIDELITY_PROCESSES,
        machines=FIDELITY_MACHINES,
        seed=2020,
        profile=FILE_PROFILE,
        clock=fixed_clock,
    )


def test_synthetic_fleet_same_seed_same_readings() -> None:
    first = simulate_processes(2_000, machines=20, seed=11, clock=fixed_clock)
    second = simulate_processes(2_000, machines=20, seed=11, clock=fixed_clock)

    assert first == second


def test_synthetic_fleet_other_seed_differs() -> None:
    first = simulate_processes(200, machines=20, seed=11, clock=fixed_clock)
    second = simulate_processes(200, machines=20, seed=12, clock=fixed_clock)

    assert [p.reading for p in first] != [p.reading for p in second]


def test_synthetic_machine_ignores_fleet_size() -> None:
    small = simulate_processes(300, machines=3, seed=4, clock=fixed_clock)
    large = simulate_processes(500, machines=5, seed=4, clock=fixed_clock)

    def first_machine(processes: list[Process]) -> list[Process]:
        return [p for p in processes if p.reading.machine_id == "m-001"]

    assert first_machine(small) == first_machine(large)


def test_synthetic_fleet_deals_machines_in_turn() -> None:
    processes = simulate_processes(9, machines=3, seed=1, clock=fixed_clock)

    assert [p.reading.machine_id for p in processes] == ["m-001", "m-002", "m-003"] * 3
    assert [p.reading.machine_seq for p in processes] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_synthetic_readings_pass_validation() -> None:
    fleet = SyntheticFleet(machines=4, site="plant-a", seed=3)
    stream = fleet.processes()

    for _ in range(2_000):
        reading = next(stream).reading
        assert parse_reading(encode_reading(reading)) == reading


def test_synthetic_failures_follow_rules() -> None:
    processes = simulate_processes(50_000, machines=50, seed=8, clock=fixed_clock)

    for process in processes:
        by_rule = failure_modes(process.reading)
        for mode in RULE_MODES:
            assert (mode in process.failures) == (mode in by_rule), process
        if TOOL_WEAR_FAILURE in process.failures:
            assert process.tool_replaced, process
    assert sum(p.tool_replaced for p in processes) > 0


def test_synthetic_tool_wear_grows_by_type() -> None:
    processes = simulate_processes(20_000, machines=10, seed=9, clock=fixed_clock)
    by_machine: dict[str, list[Process]] = {}
    for process in processes:
        by_machine.setdefault(process.reading.machine_id, []).append(process)

    changes = 0
    for history in by_machine.values():
        for before, after in zip(history, history[1:], strict=False):
            if before.tool_replaced:
                changes += 1
                assert after.reading.tool_wear_min == 0.0
            else:
                increment = WEAR_INCREMENT_MIN[before.reading.product_type]
                assert (
                    after.reading.tool_wear_min
                    == before.reading.tool_wear_min + increment
                )
    assert changes > 100


def test_synthetic_published_replacement_wear_in_window() -> None:
    processes = simulate_processes(50_000, machines=50, seed=10, clock=fixed_clock)

    wear = [p.reading.tool_wear_min for p in processes if p.tool_replaced]

    assert len(wear) > 300
    # The tool is changed on the first process at or above a wear drawn from
    # 200 to 240 min, so the recorded wear may overshoot by less than one H step.
    assert min(wear) >= 200.0
    assert max(wear) < 240.0 + WEAR_INCREMENT_MIN["H"]


def test_synthetic_fleet_counts_failures() -> None:
    fleet = SyntheticFleet(machines=10, site="plant-a", seed=6, clock=fixed_clock)
    stream = fleet.processes()
    processes = [next(stream) for _ in range(20_000)]

    expected = Counter(mode for process in processes for mode in process.failures)

    assert fleet.failure_counts() == {mode: expected[mode] for mode in FAILURE_MODES}
    assert fleet.process_count == 20_000
    assert all(count > 0 for count in fleet.failure_counts().values())


HOT_AND_SLOW = {"process_temperature_k": 308.5, "rotational_speed_rpm": 1379.0}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ()),
        # 8.5 K between process and air at 1,379 rpm: heat dissipation.
        (HOT_AND_SLOW, (HEAT_DISSIPATION_FAILURE,)),
        ({**HOT_AND_SLOW, "rotational_speed_rpm": 1380.0}, ()),
        # 10 Nm at 3,000 rpm is 3,142 W; 60 Nm at 1,500 rpm is 9,425 W.
        ({"torque_nm": 10.0, "rotational_speed_rpm": 3000.0}, (POWER_FAILURE,)),
        ({"torque_nm": 60.0, "rotational_speed_rpm": 1500.0}, (POWER_FAILURE,)),
        # 200 min at 56 Nm is 11,200 min Nm: over the L limit, under the M one.
        ({"tool_wear_min": 200.0, "torque_nm": 56.0}, (OVERSTRAIN_FAILURE,)),
        ({"tool_wear_min": 200.0, "torque_nm": 56.0, "product_type": "M"}, ()),
        # 220 min at 60 Nm is 13,200 min Nm, over the H limit; 60 Nm at 1,300 rpm is
        # 8,168 W, inside the power band.
        (
            {
                "tool_wear_min": 220.0,
                "torque_nm": 60.0,
                "product_type": "H",
                "rotational_speed_rpm": 1300.0,
            },
            (OVERSTRAIN_FAILURE,),
        ),
    ],
)
def test_failure_modes_applies_published_rules(
    fields: dict[str, object], expected: tuple[str, ...]
) -> None:
    values: dict[str, object] = {
        "site": "plant-a", "machine_id": "m-001", "ts": TS, "machine_seq": 0,
        "product_type": "L", "air_temperature_k": 300.0,
        "process_temperature_k": 310.0, "rotational_speed_rpm": 1500.0,
        "torque_nm": 40.0, "tool_wear_min": 0.0,
    }  # fmt: skip
    values.update(fields)

    assert failure_modes(Reading(**values)) == expected  # type: ignore[arg-type]


def test_failure_modes_passes_drawn_modes() -> None:
    reading = Reading("plant-a", "m-001", TS, 0, "L", 300.0, 310.0, 1500.0, 40.0, 0.0)

    modes = failure_modes(reading, tool_fails=True, fails_at_random=True)

    assert modes == (TOOL_WEAR_FAILURE, RANDOM_FAILURE)


def test_failure_modes_reproduce_file_labels(
    file_rows: list[Reading], file_labels: list[str]
) -> None:
    # The file has one label per row. Every row labelled with a rule's mode meets
    # that rule, and no row that meets a rule is labelled "No Failure".
    for reading, label in zip(file_rows, file_labels, strict=True):
        modes = failure_modes(reading)
        if label in RULE_MODES:
            assert label in modes, (reading, label)
        if modes:
            assert label != "No Failure", (reading, modes)


@pytest.mark.parametrize(
    ("torque_nm", "speed_rpm"),
    [(0.0, 2840.0), (5.3, 2840.0), (40.0, 1500.0), (69.2, 1283.0), (90.0, 1283.0)],
)
def test_speed_for_torque_interpolates_curve(
    torque_nm: float, speed_rpm: float
) -> None:
    # 40 Nm lies between the knots (38.6, 1516) and (41.5, 1482).
    assert speed_for_torque(torque_nm) == pytest.approx(speed_rpm, abs=1.0)


def test_process_profile_rejects_impossible_correlation() -> None:
    profile = ProcessProfile(
        name="broken",
        type_weights=(0.6, 0.3, 0.1),
        replacement_wear="uniform",
        replacement_wear_params_min=(200.0, 240.0),
        random_failure_probability=0.001,
        delta_air_correlation=-1.0,
    )

    with pytest.raises(
        ValueError,
        match="delta_air_correlation is -1.0; expected a magnitude below 1.00",
    ):
        SyntheticMachine(machine_id="m-001", site="plant-a", seed=0, profile=profile)


# Tolerances of the fidelity tests, for the file profile against the shipped file:
# - Torque and speed are drawn afresh in every row, so their means may differ by
#   3 standard errors of the difference of two independent means.
# - The temperatures are walks. The file's one walk was normalised to 300 K and
#   2 K, and the synthetic fleet's mean has a standard error near 0.05 K, so 0.2 K.
# - Tool wear is correlated along each of the file's 119 tools: 3 min.
# - Standard deviations: 5 % for torque, speed and wear, 10 % for the walks.
# - Failure rates: 3 standard errors of the difference of two Poisson rates.
MEAN_TOLERANCE = {
    "air_temperature_k": 0.2,
    "process_temperature_k": 0.2,
    "tool_wear_min": 3.0,
}
STD_TOLERANCE = {
    "air_temperature_k": 0.10,
    "process_temperature_k": 0.10,
    "rotational_speed_rpm": 0.05,
    "torque_nm": 0.05,
    "tool_wear_min": 0.05,
}


def independent_mean_tolerance(std: float) -> float:
    return 3.0 * std * math.sqrt(1 / 10_000 + 1 / FIDELITY_PROCESSES)


@pytest.mark.parametrize("name", MEASUREMENT_FIELDS)
def test_synthetic_file_profile_matches_file_measurements(
    name: str, file_rows: list[Reading], file_profile_processes: list[Process]
) -> None:
    real = measurements(file_rows)[name]
    simulated = measurements([p.reading for p in file_profile_processes])[name]

    tolerance = MEAN_TOLERANCE.get(name) or independent_mean_tolerance(real.std())
    assert abs(simulated.mean() - real.mean()) <= tolerance, (
        simulated.mean(),
        real.mean(),
    )
    assert simulated.std() == pytest.approx(real.std(), rel=STD_TOLERANCE[name])


@pytest.mark.parametrize("mode", FAILURE_MODES)
def test_synthetic_file_profile_matches_file_failure_rates(
    mode: str,
    file_rows: list[Reading],
    file_labels: list[str],
    file_profile_processes: list[Process],
) -> None:
    # Rule modes are counted by their rule, because the file's single label names
    # only one of the modes a row triggers. Drawn modes are counted by their label.
    if mode in RULE_MODES:
        real_count = sum(mode in failure_modes(reading) for reading in file_rows)
    else:
        real_count = file_labels.count(mode)
    simulated_count = sum(mode in p.failures for p in file_profile_processes)

    real_rate = real_count / len(file_rows)
    simulated_rate = simulated_count / len(file_profile_processes)
    standard_error = math.sqrt(
        real_count / len(file_rows) ** 2
        + simulated_count / len(file_profile_processes) ** 2
    )
    assert abs(simulated_rate - real_rate) <= 3 * standard_error, (
        simulated_rate,
        real_rate,
    )


def test_synthetic_file_profile_matches_file_types(
    file_rows: list[Reading], file_profile_processes: list[Process]
) -> None:
    real = Counter(reading.product_type for reading in file_rows)
    simulated = Counter(p.reading.product_type for p in file_profile_processes)

    for product_type in ("L", "M", "H"):
        real_share = real[product_type] / len(file_rows)
        simulated_share = simulated[product_type] / len(file_profile_processes)
        assert simulated_share == pytest.approx(real_share, abs=0.02), product_type


def test_synthetic_published_profile_follows_description(
    file_rows: list[Reading],
) -> None:
    processes = simulate_processes(
        FIDELITY_PROCESSES,
        machines=FIDELITY_MACHINES,
        seed=2021,
        profile=PUBLISHED_PROFILE,
        clock=fixed_clock,
    )
    real = measurements(file_rows)
    simulated = measurements([p.reading for p in processes])
    types = Counter(p.reading.product_type for p in processes)

    assert types["L"] / len(processes) == pytest.approx(0.5, abs=0.01)
    assert types["M"] / len(processes) == pytest.approx(0.3, abs=0.01)
    assert types["H"] / len(processes) == pytest.approx(0.2, abs=0.01)
    for name in ("air_temperature_k", "process_temperature_k"):
        assert abs(simulated[name].mean() - real[name].mean()) <= MEAN_TOLERANCE[name]
    for name in ("rotational_speed_rpm", "torque_nm"):
        tolerance = independent_mean_tolerance(real[name].std())
        assert abs(simulated[name].mean() - real[name].mean()) <= tolerance, name
    # Independent walks of 2 K and 1 K give the process temperature sqrt(5) K.
    assert simulated["process_temperature_k"].std() == pytest.approx(
        math.sqrt(5), rel=0.1
    )
    delta = simulated["process_temperature_k"] - simulated["air_temperature_k"]
    assert delta.mean() == pytest.approx(10.0, abs=0.1)
    assert delta.std() == pytest.approx(1.0, rel=0.1)
    # Tools changed at 200 to 240 min: the wear is uniform up to a mean near 221 min.
    assert simulated["tool_wear_min"].mean() == pytest.approx(221 / 2, abs=3.0)


def test_fleet_logs_failures_unless_told_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="simulators.synthetic")
    fleet = SyntheticFleet(machines=20, site="s", seed=11, clock=fixed_clock)
    stream = fleet.processes()
    failed = sum(bool(next(stream).failures) for _ in range(2_000))
    logged = [
        record for record in caplog.records if "ground truth" in record.getMessage()
    ]

    assert failed > 0
    assert len(logged) == failed

    caplog.clear()
    simulate_processes(2_000, machines=20, seed=11, clock=fixed_clock)

    assert not [
        record for record in caplog.records if "ground truth" in record.getMessage()
    ]
