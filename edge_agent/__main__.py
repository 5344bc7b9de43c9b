"""Entry point of ``edgepm-agent``: settings from the environment, logging, signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from edge_agent import config
from edge_agent.agent import Agent
from edge_agent.config import AgentSettings
from edge_agent.errors import AgentError

logger = logging.getLogger(__name__)

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    """Run the edge agent until SIGINT or SIGTERM; return the process exit status."""
    parser = argparse.ArgumentParser(
        prog="edgepm-agent",
        description=(
            "Edge agent: validates MQTT telemetry, scores it with the local ONNX "
            "model, stores it in SQLite, raises alerts and syncs to the control "
            "plane. Configured only through environment variables."
        ),
        epilog=config.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)

    try:
        settings = AgentSettings.from_env(os.environ)
    except AgentError as exc:
        print(f"edgepm-agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format=_LOG_FORMAT)
    logger.info(
        "agent %s for site %s starting (broker %s:%d, data %s)",
        settings.agent_id,
        settings.site,
        settings.mqtt_host,
        settings.mqtt_port,
        settings.data_dir,
    )
    try:
        asyncio.run(_run_until_signalled(Agent(settings)))
    except Exception as exc:
        # Known failures (store, port, settings) end with their message. Any other
        # exception is a bug, so it keeps its traceback.
        errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        if not all(isinstance(error, AgentError | OSError) for error in errors):
            raise
        for error in errors:
            logger.error("agent %s stopped: %s", settings.agent_id, error)
        return 1
    logger.info("agent %s stopped", settings.agent_id)
    return 0


async def _run_until_signalled(agent: Agent) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, agent.stop)
    await agent.run()


if __name__ == "__main__":
    sys.exit(main())
