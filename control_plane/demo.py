"""The demo: the whole loop on one machine, from a broker to the dashboard.

Starts a broker (Mosquitto when installed, else the embedded amqtt broker), the control
plane on SQLite, trains the first model when none exists, then one site's edge agent,
the dashboard and 20 simulated machines replaying AI4I. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

DEFAULT_STATE_DIR = Path("var/demo")
MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto")


class DemoError(RuntimeError):
    """A demo component failed to start; the message names it and the cause."""


@dataclass
class Component:
    """One child process of the demo, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    # A one-shot component (training, a replay that runs out of rows) may exit
    # without stopping the demo.
    is_service: bool = True


@dataclass
class Demo:
    """The running demo's child processes, stopped in reverse start order."""

    state_dir: Path
    components: list[Component] = field(default_factory=list)

    def start(
        self,
        name: str,
        command: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        is_service: bool = True,
    ) -> Component:
        """Start a child process with its output in ``<state_dir>/logs/<name>.log``."""
        log_path = self.state_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            # A process group of its own, so a Ctrl-C in the terminal reaches only the
            # demo, which then stops its children in order.
            start_new_session=True,
        )
        log.close()
        component = Component(name, process, log_path, is_service)
        self.components.append(component)
        return component

    def check_running(self) -> None:
        """Raise DemoError when a long-running component has exited."""
        for component in self.components:
            code = component.process.poll()
            if code is not None and component.is_service:
                raise DemoError(
                    f"{component.name} exited with status {code}; "
                    f"see {component.log_path}"
                )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the children newest first: SIGTERM, then SIGKILL after timeout_s."""
        for component in reversed(self.components):
            if component.process.poll() is None:
                component.process.send_signal(signal.SIGTERM)
                try:
                    component.process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    component.process.kill()
                    component.process.wait(timeout=timeout_s)
            print(f"  stopped {component.name}", flush=True)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Return True when nothing listens on host:port."""
    with socket.socket() as probe:
        # Connections of a stopped run linger in TIME-WAIT; the servers set
        # SO_REUSEADDR and can bind past them, so the probe does as well.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred: int) -> int:
    """Return the preferred port when free, else any free loopback port."""
    if port_is_free(preferred):
        return preferred
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_http(url: str, component: Component, timeout_s: float) -> None:
    """Poll a health URL until it returns 200, or raise DemoError."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if component.process.poll() is not None:
            raise DemoError(
                f"{component.name} exited with status {component.process.returncode} "
                f"while starting; see {component.log_path}"
            )
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.3)
    raise DemoError(
        f"{component.name} did not respond with 200 at {url} within {timeout_s:.0f} s; "
        f"see {component.log_path}"
    )


def wait_for_tcp(port: int, component: Component, timeout_s: float) -> None:
    """Wait until a component accepts TCP connections on a loopback port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if component.process.poll() is not None:
            raise DemoError(
                f"{component.name} exited with status {component.process.returncode}; "
                f"see {component.log_path}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.2)
    raise DemoError(f"{component.name} did not listen on port {port}; see its log")


def mosquitto_user_line() -> str:
    """Return a ``user`` line that keeps Mosquitto able to write its persistence.

    Started as root, Mosquitto drops to the ``mosquitto`` user, which cannot write
    into a folder owned by root. A non-root user keeps its own identity anyway.
    """
    return "user root\n" if os.geteuid() == 0 else ""


def start_broker(demo: Demo, port: int, force_embedded: bool) -> tuple[Component, str]:
    """Start Mosquitto when installed, else amqtt; return it and the MQTT protocol."""
    mosquitto = next(
        (path for path in map(shutil.which, MOSQUITTO_CANDIDATES) if path), None
    )
    if mosquitto and not force_embedded:
        directory = demo.state_dir / "mosquitto"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "mosquitto.conf"
        # The same settings as the edge deployment: TCP_NODELAY for latency, and no
        # cap on queued QoS 1 messages, because Mosquitto drops messages past the
        # default cap of 1,000 for a slow or absent agent.
        config.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory.resolve()}/\n"
            "set_tcp_nodelay true\n"
            "max_queued_messages 0\n"
            f"{mosquitto_user_line()}"
        )
        component = demo.start("broker", [mosquitto, "-c", str(config)])
        print(f"  broker: Mosquitto ({mosquitto}) on 127.0.0.1:{port}", flush=True)
        protocol = "5"
    else:
        try:
            import amqtt  # noqa: F401
        except ImportError as exc:
            raise DemoError(
                "no MQTT broker available: Mosquitto is not installed and amqtt is "
                "missing; install Mosquitto (apt-get install mosquitto) or "
                "pip install 'edgepm[embedded-broker]'"
            ) from exc
        component = demo.start(
            "broker",
            [
                sys.executable,
                "-m",
                "control_plane.embedded_broker",
                "--port",
                str(port),
            ],
        )
        reason = "forced by --embedded-broker" if mosquitto else "Mosquitto not found"
        print(
            f"  broker: embedded amqtt, MQTT 3.1.1 only ({reason}) on 127.0.0.1:{port}",
            flush=True,
        )
        protocol = "3.1.1"
    wait_for_tcp(port, component, timeout_s=15)
    return component, protocol


