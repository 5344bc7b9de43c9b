"""Tests for the label-consistency report, the failure rules and the label policy."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from control_plane.data import NO_FAILURE, Dataset
from control_plane.training.labels import (
    HEAT_DISSIPATION_FAILURE,
    ORACLE_THRESHOLD,
    OVERSTRAIN_FAILURE,
    POWER_FAILURE,
    LabelPolicy,
    heat_boundary_rows,
    label_consistency,
    rule_flags,
    rule_oracle_scores,
    rule_oracle_types,
    type_labels,
)
from control_plane.training.metrics import failure_metrics
from edge_agent.reading import MEASUREMENT_FIELDS
from simulators.synthetic import PUBLISHED_PROFILE, SyntheticMachine, failure_modes


def read_published(ai4i_csv: Path) -> pd.DataFrame:
    return pd.read_csv(ai4i_csv, encoding="utf-8-sig")


def test_label_consistency_finds_known_rows(
    ai4i_dataset: Dataset, ai4i_csv: Path
) -> None:
    source = read_published(ai4i_csv)
    no_type = source[(source["Target"] == 1) & (source["Failure Type"] == NO_FAILURE)]
    no_failure = source[
        (source["Target"] == 0) & (source["Failure Type"] != NO_FAILURE)
    ]

    report = label_consistency(ai4i_dataset)

    assert report["rows"] == 10_000
    assert report["failure_without_type"]["count"] == 9
    assert report["type_without_failure"]["count"] == 18
    assert report["failure_without_type"]["udi"] == [str(u) for u in no_type["UDI"]]
    assert report["type_without_failure"]["udi"] == [str(u) for u in no_failure["UDI"]]
    assert report["failure_without_type"]["udi"][:3] == ["1438", "2750", "4045"]
    assert set(no_failure["Failure Type"]) == {"Random Failures"}
    rows = report["type_without_failure"]["rows"]
    assert list(source.loc[[row - 1 for row in rows], "UDI"]) == list(no_failure["UDI"])


def test_label_consistency_counts_overlapping_rules(ai4i_dataset: Dataset) -> None:
    report = label_consistency(ai4i_dataset)

    several = report["several_rules"]
    assert several["count"] == 21
    assert several["recorded_types"] == {
        "Heat Dissipation Failure + Overstrain Failure": {HEAT_DISSIPATION_FAILURE: 6},
        "Heat Dissipation Failure + Power Failure": {POWER_FAILURE: 3},
        "Power Failure + Overstrain Failure": {POWER_FAILURE: 12},
    }
    # Evaluated as the generator did, the rules agree with every recorded label.
    assert report["rule_without_failure"]["count"] == 0
    assert report["rule_type_without_rule"]["count"] == 0
    assert report["rules"] == {
        HEAT_DISSIPATION_FAILURE: 115,
        POWER_FAILURE: 95,
        OVERSTRAIN_FAILURE: 98,
    }
    assert report["heat_boundary"]["count"] == 27


def test_rule_flags_match_simulator_rules() -> None:
    machine = SyntheticMachine(
        machine_id="m-1", site="test", seed=7, profile=PUBLISHED_PROFILE
    )
    processes = [machine.next_process("2026-01-01T00:00:00+00:00") for _ in range(3000)]
    readings = [process.reading for process in processes]
    features = pd.DataFrame({"product_type": [r.product_type for r in readings]})
    for name in MEASUREMENT_FIELDS:
        features[name] = np.array([getattr(r, name) for r in readings], np.float64)
    rng = random.Random(3)
    # Shift a sample of readings onto the rule limits, where rounding matters.
    for index in rng.sample(range(len(readings)), 300):
        features.loc[index, "process_temperature_k"] = round(
            float(features.loc[index, "air_temperature_k"]) + 8.6, 1
        )

    flags = rule_flags(features)

    for index, reading in enumerate(readings):
        written = float(features.loc[index, "process_temperature_k"])
        shifted = dataclasses.replace(reading, process_temperature_k=written)
        expected = set(failure_modes(shifted)) & set(flags.columns)
        fired = {name for name in flags.columns if flags.loc[index, name]}
        assert fired == expected, f"row {index}: {shifted}"


def test_type_labels_apply_policy(ai4i_dataset: Dataset) -> None:
    relabeled = type_labels(ai4i_dataset, LabelPolicy())
    recorded = type_labels(
        ai4i_dataset,
        LabelPolicy(
            relabel_type_without_failure=False, exclude_failure_without_type=False
        ),
    )

    assert "Random Failures" not in set(relabeled.labels)
    assert int((~relabeled.mask).sum()) == 9
    assert set(ai4i_dataset.target[~relabeled.mask]) == {1}
    assert np.array_equal(recorded.labels, ai4i_dataset.failure_type)
    assert recorded.mask.all()


@pytest.mark.parametrize(("oracle", "f1"), [("float64", 0.9169), ("float32", 0.8958)])
def test_rule_oracle_scores_reach_ceiling(
    ai4i_dataset: Dataset, oracle: str, f1: float
) -> None:
    scores = rule_oracle_scores(ai4i_dataset)[oracle]

    figures = failure_metrics(ai4i_dataset.target, scores, ORACLE_THRESHOLD)

    assert figures["f1"] == pytest.approx(f1, abs=1e-4)
    assert figures["precision"] == 1.0
    assert scores.min() >= 0.0
    assert scores.max() < 1.0


def test_float32_oracle_types_skip_heat_limit(
    ai4i_dataset: Dataset,
) -> None:
    types = rule_oracle_types(ai4i_dataset)
    boundary = heat_boundary_rows(ai4i_dataset.features)

    assert int((types["float64"][boundary] == HEAT_DISSIPATION_FAILURE).sum()) == 12
    # Where power or overstrain fires too, float32 still decides the row.
    assert HEAT_DISSIPATION_FAILURE not in set(types["float32"][boundary])
    assert "No Failure" in set(types["float32"][boundary])
    assert np.array_equal(types["float32"][~boundary], types["float64"][~boundary])
