"""Brokers for publisher tests beyond the anonymous Mosquitto fixture."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from amqtt.broker import Broker as AmqttBroker

from tests.conftest import free_port, mosquitto_binary, wait_for_port

USERNAME = "sim"
PASSWORD = "s3cret"
ALLOWED_TOPICS = "edgepm/#"


@contextmanager
def mosquitto_with_password(directory: Path) -> Iterator[int]:
    """Run a Mosquitto that needs USERNAME/PASSWORD and lets it write ALLOWED_TOPICS.

    Yields the port.
    """
    directory.mkdir(parents=True, exist_ok=True)
    passwords = directory / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), USERNAME, PASSWORD],
        check=True,
        capture_output=True,
        timeout=10,
    )
    acl = directory / "acl"
    acl.write_text(f"user {USERNAME}\ntopic readwrite {ALLOWED_TOPICS}\n")
    port = free_port()
    config = directory / "mosquitto.conf"
    # Started as root, Mosquitto switches to its own user before it reads the password
    # file, which it then cannot open under pytest's private temporary directory.
    # "user root" keeps the starting user; a non-root start ignores it.
    config.write_text(
        "user root\n"
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {passwords}\n"
        f"acl_file {acl}\n"
        "set_tcp_nodelay true\n"
        "log_dest stderr\n"
    )
    with (directory / "mosquitto.log").open("ab") as log:
        process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def amqtt_broker() -> Iterator[int]:
    """Run an embedded amqtt broker (MQTT 3.1.1 only) on a loopback port in a thread.

    Yields the port.
    """
    port = free_port()
    config = {
        # Without an explicit address amqtt listens on 0.0.0.0.
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                "allow_anonymous": True
            }
        },
    }
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="amqtt-broker", daemon=True)
    thread.start()
    broker: AmqttBroker | None = None
    try:
        # amqtt creates futures in its constructor from the current event loop, so
        # it is built on the loop's own thread, where that loop is running.
        broker = asyncio.run_coroutine_threadsafe(_create(config), loop).result(10)
        asyncio.run_coroutine_threadsafe(broker.start(), loop).result(timeout=10)
        yield port
    finally:
        if broker is not None:
            shutdown = asyncio.run_coroutine_threadsafe(_shutdown(broker), loop)
            shutdown.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def _create(config: dict[str, Any]) -> AmqttBroker:
    return AmqttBroker(config)


async def _shutdown(broker: AmqttBroker) -> None:
    await broker.shutdown()
    # amqtt 0.12 can leave a broadcast task pending after shutdown; a task dropped
    # with its loop would warn that its coroutine was never awaited.
    leftovers = [
        task for task in asyncio.all_tasks() if task is not asyncio.current_task()
    ]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)
