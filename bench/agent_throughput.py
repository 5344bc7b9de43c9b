"""Readings per second that one edge agent validates, scores and commits.

Run: ``.venv/bin/python bench/agent_throughput.py --model-dir DIR [--count 20000]
[--runs 3]`` with DIR a model version directory (manifest.json and model.onnx). It
starts a private Mosquitto configured like the edge deployment unless ``--host`` and
``--port`` name a running broker. The agent runs in this process with its default
micro-batches (256 messages or 10 ms). A child process publishes at QoS 1 through the
simulators' publisher, throttled to its in-flight window of 20, so that the publisher
and the agent do not share one interpreter lock. The uplink points at a closed port,
so the figure covers intake, validation, scoring, the SQLite commit and the
acknowledgement only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from edge_agent.agent import Agent
from edge_agent.config import AgentSettings
from edge_agent.models import ModelDirectory
from edge_agent.reading import Reading, telemetry_topic
from simulators.fleet import encode_reading, utc_timestamp
from simulators.publisher import MqttPublisher

from broker import free_port, private_mosquitto

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MACHINES = 10
# Each run gives up after this long, so a stalled agent cannot hang the benchmark.
RUN_TIMEOUT_S = 300.0
_PUBLISHING = "publishing"


def measure_agent_rate(host: str, port: int, model_dir: Path, count: int) -> float:
    """Return readings per second from the first publish to the last commit.

    A fresh agent with a fresh store and session subscribes to a site of its own.
    Then ``count`` readings spread over ten machines are published. The clock stops
    when the agent's counter of stored (and so scored) readings reaches ``count``.

    Raises:
        RuntimeError: the agent did not store every reading within the timeout.
    """
    return asyncio.run(_measure(host, port, model_dir, count))


async def _measure(host: str, port: int, model_dir: Path, count: int) -> float:
    site = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as directory:
        settings = AgentSettings(
            site=site,
            mqtt_host=host,
            mqtt_port=port,
            data_dir=Path(directory),
            http_port=free_port(),
            control_plane_url=f"http://127.0.0.1:{free_port()}",
            log_level="WARNING",
        )
        ModelDirectory(settings.model_path).install_directory(model_dir)
        agent = Agent(settings)
        task = asyncio.create_task(agent.run())
        try:
            await agent.wait_ready(30.0)
            return await _publish_and_time(agent, host, port, site, count)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 60.0)


async def _publish_and_time(
    agent: Agent, host: str, port: int, site: str, count: int
) -> float:
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--publish", site, "--host", host,
        "--port", str(port), "--count", str(count),
        stdout=subprocess.PIPE,
        cwd=PROJECT_ROOT,
    )  # fmt: skip
    try:
        assert publisher.stdout is not None
        line = await asyncio.wait_for(publisher.stdout.readline(), 30.0)
        if line.decode().strip() != _PUBLISHING:
            raise RuntimeError("the publisher process did not start publishing")
        started = time.monotonic()
        deadline = started + RUN_TIMEOUT_S
        while _stored(agent) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"agent stored {_stored(agent):.0f} of {count} readings in "
                    f"{RUN_TIMEOUT_S} s"
                )
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        await asyncio.wait_for(publisher.wait(), 60.0)
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
    return count / elapsed


def _stored(agent: Agent) -> float:
    value = agent.metrics.registry.get_sample_value(
        "edgepm_agent_readings_stored_total"
    )
    return value or 0.0


def _publish(host: str, port: int, site: str, count: int) -> None:
    # Runs in the child process.
    timestamp = utc_timestamp()
    messages = []
    for index in range(count):
        machine = f"m-{index % MACHINES:03d}"
        reading = Reading(
            site, machine, timestamp, index // MACHINES, "M",
            298.1, 308.6, 1551.0, 42.8, float(index % 200),
        )  # fmt: skip
        messages.append((telemetry_topic(site, machine), encode_reading(reading)))
    with MqttPublisher(host=host, port=port) as publisher:
        print(_PUBLISHING, flush=True)
        report = publisher.publish_stream(messages)
    if report.acknowledged != count:
        raise SystemExit(
            f"broker acknowledged {report.acknowledged} of {count} readings"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="a model version directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, help="a running broker; default: a private one"
    )
    parser.add_argument("--count", type=int, default=20_000, help="readings per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--publish", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.publish:
        _publish(args.host, args.port, args.publish, args.count)
        return
    if args.model_dir is None:
        parser.error("--model-dir is required; point it at a directory like models/v1")
    # The agent's warnings about the closed uplink port are expected here.
    logging.basicConfig(level=logging.ERROR)

    with contextlib.ExitStack() as stack:
        port = args.port or stack.enter_context(private_mosquitto())
        rates = []
        for run in range(1, args.runs + 1):
            rate = measure_agent_rate(args.host, port, args.model_dir, args.count)
            rates.append(rate)
            print(f"run {run}: {args.count} readings, {rate:,.0f} readings/s")
    print(f"median: {statistics.median(rates):,.0f} readings/s")


if __name__ == "__main__":
    main()
