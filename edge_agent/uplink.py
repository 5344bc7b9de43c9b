"""The uplink: where records leave the agent for the control plane.

Records go up in sequence order as ``POST /api/v1/ingest`` batches. A table's upload
cursor in SQLite moves only after the control plane responds with 200, so a lost
request or response means the batch is sent again, and the control plane skips the
records it has. A heartbeat reports the agent's state on its own schedule.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from edge_agent.errors import StoreReplacedError, UplinkError
from edge_agent.metrics import AgentMetrics
from edge_agent.retry import LogThrottle, backoff_delay, describe_error
from edge_agent.store import UPLOAD_TABLES, LocalStore

logger = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"
HEARTBEAT_PATH = "/api/v1/heartbeat"
_RETRY_CAP_S = 60.0
# Long enough for the control plane to commit a full batch to PostgreSQL, and short
# enough that a hung connection is noticed and retried.
_REQUEST_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class SyncResult:
    """One ingest request.

    Attributes:
        sent: records in the request, all tables together.
        is_full: True when some table filled its batch, so more may be waiting.
    """

    sent: int
    is_full: bool


class Uplink:
    """Sends stored records and heartbeats to the control plane.

    Args:
        session: the agent's HTTP client session.
        control_plane_url: base URL without a trailing slash.
        api_token: bearer token, None to send no Authorization header.
        agent_id: this agent's id.
        site: this agent's site.
        store: the local store, used only through ``run_in_store``.
        run_in_store: runs a function on the store thread and returns its result.
        metrics: the agent's metrics.
        batch_size: maximum records per table per request.
        interval_s: seconds between sync rounds when nothing wakes the uplink.
        heartbeat_interval_s: seconds between heartbeats.
        status: returns the heartbeat's ``model_version`` and ``counters``.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        control_plane_url: str,
        api_token: str | None,
        agent_id: str,
        site: str,
        store: LocalStore,
        run_in_store: Callable[..., Awaitable[Any]],
        metrics: AgentMetrics,
        batch_size: int,
        interval_s: float,
        heartbeat_interval_s: float,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self._session = session
        self._base_url = control_plane_url
        self._headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self._agent_id = agent_id
        self._site = site
        self._store = store
        self._run_in_store = run_in_store
        self._metrics = metrics
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._status = status
        self._started_at = _now_iso()
        self._wake = asyncio.Event()
        self._stored_since_sync = 0
        self._failure_log = LogThrottle()
        self._heartbeat_log = LogThrottle()
        self.is_paused = False

    @property
    def headers(self) -> dict[str, str]:
        """Request headers for the control plane's /api/ (the bearer token, if any)."""
        return dict(self._headers)

    def notify_stored(self, count: int) -> None:
        """Count newly committed records; a full batch of them wakes the uplink."""
        self._stored_since_sync += count
        if self._stored_since_sync >= self._batch_size:
            self._wake.set()

    async def run(self) -> None:
        """Sync until cancelled, backing off while the control plane is unreachable."""
        attempt = 0
        while True:
            if attempt:
                await asyncio.sleep(
                    backoff_delay(attempt, base_s=1.0, cap_s=_RETRY_CAP_S)
                )
            else:
                await self._wait_for_wake()
            if self.is_paused:
                continue
            try:
                sent = await self._sync_until_caught_up()
            except StoreReplacedError as exc:
                self.is_paused = True
                logger.error(
                    "%s; sync paused until the agent restarts. Restore the original "
                    "store or give this agent a new EDGEPM_AGENT_ID",
                    exc,
                )
            except UplinkError as exc:
                attempt += 1
                self._log_failure(exc)
            else:
                if attempt:
                    logger.info(
                        "control plane %s reachable again; sent %d records",
                        self._base_url,
                        sent,
                    )
                attempt = 0
            await self._update_backlog()

    async def run_heartbeat(self) -> None:
        """Send a heartbeat every ``heartbeat_interval_s`` seconds until cancelled."""
        while True:
            try:
                await self.send_heartbeat()
            except UplinkError as exc:
                if self._heartbeat_log.allow():
                    logger.warning(
                        "heartbeat to %s failed: %s (%d more failures not logged)",
                        self._base_url,
                        exc,
                        self._heartbeat_log.take_suppressed(),
                    )
            await asyncio.sleep(self._heartbeat_interval_s)

    async def sync_once(self) -> SyncResult:
        """Send one batch of records above the cursors and advance the cursors.

        Raises:
            StoreReplacedError: the control plane returned 409.
            UplinkError: the request failed or was rejected; the cursors did not move.
        """
        batch = await self._run_in_store(self._read_batch)
        sent = sum(len(rows) for rows in batch.values())
        if not sent:
            return SyncResult(0, False)
        body = {
            "agent_id": self._agent_id,
            "site": self._site,
            "store_id": self._store.store_id,
            **batch,
        }
        try:
            await self._post(INGEST_PATH, body)
        except UplinkError:
            self._metrics.uploads.labels(result="failed").inc()
            raise
        self._metrics.uploads.labels(result="ok").inc()
        await self._run_in_store(self._advance_cursors, batch)
        logger.debug("uploaded %s", {table: len(rows) for table, rows in batch.items()})
        is_full = any(len(rows) >= self._batch_size for rows in batch.values())
        return SyncResult(sent, is_full)

    async def flush(self, timeout_s: float) -> bool:
        """Try to send everything pending within ``timeout_s`` seconds (at shutdown).

        Returns:
            True when the control plane acknowledged every pending record.
        """
        if self.is_paused:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self._sync_until_caught_up()
        except (UplinkError, TimeoutError) as exc:
            logger.warning(
                "final sync to %s incomplete (%s); the records stay in the store and "
                "go up after the next start",
                self._base_url,
                describe_error(exc),
            )
            return False
        finally:
            await self._update_backlog()
        return True

    async def send_heartbeat(self) -> None:
        """Send one heartbeat.

        Raises:
            UplinkError: the request failed or was rejected.
        """
        status = self._status()
        backlog = await self._run_in_store(self._store.backlog)
        body = {
            "agent_id": self._agent_id,
            "site": self._site,
            "store_id": self._store.store_id,
            "sent_at": _now_iso(),
            "started_at": self._started_at,
            "model_version": status.get("model_version"),
            "backlog": backlog,
            "counters": status.get("counters", {}),
        }
        await self._post(HEARTBEAT_PATH, body)

    async def _wait_for_wake(self) -> None:
        try:
            async with asyncio.timeout(self._interval_s):
                await self._wake.wait()
        except TimeoutError:
            pass
        self._wake.clear()
        self._stored_since_sync = 0

    async def _sync_until_caught_up(self) -> int:
        sent = 0
        while True:
            result = await self.sync_once()
            sent += result.sent
            if not result.is_full:
                return sent

    def _read_batch(self) -> dict[str, list[dict[str, Any]]]:
        """Read the next records of each table; runs on the store thread.

        Predictions and alerts are limited to readings that the control plane already
        has or receives in the same request, so it never gets one before its reading.
        """
        store = self._store
        readings = store.records_after(
            "readings", store.upload_cursor("readings"), self._batch_size
        )
        reading_limit = (
            readings[-1]["seq"] if readings else store.upload_cursor("readings")
        )
        return {
            "readings": readings,
            "predictions": store.records_after(
                "predictions",
                store.upload_cursor("predictions"),
                self._batch_size,
                up_to=reading_limit,
            ),
            "quarantine": store.records_after(
                "quarantine", store.upload_cursor("quarantine"), self._batch_size
            ),
            "alerts": store.records_after(
                "alerts",
                store.upload_cursor("alerts"),
                self._batch_size,
                up_to=reading_limit,
            ),
        }

    def _advance_cursors(self, batch: dict[str, list[dict[str, Any]]]) -> None:
        with self._store.transaction():
            for table, rows in batch.items():
                if rows:
                    column = UPLOAD_TABLES[table]
                    self._store.advance_upload_cursor(table, rows[-1][column])

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        url = f"{self._base_url}{path}"
        timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
        try:
            async with self._session.post(
                url, json=body, headers=self._headers, timeout=timeout
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UplinkError(
                f"POST {url} failed: {describe_error(exc)}", retryable=True, status=None
            ) from exc
        if status == 200:
            return text
        if status == 409:
            raise StoreReplacedError(
                f"POST {url} returned 409: the control plane has agent "
                f"{self._agent_id!r} with another store id than {self._store.store_id}"
                f" ({text[:300]})"
            )
        retryable = status >= 500 or status in (408, 429)
        raise UplinkError(
            f"POST {url} returned {status}: {text[:300]}",
            retryable=retryable,
            status=status,
        )

    def _log_failure(self, exc: UplinkError) -> None:
        if not exc.retryable:
            # A rejected request needs a fix on one side; every occurrence is logged.
            logger.error(
                "control plane rejected the upload: %s; the records stay in the store "
                "and are sent again",
                exc,
            )
            return
        if self._failure_log.allow():
            logger.warning(
                "upload to %s failed: %s; records stay in the store and are retried "
                "(%d more failures not logged)",
                self._base_url,
                exc,
                self._failure_log.take_suppressed(),
            )

    async def _update_backlog(self) -> None:
        backlog = await self._run_in_store(self._store.backlog)
        for table, count in backlog.items():
            self._metrics.sync_backlog.labels(table=table).set(count)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
