"""Label consistency of a training set and the label policy the two heads train on.

Heat dissipation, power and overstrain failures follow published rules of the
measurements (the AI4I 2020 dataset description, Matzka 2020). The report counts
rows whose ``Target`` and ``Failure Type`` disagree and rows where several rules
fire. The policy states which label each head learns for those rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from control_plane.data import NO_FAILURE, Dataset
from edge_agent.reading import MEASUREMENT_FIELDS

logger = logging.getLogger(__name__)

HEAT_DISSIPATION_FAILURE = "Heat Dissipation Failure"
POWER_FAILURE = "Power Failure"
OVERSTRAIN_FAILURE = "Overstrain Failure"
TOOL_WEAR_FAILURE = "Tool Wear Failure"
RANDOM_FAILURE = "Random Failures"

# The published rules. Heat dissipation: process minus air temperature below 8.6 K
# and rotational speed below 1380 rpm. Power: torque times angular speed below
# 3500 W or above 9000 W. Overstrain: tool wear times torque above 11,000 min·Nm
# for product type L, 12,000 for M and 13,000 for H.
HEAT_DISSIPATION_MAX_DELTA_K = 8.6
HEAT_DISSIPATION_MAX_SPEED_RPM = 1380.0
POWER_MIN_W = 3500.0
POWER_MAX_W = 9000.0
OVERSTRAIN_LIMIT_MIN_NM = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}
RULE_FAILURES = (HEAT_DISSIPATION_FAILURE, POWER_FAILURE, OVERSTRAIN_FAILURE)

# The rules oracle's scores reach this exactly where a rule fires.
ORACLE_THRESHOLD = 0.75

# Row identifiers listed per group in a report; the counts are always complete.
MAX_LISTED_ROWS = 50


@dataclass(frozen=True)
class LabelPolicy:
    """The training labels of each head for rows whose two labels disagree.

    Attributes:
        relabel_type_without_failure: train the failure-type head on ``No Failure``
            for rows that have a failure type but ``Target`` 0 (in AI4I, the random
            failures), so both heads agree on what a failure is.
        exclude_failure_without_type: leave rows with ``Target`` 1 and no failure
            type out of the failure-type head's training; they have no type to learn.
    """

    relabel_type_without_failure: bool = True
    exclude_failure_without_type: bool = True

    def to_document(self) -> dict[str, str]:
        """Describe the policy in words, for the manifest and the model card."""
        return {
            "failure_head": (
                "trains on Target as recorded, for every row (failures without a "
                "failure type stay failures, failure types without a failure stay "
                "non-failures)"
            ),
            "failure_type_head_type_without_failure": (
                f"trains as {NO_FAILURE!r}"
                if self.relabel_type_without_failure
                else "trains on the recorded failure type"
            ),
            "failure_type_head_failure_without_type": (
                "left out of the failure-type head's training"
                if self.exclude_failure_without_type
                else f"trains as {NO_FAILURE!r}"
            ),
            "failure_type_head_several_rules": (
                "trains on the recorded failure type, which names one of the modes"
            ),
            "evaluation": "both heads are scored against the labels as recorded",
        }


@dataclass(frozen=True)
class TypeLabels:
    """The failure-type head's training labels under a policy.

    Attributes:
        labels: one label per row (object array).
        mask: rows the failure-type head trains on.
    """

    labels: np.ndarray
    mask: np.ndarray


def decimal_measurements(features: pd.DataFrame) -> np.ndarray:
    """Return the measurements in float64, as the loader parsed the written decimals.

    The rules are evaluated on these values in float64, as the AI4I generator did.
    """
    values: np.ndarray = features[list(MEASUREMENT_FIELDS)].to_numpy(dtype=np.float64)
    return values


def rule_flags(features: pd.DataFrame) -> pd.DataFrame:
    """Evaluate the heat dissipation, power and overstrain rules on every row.

    The rules are computed in float64 on the written decimals. At a temperature
    difference of exactly 8.6 K in the file's 0.1 K steps, the float64 difference
    of the two temperatures falls on either side of 8.6 depending on their binary
    rounding, and the recorded labels follow that computation.

    Returns:
        Boolean columns named after ``RULE_FAILURES``.
    """
    air, process, speed, torque, wear = decimal_measurements(features).T
    power = torque * speed * 2.0 * np.pi / 60.0
    limit = features["product_type"].map(OVERSTRAIN_LIMIT_MIN_NM).to_numpy(float)
    return pd.DataFrame(
        {
            HEAT_DISSIPATION_FAILURE: (process - air < HEAT_DISSIPATION_MAX_DELTA_K)
            & (speed < HEAT_DISSIPATION_MAX_SPEED_RPM),
            POWER_FAILURE: (power < POWER_MIN_W) | (power > POWER_MAX_W),
            OVERSTRAIN_FAILURE: wear * torque > limit,
        },
        index=features.index,
    )


def heat_boundary_rows(features: pd.DataFrame) -> np.ndarray:
    """Flag rows on the heat-dissipation limit, decided by float64 rounding.

    These are rows with a written temperature difference of exactly 8.6 K and a
    speed below 1380 rpm. The float64 rule splits them by the binary rounding of the
    two temperatures (308.7 - 300.1 < 8.6, 308.6 - 300.0 > 8.6). The graph computes
    in float64 and takes the same side; a float32 computation loses the distinction.
    """
    air, process, speed, _, _ = decimal_measurements(features).T
    tenths = np.rint((process - air) * 10.0)
    return (tenths == round(HEAT_DISSIPATION_MAX_DELTA_K * 10)) & (
        speed < HEAT_DISSIPATION_MAX_SPEED_RPM
    )


def type_labels(dataset: Dataset, policy: LabelPolicy) -> TypeLabels:
    """Return the failure-type head's training labels and rows under ``policy``."""
    labels = dataset.failure_type.copy()
    failed = dataset.target == 1
    typed = labels != NO_FAILURE
    if policy.relabel_type_without_failure:
        labels[typed & ~failed] = NO_FAILURE
    mask = np.ones(len(labels), dtype=bool)
    if policy.exclude_failure_without_type:
        mask &= ~(failed & ~typed)
    return TypeLabels(labels=labels, mask=mask)


