"""Prometheus metrics of one edge agent, served on /metrics.

Each agent owns its registry, so several agents can run in one process (as in tests)
without clashing on prometheus_client's global registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edge_agent.store import UPLOAD_TABLES

# Batch sizes are powers of two up to the largest EDGEPM_BATCH_MAX worth using.
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
# ONNX scoring of a micro-batch takes tens of microseconds to a few milliseconds.
_SCORING_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class AgentMetrics:
    """The agent's counters, gauges and histograms in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.readings_stored = Counter(
            "edgepm_agent_readings_stored",
            "Readings validated, scored and committed to the local store.",
            registry=registry,
        )
        self.readings_duplicate = Counter(
            "edgepm_agent_readings_duplicate",
            "Redelivered readings skipped because the store already has them.",
            registry=registry,
        )
        self.readings_quarantined = Counter(
            "edgepm_agent_readings_quarantined",
            "Payloads that failed validation, by reason class.",
            ["reason"],
            registry=registry,
        )
        self.predictions = Counter(
            "edgepm_agent_predictions",
            "Predictions stored, by risk band.",
            ["risk_band"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "edgepm_agent_batch_size",
            "Messages per committed micro-batch.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.scoring_seconds = Histogram(
            "edgepm_agent_scoring_seconds",
            "Time to score one micro-batch with onnxruntime, in seconds.",
            buckets=_SCORING_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "edgepm_agent_store_errors",
            "Micro-batches whose commit failed and was retried.",
            registry=registry,
        )
        self.intake_waits = Counter(
            "edgepm_agent_intake_waits",
            "Times the MQTT thread paused reading because the agent held too much.",
            registry=registry,
        )
        self.mqtt_connected = Gauge(
            "edgepm_agent_mqtt_connected",
            "1 while connected and subscribed to the broker, else 0.",
            registry=registry,
        )
        self.alerts = Counter(
            "edgepm_agent_alerts",
            "Alert transitions committed, by state (raised or cleared).",
            ["state"],
            registry=registry,
        )
        self.sync_backlog = Gauge(
            "edgepm_agent_sync_backlog",
            "Records not yet acknowledged by the control plane, by table.",
            ["table"],
            registry=registry,
        )
        self.uploads = Counter(
            "edgepm_agent_uploads",
            "Ingest requests to the control plane, by result (ok or failed).",
            ["result"],
            registry=registry,
        )
        self.model_version = Gauge(
            "edgepm_agent_model_version",
            "Version of the loaded model, 0 before one is loaded.",
            registry=registry,
        )
        for table in UPLOAD_TABLES:
            self.sync_backlog.labels(table=table)
        for result in ("ok", "failed"):
            self.uploads.labels(result=result)
        for state in ("raised", "cleared"):
            self.alerts.labels(state=state)
