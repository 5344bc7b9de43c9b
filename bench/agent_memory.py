"""Peak resident memory of the edge agent process under load, against its 256 MiB limit.

Run: ``.venv/bin/python bench/agent_memory.py --store DIR [--rate 1000]
[--duration-s 40] [--runs 3]`` with DIR a model store that contains at least one
version (``edgepm-control-plane train`` writes one). Each run starts a private
Mosquitto, the control plane API on a SQLite file that records the store's
versions, and ``edgepm-agent`` as its own process, which downloads the current
model. The synthetic simulator then publishes at the given rate, and the agent's
VmHWM (peak resident set, from /proc) is read after the simulator finished. The k3s
manifests limit the agent container to 256 MiB; this shows how much of it one
process uses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MACHINES = 50
READY_TIMEOUT_S = 90.0
LIMIT_MIB = 256


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 at the time of the call."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_url(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll an HTTP URL until it returns 200, and fail when the process exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args} exited with status {process.returncode}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not respond with 200 within {timeout_s} s")


def peak_rss_mib(pid: int) -> float:
    """Return a process's peak resident set (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


@contextlib.contextmanager
def started(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a child process with its output in a log file; stop it on exit."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def run_once(store: Path, rate: float, duration_s: float, work: Path) -> float:
    """Run broker, API, agent and simulator once; return the agent's peak RSS in MiB."""
    mqtt_port, api_port, agent_port = free_port(), free_port(), free_port()
    config = work / "mosquitto.conf"
    # As the edge deployment's broker: no queue cap, TCP_NODELAY. "user root" keeps
    # Mosquitto from switching users when this runs as root.
    config.write_text(
        f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n"
        "set_tcp_nodelay true\nmax_queued_messages 0\n"
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    control = {
        "EDGEPM_DATABASE_URL": f"sqlite:///{work / 'control.sqlite3'}",
        "EDGEPM_MODEL_STORE": str(store),
        "EDGEPM_HTTP_PORT": str(api_port),
    }
    python = sys.executable
    subprocess.run(
        [python, "-m", "control_plane", "init-db"],
        env={**os.environ, **control},
        check=True,
        capture_output=True,
        timeout=120,
    )
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with (
        started([mosquitto, "-c", str(config)], {}, work / "mosquitto.log"),
        started(
            [python, "-m", "control_plane", "serve"], control, work / "api.log"
        ) as api,
    ):
        wait_for_url(f"http://127.0.0.1:{api_port}/readyz", api, READY_TIMEOUT_S)
        agent_env = {
            "EDGEPM_SITE": "bench",
            "EDGEPM_MQTT_PORT": str(mqtt_port),
            "EDGEPM_DATA_DIR": str(work / "agent"),
            "EDGEPM_CONTROL_PLANE_URL": f"http://127.0.0.1:{api_port}",
            "EDGEPM_HTTP_PORT": str(agent_port),
        }
        agent_command = [python, "-m", "edge_agent"]
        with started(agent_command, agent_env, work / "agent.log") as agent:
            wait_for_url(
                f"http://127.0.0.1:{agent_port}/readyz", agent, READY_TIMEOUT_S
            )
            subprocess.run(
                [
                    python,
                    "-m",
                    "simulators",
                    "synthetic",
                    "--port",
                    str(mqtt_port),
                    "--site",
                    "bench",
                    "--machines",
                    str(MACHINES),
                    "--rate",
                    str(rate / MACHINES),
                    "--duration-s",
                    str(duration_s),
                ],
                check=True,
                capture_output=True,
                timeout=duration_s + 120,
            )
            return peak_rss_mib(agent.pid)


def main() -> int:
    """Run the measurement and print each run's peak and the median."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--store", type=Path, required=True, help="model store directory"
    )
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="readings/s in all (1000)"
    )
    parser.add_argument("--duration-s", type=float, default=40.0, help="seconds (40)")
    parser.add_argument("--runs", type=int, default=3, help="runs (3)")
    args = parser.parse_args()

    peaks = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="edgepm-agent-memory-") as directory:
            peak = run_once(
                args.store.resolve(), args.rate, args.duration_s, Path(directory)
            )
        peaks.append(peak)
        print(f"run {run}: agent peak RSS {peak:.1f} MiB", flush=True)
    median = statistics.median(peaks)
    print(
        f"median peak RSS {median:.1f} MiB at {args.rate:g} readings/s for "
        f"{args.duration_s:g} s: {median / LIMIT_MIB:.0%} of the {LIMIT_MIB} MiB limit"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
