"""Alerts: the hysteresis rule per machine and the publisher of committed alerts.

An alert is raised when a machine's failure probability reaches the model's decision
threshold and cleared only after K consecutive readings below a lower clear level, so
a machine hovering around the threshold raises one alert, not one per reading. The
alert record is committed with the reading that caused it and published later from
the ``alerts`` table, so an alert raised while the broker is away is not lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edge_agent.reading import alert_topic
from edge_agent.retry import LogThrottle

logger = logging.getLogger(__name__)

RAISED = "raised"
CLEARED = "cleared"

# Alerts are rare, so the publisher reads a few at a time and waits for each PUBACK.
_PUBLISH_BATCH = 100


@dataclass(frozen=True, slots=True)
class AlertState:
    """A machine's alert state as stored in ``alert_state``.

    Attributes:
        state: ``raised`` or ``cleared``.
        below_count: consecutive readings below the clear level while raised.
    """

    state: str
    below_count: int = 0


_NEVER_ALERTED = AlertState(CLEARED, 0)


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """The hysteresis rule.

    Attributes:
        threshold: the model's decision threshold; P >= threshold raises.
        clear_ratio: the clear level as a fraction of the threshold.
        clear_count: consecutive readings below the clear level that clear an alert.
    """

    threshold: float
    clear_ratio: float
    clear_count: int

    @property
    def clear_level(self) -> float:
        return self.threshold * self.clear_ratio

    def advance(
        self, state: AlertState | None, probability: float, is_failure: bool
    ) -> tuple[AlertState, str | None]:
        """Apply one reading to a machine's state.

        Args:
            state: the machine's stored state, None when it never had one.
            probability: the reading's failure probability.
            is_failure: the model's decision for the reading (P >= threshold, compared
                in float32 like the scorer does).

        Returns:
            The new state and the transition it caused: ``raised``, ``cleared`` or None.
        """
        current = state or _NEVER_ALERTED
        if current.state != RAISED:
            if is_failure:
                return AlertState(RAISED, 0), RAISED
            return current, None
        if probability >= self.clear_level:
            return AlertState(RAISED, 0), None
        below = current.below_count + 1
        if below >= self.clear_count:
            return AlertState(CLEARED, 0), CLEARED
        return AlertState(RAISED, below), None


def alert_payload(row: dict[str, Any], *, site: str, agent_id: str) -> bytes:
    """Encode a stored alert as the JSON payload of docs/protocol.md."""
    document = {
        "site": site,
        "machine_id": row["machine_id"],
        "agent_id": agent_id,
        "seq": row["seq"],
        "state": row["state"],
        "ts": row["ts"],
        "failure_probability": row["failure_probability"],
        "risk_band": row["risk_band"],
        "failure_type": row["failure_type"],
        "model_version": row["model_version"],
        "reading_seq": row["reading_seq"],
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


class Publisher(Protocol):
    """The part of the MQTT intake the alert publisher uses."""

    @property
    def is_connected(self) -> bool: ...

    async def publish(
        self, topic: str, payload: bytes, *, timeout_s: float
    ) -> bool: ...


class StoreCalls(Protocol):
    """Store methods the publisher needs, run on the store thread by the caller."""

    def unpublished_alerts(self, limit: int) -> list[dict[str, Any]]: ...

    def mark_alert_published(self, seq: int) -> None: ...


class AlertPublisher:
    """Publishes committed alerts in sequence order and flags each one after its PUBACK.

    Delivery is at least once: when a PUBACK is lost the alert is published again, so
    subscribers should treat (agent_id, seq) as the alert's identity.

    Args:
        mqtt: the connected MQTT client wrapper.
        store: the local store.
        run_in_store: runs a store call on the store thread and returns its result.
        site: the agent's site, for the topic and payload.
        agent_id: the agent's id, for the payload.
        retry_interval_s: seconds between looks at the ``alerts`` table when nothing
            wakes the publisher (covers reconnects and failed publishes).
        publish_timeout_s: seconds to wait for one PUBACK before trying again later.
    """

    def __init__(
        self,
        *,
        mqtt: Publisher,
        store: StoreCalls,
        run_in_store: Callable[..., Awaitable[Any]],
        site: str,
        agent_id: str,
        retry_interval_s: float = 1.0,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self._mqtt = mqtt
        self._store = store
        self._run_in_store = run_in_store
        self._site = site
        self._agent_id = agent_id
        self._retry_interval_s = retry_interval_s
        self._publish_timeout_s = publish_timeout_s
        self._wake = asyncio.Event()
        self._failure_log = LogThrottle()

    def notify(self) -> None:
        """Wake the publisher because a batch with alerts was committed."""
        self._wake.set()

    async def run(self) -> None:
        """Publish pending alerts until cancelled."""
        while True:
            try:
                async with asyncio.timeout(self._retry_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._mqtt.is_connected:
                await self.publish_pending()

    async def publish_pending(self) -> int:
        """Publish unpublished alerts; stop at the first that gets no PUBACK.

        Returns:
            The number of alerts published and flagged.
        """
        published = 0
        pending = await self._run_in_store(
            self._store.unpublished_alerts, _PUBLISH_BATCH
        )
        for row in pending:
            topic = alert_topic(self._site, row["machine_id"])
            payload = alert_payload(row, site=self._site, agent_id=self._agent_id)
            if not await self._mqtt.publish(
                topic, payload, timeout_s=self._publish_timeout_s
            ):
                if self._failure_log.allow():
                    logger.warning(
                        "alert seq %d for machine %s not acknowledged by the broker "
                        "within %.0f s, so it stays pending (%d more failures)",
                        row["seq"],
                        row["machine_id"],
                        self._publish_timeout_s,
                        self._failure_log.take_suppressed(),
                    )
                break
            await self._run_in_store(self._store.mark_alert_published, row["seq"])
            published += 1
            logger.info(
                "alert seq %d %s for machine %s published on %s",
                row["seq"],
                row["state"],
                row["machine_id"],
                topic,
            )
        return published
