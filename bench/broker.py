"""A private Mosquitto for benchmarks, configured like the edge deployment's broker."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 at the time of the call."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    """Block until 127.0.0.1:port accepts connections, or exit with a message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 0.2),
        ):
            return
        time.sleep(0.05)
    raise SystemExit(
        f"the private Mosquitto did not listen on port {port} in {timeout_s} s"
    )


@contextlib.contextmanager
def private_mosquitto() -> Iterator[int]:
    """Run Mosquitto on a free loopback port for the block; yield the port.

    TCP_NODELAY on and no cap on queued QoS 1 messages, as on the edge nodes.
    """
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit("mosquitto is not installed; install it or pass --host/--port")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as directory:
        config = Path(directory) / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            "set_tcp_nodelay true\nmax_queued_messages 0\nmax_inflight_messages 20\n"
        )
        broker = subprocess.Popen(
            [binary, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port)
            yield port
        finally:
            broker.terminate()
            broker.wait(timeout=10)