def label_consistency(dataset: Dataset) -> dict[str, Any]:
    """Count and identify the rows whose labels disagree or whose rules overlap.

    Returns:
        A JSON-ready report. Each group has the row count, the 1-based data rows and
        the file's UDIs (the first ``MAX_LISTED_ROWS``). The groups are failures
        without a failure type, failure types without a failure, rows where several
        rules fire (with the recorded type per combination), rows where a rule and
        the recorded labels disagree, and rows on the heat-dissipation limit.
    """
    failed = dataset.target == 1
    typed = dataset.failure_type != NO_FAILURE
    flags = rule_flags(dataset.features)
    fired = flags.to_numpy()
    several = fired.sum(axis=1) >= 2
    any_rule = fired.any(axis=1)
    rule_typed = np.isin(dataset.failure_type, RULE_FAILURES)

    combinations: dict[str, dict[str, int]] = {}
    for index in np.flatnonzero(several):
        hits = zip(RULE_FAILURES, fired[index], strict=True)
        key = " + ".join(name for name, hit in hits if hit)
        recorded = combinations.setdefault(key, {})
        label = str(dataset.failure_type[index])
        recorded[label] = recorded.get(label, 0) + 1

    report = {
        "rows": len(dataset.target),
        "failure_without_type": _group(dataset, failed & ~typed),
        "type_without_failure": _group(dataset, typed & ~failed),
        "several_rules": {
            **_group(dataset, several),
            "recorded_types": dict(sorted(combinations.items())),
        },
        "rule_without_failure": _group(dataset, any_rule & ~failed),
        "rule_type_without_rule": _group(dataset, rule_typed & ~any_rule),
        "heat_boundary": _group(dataset, heat_boundary_rows(dataset.features)),
        "rules": {name: int(flags[name].sum()) for name in RULE_FAILURES},
    }
    logger.info(
        "label consistency of %s: %d failures without a type, %d types without a "
        "failure, %d rows with several rules",
        dataset.source,
        report["failure_without_type"]["count"],
        report["type_without_failure"]["count"],
        report["several_rules"]["count"],
    )
    return report


