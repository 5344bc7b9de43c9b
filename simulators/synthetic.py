"""Synthetic machines that follow the AI4I 2020 generative process, with ground truth.

Each call of ``SyntheticMachine.next_process`` is one machining process: one product
of type L, M or H, one reading, and the failure modes that the process triggered.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from edge_agent.reading import PRODUCT_TYPES, Reading
from simulators.fleet import Clock, machine_id, utc_timestamp

logger = logging.getLogger(__name__)

# Failure modes, named as in the "Failure Type" column of the AI4I file.
TOOL_WEAR_FAILURE = "Tool Wear Failure"
HEAT_DISSIPATION_FAILURE = "Heat Dissipation Failure"
POWER_FAILURE = "Power Failure"
OVERSTRAIN_FAILURE = "Overstrain Failure"
RANDOM_FAILURE = "Random Failures"
FAILURE_MODES = (
    TOOL_WEAR_FAILURE,
    HEAT_DISSIPATION_FAILURE,
    POWER_FAILURE,
    OVERSTRAIN_FAILURE,
    RANDOM_FAILURE,
)

# Temperatures are mean-reverting random walks (AR(1)) with the published standard
# deviations around 300 K and air + 10 K. The walk of the file is not stationary, but
# a fleet that runs for hours needs one that stays in range. The step sizes are the
# file's drift per process, measured over lags of 100 to 1,000 rows, where the
# 0.1 K rounding of the file no longer dominates.
AIR_MEAN_K = 300.0
AIR_SIGMA_K = 2.0
AIR_STEP_K = 0.055
PROCESS_OFFSET_K = 10.0
PROCESS_SIGMA_K = 1.0
PROCESS_STEP_K = 0.035

TORQUE_MEAN_NM = 40.0
TORQUE_SIGMA_NM = 10.0

# Rotational speed against torque: the mean speed of the AI4I file in torque bands of
# 2 to 5 Nm, interpolated linearly and held constant beyond the ends, plus normal
# noise of the file's residual standard deviation. A constant power of 2860 W, as the
# published description reads, would give 683 rpm at 40 Nm, where the file's mean
# speed between 37 and 40 Nm is 1,516 rpm.
SPEED_CURVE = (
    (5.3, 2840.0),
    (9.8, 2705.0),
    (12.4, 2618.0),
    (14.1, 2417.0),
    (16.2, 2221.0),
    (18.2, 2105.0),
    (20.1, 1987.0),
    (22.1, 1905.0),
    (24.1, 1834.0),
    (26.7, 1752.0),
    (29.7, 1674.0),
    (32.6, 1616.0),
    (35.6, 1564.0),
    (38.6, 1516.0),
    (41.5, 1482.0),
    (44.5, 1447.0),
    (47.5, 1423.0),
    (50.5, 1395.0),
    (53.4, 1375.0),
    (56.4, 1354.0),
    (59.9, 1333.0),
    (63.6, 1312.0),
    (69.2, 1283.0),
)
SPEED_NOISE_RPM = 50.0

# Minutes of tool wear that one process of each product type adds. In the file the
# wear shown on a row is the wear before its process: row k + 1 shows row k's wear
# plus the increment of row k's type.
WEAR_INCREMENT_MIN = {"L": 2, "M": 3, "H": 5}

# Failure rules of the published description. Evaluated on the published (rounded)
# values, each one matches the file's labels exactly.
HEAT_DISSIPATION_MAX_DELTA_K = 8.6
HEAT_DISSIPATION_MAX_SPEED_RPM = 1380.0
POWER_MIN_W = 3500.0
POWER_MAX_W = 9000.0
OVERSTRAIN_LIMIT_MIN_NM = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}

# In the file, 45 of the 119 tool changes are recorded as a tool wear failure; the
# others are replacements with no failure.
TOOL_FAILURE_PROBABILITY = 45 / 119


@dataclass(frozen=True)
class ProcessProfile:
    """The parameters in which the published description and the AI4I file differ.

    Attributes:
        name: the name the command line selects the profile by.
        type_weights: relative frequency of the product types L, M and H.
        replacement_wear: how the wear at which a tool is changed is drawn:
            ``uniform`` between the two parameters, or ``normal`` with mean and
            standard deviation, both in minutes.
        replacement_wear_params_min: the two parameters of that distribution.
        random_failure_probability: chance of a random failure in each process.
        delta_air_correlation: correlation between the air temperature and the
            process-minus-air difference. The published description implies 0.
    """

    name: str
    type_weights: tuple[float, float, float]
    replacement_wear: Literal["uniform", "normal"]
    replacement_wear_params_min: tuple[float, float]
    random_failure_probability: float
    delta_air_correlation: float


PUBLISHED_PROFILE = ProcessProfile(
    name="published",
    type_weights=(0.5, 0.3, 0.2),
    replacement_wear="uniform",
    replacement_wear_params_min=(200.0, 240.0),
    random_failure_probability=0.001,
    delta_air_correlation=0.0,
)
# Measured on the shipped file: product types 60/30/10 %, and 18 random failures in
# 10,000 rows. Tools are changed at a mean wear of 215.7 min (standard deviation
# 10.6 min), and the draw sits about one increment lower because the change comes on
# the first process at or above it. The air temperature and the process-minus-air
# difference correlate at -0.70. That is a chance feature of the file's one pair of
# walks, whose 10- to 100-step changes are uncorrelated. But it is why the file's
# process temperature varies by 1.48 K and not by the 2.24 K of independent walks.
FILE_PROFILE = ProcessProfile(
    name="file",
    type_weights=(0.6, 0.3, 0.1),
    replacement_wear="normal",
    replacement_wear_params_min=(214.3, 10.5),
    random_failure_probability=0.0018,
    delta_air_correlation=-0.70,
)
PROFILES = {profile.name: profile for profile in (PUBLISHED_PROFILE, FILE_PROFILE)}


@dataclass(frozen=True, slots=True)
class Process:
    """One simulated machining process: the reading it publishes and its ground truth.

    Attributes:
        reading: the telemetry the machine sends for this process.
        failures: the failure modes the process triggered, in ``FAILURE_MODES``
            order; empty when it ran without failure.
        tool_replaced: the tool is changed after this process, so the next reading
            of the machine shows a tool wear of 0 min.
    """

    reading: Reading
    failures: tuple[str, ...]
    tool_replaced: bool

    @property
    def is_failure(self) -> bool:
        """Whether the process triggered at least one failure mode."""
        return bool(self.failures)


class SyntheticMachine:
    """One machine whose readings follow the AI4I generative process.

    The random stream depends only on ``seed`` and ``machine_id``, so a machine
    produces the same readings whatever else runs beside it.
    """

    def __init__(
        self,
        *,
        machine_id: str,
        site: str,
        seed: int,
        profile: ProcessProfile = PUBLISHED_PROFILE,
    ) -> None:
        self.machine_id = machine_id
        self.site = site
        self.profile = profile
        self._rng = random.Random(f"edgepm-synthetic/{seed}/{machine_id}")
        self._seq = 0

        # Start in the long-run state: the walks at their stationary distribution and
        # the tool at a random point of its life. A new fleet then neither drifts in
        # from 300 K nor changes all its tools at the same time.
        self._coupling = _DeltaCoupling.for_correlation(profile.delta_air_correlation)
        self._air_deviation_k = self._rng.gauss(0.0, AIR_SIGMA_K)
        self._delta_deviation_k = self._rng.gauss(0.0, self._coupling.own_sigma_k)
        self._replacement_wear_min = self._draw_replacement_wear()
        self._wear_min = self._draw_initial_wear()

    def next_process(self, ts: str) -> Process:
        """Run one process and return its reading, stamped ``ts``, and ground truth."""
        rng = self._rng
        coupling = self._coupling
        self._air_deviation_k = _walk(
            rng, self._air_deviation_k, AIR_SIGMA_K, AIR_STEP_K
        )
        self._delta_deviation_k = _walk(
            rng, self._delta_deviation_k, coupling.own_sigma_k, coupling.own_step_k
        )
        product_type = rng.choices(PRODUCT_TYPES, weights=self.profile.type_weights)[0]
        torque_nm = max(0.0, rng.gauss(TORQUE_MEAN_NM, TORQUE_SIGMA_NM))
        speed_rpm = speed_for_torque(torque_nm) + rng.gauss(0.0, SPEED_NOISE_RPM)
        # Both draws are made in every process, so the stream stays aligned whatever
        # state the machine is in.
        tool_fails = rng.random() < TOOL_FAILURE_PROBABILITY
        fails_at_random = rng.random() < self.profile.random_failure_probability

        # Published with the file's precision; the failure rules see the same values.
        air_k = AIR_MEAN_K + self._air_deviation_k
        reading = Reading(
            site=self.site,
            machine_id=self.machine_id,
            ts=ts,
            machine_seq=self._seq,
            product_type=product_type,
            air_temperature_k=round(air_k, 1),
            process_temperature_k=round(
                air_k
                + PROCESS_OFFSET_K
                + coupling.air_weight * self._air_deviation_k
                + self._delta_deviation_k,
                1,
            ),
            rotational_speed_rpm=float(max(0, round(speed_rpm))),
            torque_nm=round(torque_nm, 1),
            tool_wear_min=float(self._wear_min),
        )
        tool_replaced = self._wear_min >= self._replacement_wear_min
        failures = failure_modes(
            reading,
            tool_fails=tool_replaced and tool_fails,
            fails_at_random=fails_at_random,
        )

        # A tool that reached its replacement wear is changed after the process,
        # whether or not it failed. Other failures are repaired without a tool
        # change, as in the file, where the wear goes on growing after them.
        if tool_replaced:
            self._wear_min = 0
            self._replacement_wear_min = self._draw_replacement_wear()
        else:
            self._wear_min += WEAR_INCREMENT_MIN[product_type]
        self._seq += 1
        return Process(reading=reading, failures=failures, tool_replaced=tool_replaced)

    def _draw_initial_wear(self) -> int:
        # The wear of a random process of one whole tool life. A uniform draw below
        # the replacement wear would leave out the tool's last process, which shows
        # a wear at or above it, and the fleet's mean wear would then run about one
        # increment high for a whole tool life.
        life = [0]
        while life[-1] < self._replacement_wear_min:
            product_type = self._rng.choices(PRODUCT_TYPES, self.profile.type_weights)[
                0
            ]
            life.append(life[-1] + WEAR_INCREMENT_MIN[product_type])
        return self._rng.choice(life)

    def _draw_replacement_wear(self) -> float:
        first, second = self.profile.replacement_wear_params_min
        if self.profile.replacement_wear == "uniform":
            return self._rng.uniform(first, second)
        # A draw below one process of wear would change the tool on every process.
        return max(
            float(max(WEAR_INCREMENT_MIN.values())), self._rng.gauss(first, second)
        )


class SyntheticFleet:
    """The machines of one site, each running one process per turn in id order.

    Ground truth is counted per failure mode as the processes are generated, and
    each failure is logged at info level with its machine and seq unless
    ``log_failures`` is false.
    """

    def __init__(
        self,
        *,
        machines: int,
        site: str,
        seed: int,
        profile: ProcessProfile = PUBLISHED_PROFILE,
        clock: Clock = utc_timestamp,
        log_failures: bool = True,
    ) -> None:
        if machines < 1:
            raise ValueError(f"machines is {machines}; expected 1 or more")
        self.machines = [
            SyntheticMachine(
                machine_id=machine_id(index), site=site, seed=seed, profile=profile
            )
            for index in range(machines)
        ]
        self.process_count = 0
        self._clock = clock
        self._log_failures = log_failures
        self._failure_counts: Counter[str] = Counter()

    def processes(self) -> Iterator[Process]:
        """Yield processes without end, one machine after the other.

        The caller bounds the stream, by count or by time.
        """
        while True:
            for machine in self.machines:
                process = machine.next_process(self._clock())
                self._record(process)
                yield process

    def failure_counts(self) -> dict[str, int]:
        """Return how many processes so far triggered each failure mode."""
        return {mode: self._failure_counts[mode] for mode in FAILURE_MODES}

    def _record(self, process: Process) -> None:
        self.process_count += 1
        if not process.failures:
            return
        self._failure_counts.update(process.failures)
        if not self._log_failures:
            return
        reading = process.reading
        logger.info(
            "ground truth: site %s machine %s seq %d failed: %s",
            reading.site,
            reading.machine_id,
            reading.machine_seq,
            ", ".join(process.failures),
        )


def simulate_processes(
    count: int,
    *,
    machines: int,
    seed: int,
    profile: ProcessProfile = PUBLISHED_PROFILE,
    site: str = "sim",
    clock: Clock = utc_timestamp,
) -> list[Process]:
    """Return the first ``count`` processes of a fleet, without publishing or
    logging them: the caller has their ground truth."""
    if count < 0:
        raise ValueError(f"count is {count}; expected 0 or more")
    fleet = SyntheticFleet(
        machines=machines,
        site=site,
        seed=seed,
        profile=profile,
        clock=clock,
        log_failures=False,
    )
    stream = fleet.processes()
    return [next(stream) for _ in range(count)]


def failure_modes(
    reading: Reading, *, tool_fails: bool = False, fails_at_random: bool = False
) -> tuple[str, ...]:
    """Return the failure modes a reading triggers under the published rules.

    Heat dissipation, power and overstrain follow from the reading alone. Tool wear
    and random failures are drawn by the machine and passed in.
    """
    power_w = reading.torque_nm * reading.rotational_speed_rpm * 2.0 * math.pi / 60.0
    # The difference of the published values, in floating point as any reader of the
    # reading computes it; the file's labels agree with exactly this computation.
    delta_k = reading.process_temperature_k - reading.air_temperature_k
    triggered = {
        TOOL_WEAR_FAILURE: tool_fails,
        HEAT_DISSIPATION_FAILURE: delta_k < HEAT_DISSIPATION_MAX_DELTA_K
        and reading.rotational_speed_rpm < HEAT_DISSIPATION_MAX_SPEED_RPM,
        POWER_FAILURE: power_w < POWER_MIN_W or power_w > POWER_MAX_W,
        OVERSTRAIN_FAILURE: reading.tool_wear_min * reading.torque_nm
        > OVERSTRAIN_LIMIT_MIN_NM[reading.product_type],
        RANDOM_FAILURE: fails_at_random,
    }
    return tuple(mode for mode in FAILURE_MODES if triggered[mode])


def speed_for_torque(torque_nm: float) -> float:
    """Return the mean rotational speed in rpm at a torque in Nm (before noise)."""
    torques = [point[0] for point in SPEED_CURVE]
    index = bisect.bisect_left(torques, torque_nm)
    if index == 0:
        return SPEED_CURVE[0][1]
    if index == len(SPEED_CURVE):
        return SPEED_CURVE[-1][1]
    (low_nm, low_rpm), (high_nm, high_rpm) = SPEED_CURVE[index - 1], SPEED_CURVE[index]
    return low_rpm + (high_rpm - low_rpm) * (torque_nm - low_nm) / (high_nm - low_nm)


@dataclass(frozen=True)
class _DeltaCoupling:
    # The process-minus-air walk is air_weight * (air deviation) plus a walk of its
    # own, sized so that the sum keeps the published 1 K and the measured step.
    air_weight: float
    own_sigma_k: float
    own_step_k: float

    @classmethod
    def for_correlation(cls, correlation: float) -> _DeltaCoupling:
        air_weight = correlation * PROCESS_SIGMA_K / AIR_SIGMA_K
        own_step_variance = PROCESS_STEP_K**2 - (air_weight * AIR_STEP_K) ** 2
        if not -1.0 < correlation < 1.0 or own_step_variance <= 0.0:
            limit = PROCESS_STEP_K * AIR_SIGMA_K / (AIR_STEP_K * PROCESS_SIGMA_K)
            raise ValueError(
                f"delta_air_correlation is {correlation}; expected a magnitude below "
                f"{min(1.0, limit):.2f}, so that the process temperature keeps its "
                "measured step size"
            )
        return cls(
            air_weight=air_weight,
            own_sigma_k=PROCESS_SIGMA_K * math.sqrt(1.0 - correlation**2),
            own_step_k=math.sqrt(own_step_variance),
        )


def _walk(rng: random.Random, deviation: float, sigma: float, step: float) -> float:
    # AR(1) with stationary standard deviation sigma whose one-step change has
    # standard deviation `step`: Var(x' - x) = 2 sigma^2 (1 - phi).
    phi = 1.0 - step * step / (2.0 * sigma * sigma)
    return phi * deviation + rng.gauss(0.0, sigma * math.sqrt(1.0 - phi * phi))
