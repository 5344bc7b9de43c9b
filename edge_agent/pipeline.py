"""The reading pipeline: validate, score, store, acknowledge, in micro-batches.

The event loop collects deliveries into a batch of up to ``batch_max`` messages, or
what arrived within ``batch_wait_s`` of the first. The store thread validates,
deduplicates, scores and commits the whole batch in one SQLite transaction. Only then
does the event loop acknowledge the batch's messages to the broker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.alerts import AlertPolicy, AlertState
from edge_agent.errors import StoreError
from edge_agent.intake import Delivery
from edge_agent.metrics import AgentMetrics
from edge_agent.reading import (
    MEASUREMENT_FIELDS,
    Reading,
    ReadingError,
    excerpt,
    parse_reading,
)
from edge_agent.retry import backoff_delay
from edge_agent.scorer import OnnxScorer, Prediction
from edge_agent.store import LocalStore

logger = logging.getLogger(__name__)

_STORE_RETRY_CAP_S = 30.0


@dataclass(slots=True)
class BatchOutcome:
    """The counts of one committed micro-batch, for metrics and wake-ups."""

    stored: int = 0
    duplicates: int = 0
    quarantine_reasons: list[str] = field(default_factory=list)
    risk_bands: list[str] = field(default_factory=list)
    alert_states: list[str] = field(default_factory=list)
    scoring_s: float | None = None


class Pipeline:
    """Turns queued deliveries into committed records and acknowledgements.

    Args:
        queue: deliveries from the MQTT intake.
        store: the local store, used only on the store thread.
        scorer: the loaded model, used only on the store thread.
        run_in_store: runs a function on the store thread and returns its result.
        ack: acknowledges one delivery to the broker (the intake's ``acknowledge``).
        metrics: the agent's metrics.
        alert_policy: the hysteresis rule built from the model's threshold.
        batch_max: maximum messages per batch.
        batch_wait_s: maximum seconds to wait for a batch to fill after its first
            message; 0 takes only what is already queued.
        receive_window: messages the broker sends before it waits for an ack. A batch
            of that many is complete, because no further message arrives before the
            batch is committed and acknowledged.
        on_committed: called on the event loop after each commit.
    """

    def __init__(
        self,
        *,
        queue: asyncio.Queue[Delivery],
        store: LocalStore,
        scorer: OnnxScorer,
        run_in_store: Callable[..., Awaitable[Any]],
        ack: Callable[[Delivery], None],
        metrics: AgentMetrics,
        alert_policy: AlertPolicy,
        batch_max: int,
        batch_wait_s: float,
        receive_window: int,
        on_committed: Callable[[BatchOutcome], None] | None = None,
    ) -> None:
        self._queue = queue
        self._store = store
        self._scorer = scorer
        self._run_in_store = run_in_store
        self._ack = ack
        self._metrics = metrics
        self._policy = alert_policy
        self._batch_limit = max(1, min(batch_max, receive_window))
        self._batch_wait_s = batch_wait_s
        self._on_committed = on_committed
        self.is_store_writable = True

    async def run(self) -> None:
        """Process batches until cancelled."""
        while True:
            batch = await self._collect_batch()
            outcome = await self._commit_with_retry(batch)
            # Acknowledge only now that the batch is committed. A crash before this
            # point loses nothing: the broker delivers the messages again and the
            # store skips the ones it has.
            for delivery in batch:
                self._ack(delivery)
            self._record(outcome, len(batch))
            for _ in batch:
                self._queue.task_done()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued delivery is committed.

        Returns:
            True when the queue drained within ``timeout_s`` seconds.
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.join()
        except TimeoutError:
            logger.warning(
                "%d queued messages not committed within %.1f s of shutdown; the "
                "broker delivers them again on the next start",
                self._queue.qsize(),
                timeout_s,
            )
            return False
        return True

    async def _collect_batch(self) -> list[Delivery]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._batch_wait_s
        while len(batch) < self._batch_limit:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return batch

    async def _commit_with_retry(self, batch: list[Delivery]) -> BatchOutcome:
        attempt = 0
        process = self.process_batch
        while True:
            try:
                outcome: BatchOutcome = await self._run_in_store(process, batch)
            except StoreError as exc:
                attempt += 1
                self.is_store_writable = False
                self._metrics.store_errors.inc()
                delay = backoff_delay(attempt, cap_s=_STORE_RETRY_CAP_S)
                logger.error(
                    "batch of %d messages not stored: %s; they stay unacknowledged at "
                    "the broker, retrying in %.1f s",
                    len(batch),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # a message the pipeline cannot process
                if process != self.process_batch:
                    raise
                # Left unacknowledged, such a message would come back after every
                # restart and stop the site. Each message gets a transaction of its
                # own, and the one that fails again is quarantined with the error.
                logger.error(
                    "batch of %d messages failed (%s: %s); storing them one by one",
                    len(batch),
                    type(exc).__name__,
                    exc,
                )
                process = self._process_one_by_one
                continue
            if not self.is_store_writable:
                logger.info("store writable again after %d failed attempts", attempt)
            self.is_store_writable = True
            return outcome

    def process_batch(self, batch: Sequence[Delivery]) -> BatchOutcome:
        """Validate, deduplicate, score and commit one batch; runs on the store thread.

        Raises:
            StoreError: the transaction failed and was rolled back.
        """
        outcome = BatchOutcome()
        parsed: list[Reading | ReadingError] = []
        for delivery in batch:
            try:
                parsed.append(parse_reading(delivery.payload, delivery.topic))
            except ReadingError as exc:
                parsed.append(exc)

        fresh = self._fresh_readings(parsed, outcome)
        started = time.perf_counter()
        predictions = self._scorer.score([reading for _, reading in fresh])
        if fresh:
            outcome.scoring_s = time.perf_counter() - started
        prediction_of = {
            position: prediction
            for (position, _), prediction in zip(fresh, predictions, strict=True)
        }

        with self._store.transaction():
            self._write_batch(batch, parsed, prediction_of, outcome)
        return outcome

    def _process_one_by_one(self, batch: Sequence[Delivery]) -> BatchOutcome:
        """Commit each delivery alone, quarantining the ones that cannot be processed.

        Raises:
            StoreError: a transaction failed; the caller retries the whole batch.
        """
        total = BatchOutcome()
        for delivery in batch:
            try:
                outcome = self.process_batch([delivery])
            except StoreError:
                raise
            except Exception as exc:
                logger.error(
                    "message on %s quarantined: processing failed with %s: %s",
                    delivery.topic,
                    type(exc).__name__,
                    exc,
                )
                error = ReadingError(
                    f"the agent could not process this payload ({type(exc).__name__}: "
                    f"{exc}); it is kept here for inspection",
                    reason="unprocessable",
                )
                outcome = BatchOutcome()
                with self._store.transaction():
                    self._write_batch([delivery], [error], {}, outcome)
            total.stored += outcome.stored
            total.duplicates += outcome.duplicates
            total.quarantine_reasons += outcome.quarantine_reasons
            total.risk_bands += outcome.risk_bands
            total.alert_states += outcome.alert_states
        return total

    def _fresh_readings(
        self, parsed: Sequence[Reading | ReadingError], outcome: BatchOutcome
    ) -> list[tuple[int, Reading]]:
        """Return the readings not stored before and not repeated, with positions."""
        readings = [
            (position, item)
            for position, item in enumerate(parsed)
            if isinstance(item, Reading)
        ]
        known = self._store.known_reading_keys([_key(r) for _, r in readings])
        fresh: list[tuple[int, Reading]] = []
        for position, reading in readings:
            key = _key(reading)
            if key in known:
                outcome.duplicates += 1
                continue
            known.add(key)
            fresh.append((position, reading))
        return fresh

    def _write_batch(
        self,
        batch: Sequence[Delivery],
        parsed: Sequence[Reading | ReadingError],
        prediction_of: dict[int, Prediction],
        outcome: BatchOutcome,
    ) -> None:
        """Number and insert every record of the batch in arrival order."""
        machines = {item.machine_id for item in parsed if isinstance(item, Reading)}
        states = self._store.load_alert_states(machines)
        changed: dict[str, AlertState] = {}
        readings: list[dict[str, Any]] = []
        predictions: list[dict[str, Any]] = []
        quarantine: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        seq = self._store.last_seq()

        for position, (delivery, item) in enumerate(zip(batch, parsed, strict=True)):
            received_at = _iso_utc(delivery.received_at)
            if isinstance(item, ReadingError):
                seq += 1
                quarantine.append(_quarantine_row(seq, received_at, delivery, item))
                outcome.quarantine_reasons.append(item.reason)
                continue
            prediction = prediction_of.get(position)
            if prediction is None:
                continue  # a duplicate
            seq += 1
            reading_seq = seq
            readings.append(_reading_row(reading_seq, received_at, item))
            predictions.append(_prediction_row(reading_seq, prediction))
            outcome.risk_bands.append(prediction.risk_band)

            state, transition = self._policy.advance(
                states.get(item.machine_id),
                prediction.failure_probability,
                prediction.failure_label == 1,
            )
            if state != states.get(item.machine_id):
                states[item.machine_id] = changed[item.machine_id] = state
            if transition is not None:
                seq += 1
                alerts.append(
                    _alert_row(
                        seq, received_at, item, prediction, transition, reading_seq
                    )
                )
                outcome.alert_states.append(transition)

        self._store.insert_quarantine(quarantine)
        self._store.insert_readings(readings)
        self._store.insert_predictions(predictions)
        self._store.insert_alerts(alerts)
        self._store.save_alert_states(changed)
        self._store.set_last_seq(seq)
        outcome.stored = len(readings)

    def _record(self, outcome: BatchOutcome, size: int) -> None:
        metrics = self._metrics
        metrics.batch_size.observe(size)
        metrics.readings_stored.inc(outcome.stored)
        metrics.readings_duplicate.inc(outcome.duplicates)
        if outcome.scoring_s is not None:
            metrics.scoring_seconds.observe(outcome.scoring_s)
        for reason, count in Counter(outcome.quarantine_reasons).items():
            metrics.readings_quarantined.labels(reason=reason).inc(count)
        for band, count in Counter(outcome.risk_bands).items():
            metrics.predictions.labels(risk_band=band).inc(count)
        for state, count in Counter(outcome.alert_states).items():
            metrics.alerts.labels(state=state).inc(count)
        if outcome.duplicates:
            logger.debug("skipped %d redelivered readings", outcome.duplicates)
        if self._on_committed is not None:
            self._on_committed(outcome)


def _key(reading: Reading) -> tuple[str, int, str]:
    return (reading.machine_id, reading.machine_seq, reading.ts)


def _iso_utc(epoch_s: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds")


def _reading_row(seq: int, received_at: str, reading: Reading) -> dict[str, Any]:
    return {
        "seq": seq,
        "received_at": received_at,
        "site": reading.site,
        "machine_id": reading.machine_id,
        "machine_seq": reading.machine_seq,
        "ts": reading.ts,
        "product_type": reading.product_type,
        **{name: getattr(reading, name) for name in MEASUREMENT_FIELDS},
    }


def _prediction_row(reading_seq: int, prediction: Prediction) -> dict[str, Any]:
    return {
        "reading_seq": reading_seq,
        "model_version": prediction.model_version,
        "failure_probability": prediction.failure_probability,
        "failure_label": prediction.failure_label,
        "risk_band": prediction.risk_band,
        "failure_type": prediction.failure_type,
        "failure_type_probability": prediction.failure_type_probability,
    }


def _quarantine_row(
    seq: int, received_at: str, delivery: Delivery, error: ReadingError
) -> dict[str, Any]:
    return {
        "seq": seq,
        "received_at": received_at,
        "topic": delivery.topic,
        "reason": str(error),
        "excerpt": excerpt(delivery.payload),
        "size_bytes": len(delivery.payload),
    }


def _alert_row(
    seq: int,
    raised_at: str,
    reading: Reading,
    prediction: Prediction,
    state: str,
    reading_seq: int,
) -> dict[str, Any]:
    return {
        "seq": seq,
        "machine_id": reading.machine_id,
        "ts": raised_at,
        "state": state,
        "failure_probability": prediction.failure_probability,
        "risk_band": prediction.risk_band,
        "failure_type": prediction.failure_type,
        "model_version": prediction.model_version,
        "reading_seq": reading_seq,
        "published": 0,
    }