def rule_oracle_scores(dataset: Dataset) -> dict[str, np.ndarray]:
    """Score every row as an oracle that applies the published rules.

    A fired rule scores 0.75 or more, the oracle's decision threshold; tool wear adds
    up to 0.24 at 300 min, since tool-wear failures come with worn tools, and orders
    the rows within each level. ``float64`` reproduces the generator's arithmetic;
    ``float32`` shows what float32 arithmetic allows: it scores the rows on the
    heat-dissipation limit (see ``heat_boundary_rows``) 0.5, below the decision.

    Returns:
        ``{"float64": scores, "float32": scores}``, float64 arrays of shape (n,).
    """
    flags = rule_flags(dataset.features)
    fired = flags.to_numpy().any(axis=1)
    other = (flags[POWER_FAILURE] | flags[OVERSTRAIN_FAILURE]).to_numpy()
    ambiguous = _float32_undecided(dataset.features, flags)
    decided = other | (flags[HEAT_DISSIPATION_FAILURE].to_numpy() & ~ambiguous)
    wear = dataset.features["tool_wear_min"].to_numpy(np.float64)
    worn = 0.24 * np.clip(wear / 300.0, 0.0, 1.0)
    return {
        "float64": np.where(fired, ORACLE_THRESHOLD, 0.0) + worn,
        "float32": np.where(decided, ORACLE_THRESHOLD, 0.5 * ambiguous) + worn,
    }


def rule_oracle_types(dataset: Dataset) -> dict[str, np.ndarray]:
    """Predict the failure type from the rules alone, in the file's precedence.

    Where several rules fire, the AI4I file records power before heat dissipation
    before overstrain; rows where no rule fires are predicted ``No Failure``. As in
    ``rule_oracle_scores``, ``float32`` leaves the rows on the heat-dissipation
    limit undecided, so they are predicted ``No Failure`` unless another rule fires.

    Returns:
        ``{"float64": types, "float32": types}``, object arrays of shape (n,).
    """
    flags = rule_flags(dataset.features)
    predicted = np.full(len(flags), NO_FAILURE, dtype=object)
    for name in (OVERSTRAIN_FAILURE, HEAT_DISSIPATION_FAILURE, POWER_FAILURE):
        predicted[flags[name].to_numpy()] = name
    undecided = _float32_undecided(dataset.features, flags)
    return {
        "float64": predicted,
        "float32": np.where(undecided, NO_FAILURE, predicted),
    }


def _float32_undecided(features: pd.DataFrame, flags: pd.DataFrame) -> np.ndarray:
    """Flag the rows float32 arithmetic cannot decide: on the heat-dissipation limit,
    with neither the power nor the overstrain rule firing."""
    other = (flags[POWER_FAILURE] | flags[OVERSTRAIN_FAILURE]).to_numpy()
    undecided: np.ndarray = heat_boundary_rows(features) & ~other
    return undecided


def _group(dataset: Dataset, selected: np.ndarray) -> dict[str, Any]:
    rows = np.flatnonzero(selected)
    group: dict[str, Any] = {
        "count": len(rows),
        "rows": [int(row) + 1 for row in rows[:MAX_LISTED_ROWS]],
    }
    if dataset.udi is not None:
        group["udi"] = [str(dataset.udi[row]) for row in rows[:MAX_LISTED_ROWS]]
    return group
