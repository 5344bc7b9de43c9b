"""The edge agent: one asyncio TaskGroup of named tasks around a store thread.

Startup opens the store and the health server, loads (or downloads) the model, and
only then subscribes to telemetry, so no reading waits unscored in memory. Until a
model is loaded, the broker's persistent session keeps the messages. Shutdown runs in
a fixed order: stop intake, drain the pipeline, a last sync, close the store.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp

from edge_agent.alerts import AlertPolicy, AlertPublisher
from edge_agent.config import AgentSettings
from edge_agent.errors import ModelUnavailableError
from edge_agent.health import create_health_app, start_health_server
from edge_agent.intake import Delivery, MqttIntake
from edge_agent.manifest import ManifestError
from edge_agent.metrics import AgentMetrics
from edge_agent.models import ModelDirectory, fetch_current_model
from edge_agent.pipeline import BatchOutcome, Pipeline
from edge_agent.retry import backoff_delay
from edge_agent.scorer import OnnxScorer
from edge_agent.store import LocalStore
from edge_agent.uplink import Uplink

logger = logging.getLogger(__name__)

# Shutdown budget, in seconds: the whole sequence fits in the 30 s that container
# runtimes and systemd give by default between SIGTERM and SIGKILL.
DRAIN_TIMEOUT_S = 10.0
FINAL_SYNC_TIMEOUT_S = 5.0
_MODEL_RETRY_CAP_S = 60.0
_READY_POLL_S = 0.02

_Result = TypeVar("_Result")


class Agent:
    """One edge agent, runnable in-process.

    ``await agent.run()`` runs until ``agent.stop()`` is called (the entry point calls
    it on SIGINT and SIGTERM), then shuts down in order and returns.

    Args:
        settings: the validated settings.
    """

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.metrics = AgentMetrics()
        self.counters = {
            "readings_stored": 0,
            "readings_quarantined": 0,
            "alerts_raised": 0,
        }
        self.scorer: OnnxScorer | None = None
        self._stop_requested = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: LocalStore | None = None
        self._intake: MqttIntake | None = None
        self._pipeline: Pipeline | None = None
        self._publisher: AlertPublisher | None = None
        self._uplink: Uplink | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def stop(self) -> None:
        """Request a graceful shutdown; call it on the event loop's thread."""
        self._stop_requested.set()

    def readiness(self) -> list[str]:
        """Return why the agent is not ready; an empty list means ready."""
        reasons = []
        if self.scorer is None:
            reasons.append("no model loaded")
        if self._intake is None or not self._intake.is_connected:
            reasons.append(
                f"not connected and subscribed to MQTT broker "
                f"{self.settings.mqtt_host}:{self.settings.mqtt_port}"
            )
        if self._store is None:
            reasons.append("store not open")
        elif self._pipeline is not None and not self._pipeline.is_store_writable:
            reasons.append(f"store {self.settings.database_path} not writable")
        return reasons

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the agent is ready.

        Raises:
            TimeoutError: not ready after ``timeout_s`` seconds; names the reasons.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while reasons := self.readiness():
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"agent {self.settings.agent_id} not ready after {timeout_s} s: "
                    + "; ".join(reasons)
                )
            await asyncio.sleep(_READY_POLL_S)

    async def run(self) -> None:
        """Run until ``stop()``; then shut down in order and return."""
        self._loop = asyncio.get_running_loop()
        # One thread owns the SQLite connection and the onnxruntime session, so
        # neither needs locks and commits happen in sequence order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        settings = self.settings
        try:
            self._store = await self._in_store(LocalStore.open, settings.database_path)
            app = create_health_app(
                readiness=self.readiness,
                registry=self.metrics.registry,
                agent_id=settings.agent_id,
            )
            runner = await start_health_server(
                app, host=settings.http_host, port=settings.http_port
            )
            try:
                async with aiohttp.ClientSession() as session:
                    await self._run_tasks(session)
            finally:
                await runner.cleanup()
        finally:
            if self._intake is not None:
                await self._intake.stop()
            if self._store is not None:
                await self._in_store(self._store.close)
                logger.info("store %s closed", settings.database_path)
            self._executor.shutdown(wait=True)

    async def _run_tasks(self, session: aiohttp.ClientSession) -> None:
        assert self._store is not None
        settings = self.settings
        self._uplink = Uplink(
            session=session,
            control_plane_url=settings.control_plane_url,
            api_token=settings.api_token,
            agent_id=settings.agent_id,
            site=settings.site,
            store=self._store,
            run_in_store=self._in_store,
            metrics=self.metrics,
            batch_size=settings.sync_batch,
            interval_s=settings.sync_interval_s,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            status=self._status,
        )
        async with asyncio.TaskGroup() as group:
            self._start(group, "uplink", self._uplink.run())
            self._start(group, "heartbeat", self._uplink.run_heartbeat())
            self._start(group, "model-loader", self._start_scoring(session, group))
            await self._stop_requested.wait()
            await self._shut_down()

    async def _start_scoring(
        self, session: aiohttp.ClientSession, group: asyncio.TaskGroup
    ) -> None:
        """Load the model, then start the pipeline, the publisher and the intake."""
        assert self._store is not None and self._loop is not None
        settings = self.settings
        self.scorer = await self._load_model(session)
        self.metrics.model_version.set(self.scorer.version)

        # Unbounded here because the intake bounds what it hands over (its capacity).
        queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._intake = MqttIntake(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            protocol=settings.mqtt_protocol,
            client_id=settings.agent_id,
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            site=settings.site,
            receive_maximum=settings.mqtt_receive_maximum,
            session_expiry_s=settings.mqtt_session_expiry_s,
            queue=queue,
            loop=self._loop,
            metrics=self.metrics,
            capacity=2 * max(settings.mqtt_receive_maximum, settings.batch_max),
        )
        self._publisher = AlertPublisher(
            mqtt=self._intake,
            store=self._store,
            run_in_store=self._in_store,
            site=settings.site,
            agent_id=settings.agent_id,
        )
        self._pipeline = Pipeline(
            queue=queue,
            store=self._store,
            scorer=self.scorer,
            run_in_store=self._in_store,
            ack=self._intake.acknowledge,
            metrics=self.metrics,
            alert_policy=AlertPolicy(
                threshold=self.scorer.manifest.decision_threshold,
                clear_ratio=settings.alert_clear_ratio,
                clear_count=settings.alert_clear_count,
            ),
            batch_max=settings.batch_max,
            batch_wait_s=settings.batch_wait_s,
            receive_window=settings.mqtt_receive_maximum,
            on_committed=self._on_committed,
        )
        self._intake.on_subscribed = self._publisher.notify
        self._start(group, "pipeline", self._pipeline.run())
        self._start(group, "alert-publisher", self._publisher.run())
        self._intake.start()

    async def _load_model(self, session: aiohttp.ClientSession) -> OnnxScorer:
        """Load the active model or download the current one, retrying until done."""
        assert self._uplink is not None
        directory = ModelDirectory(self.settings.model_path)
        attempt = 0
        while True:
            scorer = await self._in_store(directory.load_active)
            if scorer is not None:
                return scorer
            try:
                manifest_json, artifact = await fetch_current_model(
                    session=session,
                    control_plane_url=self.settings.control_plane_url,
                    headers=self._uplink.headers,
                    site=self.settings.site,
                )
                return await self._in_store(directory.install, manifest_json, artifact)
            except (ModelUnavailableError, ManifestError) as exc:
                attempt += 1
                delay = backoff_delay(attempt, base_s=1.0, cap_s=_MODEL_RETRY_CAP_S)
                logger.warning(
                    "no model for agent %s yet: %s; telemetry waits at the broker, "
                    "retrying in %.1f s",
                    self.settings.agent_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _shut_down(self) -> None:
        logger.info("agent %s shutting down", self.settings.agent_id)
        self._cancel("model-loader")

        # 1. Stop intake: the broker keeps every message not yet acknowledged.
        if self._intake is not None:
            await self._intake.stop()

        # 2. Drain: commit what was received. Its acks cannot be sent any more, so the
        #    broker delivers those messages again and the store skips them.
        if self._pipeline is not None:
            await self._pipeline.drain(DRAIN_TIMEOUT_S)
        self._cancel("pipeline")
        self._cancel("alert-publisher")

        # 3. A last sync, bounded in time; what is left goes up after the next start.
        self._cancel("uplink")
        self._cancel("heartbeat")
        if self._uplink is not None:
            await self._uplink.flush(FINAL_SYNC_TIMEOUT_S)
        # 4. The store closes in run() once every task has ended.

    def _start(self, group: asyncio.TaskGroup, name: str, coroutine: Any) -> None:
        self._tasks[name] = group.create_task(coroutine, name=name)

    def _cancel(self, name: str) -> None:
        task = self._tasks.get(name)
        if task is not None:
            task.cancel()

    def _on_committed(self, outcome: BatchOutcome) -> None:
        self.counters["readings_stored"] += outcome.stored
        self.counters["readings_quarantined"] += len(outcome.quarantine_reasons)
        self.counters["alerts_raised"] += outcome.alert_states.count("raised")
        if outcome.alert_states and self._publisher is not None:
            self._publisher.notify()
        if self._uplink is not None:
            records = outcome.stored + len(outcome.quarantine_reasons)
            self._uplink.notify_stored(records)

    def _status(self) -> dict[str, Any]:
        return {
            "model_version": self.scorer.version if self.scorer else None,
            "counters": dict(self.counters),
        }

    async def _in_store(self, function: Callable[..., _Result], *args: Any) -> _Result:
        """Run a blocking call on the store thread and return its result."""
        assert self._loop is not None and self._executor is not None
        call = functools.partial(function, *args)
        return await self._loop.run_in_executor(self._executor, call)