def run_demo(args: argparse.Namespace) -> None:
    """Start every component, print the URLs and wait for Ctrl-C."""
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(state_dir)
    mqtt_port = pick_port(args.mqtt_port)
    api_port = pick_port(args.api_port)
    dashboard_port = pick_port(args.dashboard_port)
    agent_port = pick_port(args.agent_port)
    api_url = f"http://127.0.0.1:{api_port}"
    control_env = {
        "EDGEPM_DATABASE_URL": f"sqlite:///{state_dir / 'control.sqlite3'}",
        "EDGEPM_MODEL_STORE": str(state_dir / "models"),
        "EDGEPM_HTTP_HOST": "127.0.0.1",
        "EDGEPM_HTTP_PORT": str(api_port),
        "EDGEPM_DASHBOARD_HOST": "127.0.0.1",
        "EDGEPM_DASHBOARD_PORT": str(dashboard_port),
    }
    try:
        print("edgepm demo: starting", flush=True)
        _, protocol = start_broker(demo, mqtt_port, args.embedded_broker)

        print("  control plane: training the first model when none exists", flush=True)
        trainer = demo.start(
            "train",
            [
                sys.executable,
                "-m",
                "control_plane",
                "train",
                "--if-missing",
                *(["--quick"] if args.quick_model else []),
            ],  # fmt: skip
            control_env,
            is_service=False,
        )
        if trainer.process.wait() != 0:
            raise DemoError(f"training failed; see {trainer.log_path}")

        api = demo.start(
            "control-plane",
            [sys.executable, "-m", "control_plane", "serve"],
            control_env,
        )
        wait_for_http(f"{api_url}/readyz", api, timeout_s=60)
        dashboard = demo.start(
            "dashboard",
            [sys.executable, "-m", "control_plane", "dashboard"],
            control_env,
        )
        agent = demo.start(
            "agent",
            [sys.executable, "-m", "edge_agent"],
            {
                "EDGEPM_SITE": args.site,
                "EDGEPM_MQTT_PORT": str(mqtt_port),
                "EDGEPM_MQTT_PROTOCOL": protocol,
                "EDGEPM_DATA_DIR": str(state_dir / "agent"),
                "EDGEPM_CONTROL_PLANE_URL": api_url,
                "EDGEPM_HTTP_PORT": str(agent_port),
            },
        )
        wait_for_http(f"http://127.0.0.1:{agent_port}/readyz", agent, timeout_s=90)
        wait_for_http(f"http://127.0.0.1:{dashboard_port}/", dashboard, timeout_s=60)
        demo.start(
            "simulator",
            [
                sys.executable,
                "-m",
                "simulators",
                "replay",
                "--port",
                str(mqtt_port),
                "--protocol",
                protocol,
                "--site",
                args.site,
                "--machines",
                str(args.machines),
                "--rate",
                str(args.rate),
            ],
            is_service=False,
        )

        print(
            f"\nedgepm demo is running ({args.machines} machines replaying AI4I at "
            f"{args.rate:g} readings/s):\n"
            f"  dashboard       http://127.0.0.1:{dashboard_port}/\n"
            f"  control plane   {api_url}/api/v1/agents\n"
            f"  agent metrics   http://127.0.0.1:{agent_port}/metrics\n"
            f"  MQTT broker     mqtt://127.0.0.1:{mqtt_port}\n"
            f"  state and logs  {state_dir}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        deadline = time.monotonic() + args.duration_s if args.duration_s else None
        while deadline is None or time.monotonic() < deadline:
            demo.check_running()
            time.sleep(1)
    finally:
        print("edgepm demo: stopping", flush=True)
        demo.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C (or --duration-s); return the exit status."""
    parser = argparse.ArgumentParser(
        prog="edgepm-demo", description="Run the whole edgepm loop on this machine."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="folder for databases, models and logs (default var/demo)",
    )
    parser.add_argument("--site", default="plant-a", help="the simulated site's name")
    parser.add_argument(
        "--machines", type=int, default=20, help="simulated machines (default 20)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="readings per second across all machines (default 20)",
    )
    parser.add_argument("--mqtt-port", type=int, default=1883)
    parser.add_argument("--api-port", type=int, default=8080)
    parser.add_argument("--dashboard-port", type=int, default=8050)
    parser.add_argument("--agent-port", type=int, default=9100)
    parser.add_argument(
        "--embedded-broker",
        action="store_true",
        help="use the embedded amqtt broker even if Mosquitto exists",
    )
    parser.add_argument(
        "--quick-model",
        action="store_true",
        help="train the first model with the quick plan (seconds, not a minute)",
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        run_demo(args)
    except KeyboardInterrupt:
        return 0
    except DemoError as exc:
        print(f"edgepm demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
