"""An embedded MQTT 3.1.1 broker (amqtt) for running the demo where Mosquitto is absent.

amqtt keeps nothing across restarts and is several times slower than Mosquitto, so it
serves demos only; sites run Mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

logger = logging.getLogger(__name__)


async def serve_broker(host: str, port: int) -> None:
    """Run an anonymous amqtt broker on host:port until cancelled or signalled."""
    from amqtt.broker import Broker

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                    "allow_anonymous": True
                },
            },
        }
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    await broker.start()
    logger.info("embedded amqtt broker (MQTT 3.1.1) listening on %s:%d", host, port)
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Parse ``--host`` and ``--port`` and run the broker."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # amqtt and its state machine log every packet and transition at INFO.
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(serve_broker(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
