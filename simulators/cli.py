"""The edgepm-simulate command: publish the AI4I file or a synthetic fleet over MQTT."""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from edge_agent.reading import IDENTIFIER_PATTERN, telemetry_topic
from simulators.ai4i import DEFAULT_AI4I_CSV, load_ai4i_rows
from simulators.errors import SimulatorError
from simulators.fleet import encode_reading
from simulators.publisher import (
    PROTOCOLS,
    BrokerConnectionError,
    BrokerUnreachableError,
    MqttPublisher,
    PublishReport,
)
from simulators.replay import plan_replay
from simulators.synthetic import FAILURE_MODES, PROFILES, SyntheticFleet

logger = logging.getLogger(__name__)

PROGRAM = "edgepm-simulate"
ENV_USERNAME = "EDGEPM_MQTT_USERNAME"
ENV_PASSWORD = "EDGEPM_MQTT_PASSWORD"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
DEFAULT_REPLAY_RATE_PER_S = 100.0
DEFAULT_SYNTHETIC_RATE_PER_S = 1.0


@dataclass(frozen=True)
class SimulatorSettings:
    """Everything one run of the command needs, read once at start."""

    mode: str
    host: str
    port: int
    protocol: str
    username: str | None
    password: str | None = field(repr=False)
    site: str
    machines: int
    # Replay: messages per second for the whole fleet. Synthetic: per machine.
    rate_per_s: float
    count: int | None
    duration_s: float | None
    drain_timeout_s: float
    csv_path: Path = DEFAULT_AI4I_CSV
    rows: int | None = None
    seed: int = 0
    profile: str = "published"
    ground_truth_path: Path | None = None

    @property
    def total_rate_per_s(self) -> float:
        """The target publish rate of the whole run; 0 means unthrottled."""
        if self.mode == "synthetic":
            return self.rate_per_s * self.machines
        return self.rate_per_s


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default: sys.argv[1:]); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    stop = threading.Event()
    try:
        with _stop_on_signals(stop):
            return run(settings, stop=stop, out=sys.stdout)
    except BrokerUnreachableError as exc:
        print(
            f"{PROGRAM}: {exc}; start Mosquitto or pass --host/--port", file=sys.stderr
        )
    except BrokerConnectionError as exc:
        print(
            f"{PROGRAM}: {exc}; pass --username/--password (or set {ENV_USERNAME} and "
            f"{ENV_PASSWORD}), or --protocol 3.1.1 for a broker without MQTT 5",
            file=sys.stderr,
        )
    except SimulatorError as exc:
        print(f"{PROGRAM}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(
            f"{PROGRAM}: interrupted again; in-flight messages are lost",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_FAILURE


def run(settings: SimulatorSettings, *, stop: threading.Event, out: TextIO) -> int:
    """Publish the run's readings, print its counts to ``out`` and return the exit code.

    Raises:
        SimulatorError: the input file or the broker failed, as the message explains.
    """
    publisher = MqttPublisher(
        host=settings.host,
        port=settings.port,
        protocol=settings.protocol,
        username=settings.username,
        password=settings.password,
    )
    with contextlib.ExitStack() as stack:
        if settings.mode == "replay":
            messages = _replay_messages(settings)
            fleet = None
        else:
            fleet = SyntheticFleet(
                machines=settings.machines,
                site=settings.site,
                seed=settings.seed,
                profile=PROFILES[settings.profile],
            )
            ground_truth = None
            if settings.ground_truth_path is not None:
                handle = stack.enter_context(
                    settings.ground_truth_path.open("w", newline="", encoding="utf-8")
                )
                ground_truth = _ground_truth_writer(handle)
            messages = _synthetic_messages(fleet, ground_truth)

        stack.enter_context(publisher)
        logger.info(
            "%s: %d machines of site %s, target %s",
            settings.mode,
            settings.machines,
            settings.site,
            _describe_rate(settings.total_rate_per_s),
        )
        report = publisher.publish_stream(
            messages,
            rate_per_s=settings.total_rate_per_s,
            count=settings.count,
            duration_s=settings.duration_s,
            stop=stop,
            drain_timeout_s=settings.drain_timeout_s,
        )

    print(_summarize(settings.mode, report), file=out)
    if fleet is not None:
        counts = fleet.failure_counts()
        listed = ", ".join(f"{mode} {counts[mode]}" for mode in FAILURE_MODES)
        print(
            f"ground truth: {fleet.process_count} processes; failures: {listed}",
            file=out,
        )
    if report.unacknowledged or report.rejected:
        return EXIT_FAILURE
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the command line, with one subcommand per mode."""
    common = argparse.ArgumentParser(add_help=False)
    broker = common.add_argument_group("broker")
    broker.add_argument("--host", default="127.0.0.1", help="broker host (127.0.0.1)")
    broker.add_argument(
        "--port", type=_port, default=1883, help="broker TCP port (1883)"
    )
    broker.add_argument(
        "--protocol",
        choices=tuple(PROTOCOLS),
        default="5",
        help="MQTT version: 5, or 3.1.1 for a broker without MQTT 5 such as amqtt (5)",
    )
    broker.add_argument(
        "--username", help=f"user name for the broker (default: ${ENV_USERNAME})"
    )
    broker.add_argument(
        "--password", help=f"password for the broker (default: ${ENV_PASSWORD})"
    )
    run_options = common.add_argument_group("run")
    run_options.add_argument(
        "--site", type=_identifier, default="plant-a", help="site id (plant-a)"
    )
    run_options.add_argument(
        "--machines", type=_positive_int, default=20, help="number of machines (20)"
    )
    run_options.add_argument(
        "--count", type=_positive_int, help="stop after this many messages"
    )
    run_options.add_argument(
        "--duration-s", type=_positive_float, help="stop after this many seconds"
    )
    run_options.add_argument(
        "--drain-timeout-s",
        type=_positive_float,
        default=10.0,
        help="seconds to wait for outstanding acknowledgements at the end (10)",
    )
    run_options.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level on stderr (info)",
    )

    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Publish simulated machine telemetry to an MQTT broker at QoS 1.",
    )
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    replay = modes.add_parser(
        "replay",
        parents=[common],
        help="publish the rows of the AI4I 2020 file",
        description="Publish AI4I rows in UDI order, dealt to the machines in turn.",
    )
    replay.add_argument(
        "--csv", type=Path, default=DEFAULT_AI4I_CSV, help="AI4I file (the shipped one)"
    )
    replay.add_argument(
        "--rows", type=_positive_int, help="publish only the first N rows in UDI order"
    )
    replay.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULT_REPLAY_RATE_PER_S,
        help="messages per second for the whole fleet; 0 for as fast as possible "
        f"({DEFAULT_REPLAY_RATE_PER_S:g})",
    )

    synthetic = modes.add_parser(
        "synthetic",
        parents=[common],
        help="run machines that follow the AI4I generative process",
        description="Run a seeded fleet of machines that follow the AI4I process, "
        "with its failure modes as ground truth.",
    )
    synthetic.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULT_SYNTHETIC_RATE_PER_S,
        help="messages per second for each machine; 0 for as fast as possible "
        f"({DEFAULT_SYNTHETIC_RATE_PER_S:g})",
    )
    synthetic.add_argument("--seed", type=int, default=0, help="random seed (0)")
    synthetic.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default="published",
        help="parameters of the published description, or as measured on the "
        "AI4I file (published)",
    )
    synthetic.add_argument(
        "--ground-truth",
        type=Path,
        help="write each failing process (machine, seq, modes) to this CSV file",
    )
    return parser


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> SimulatorSettings:
    """Combine parsed arguments with the EDGEPM_MQTT_* environment variables.

    Raises:
        ValueError: a password is given without a user name.
    """
    username = args.username if args.username is not None else environ.get(ENV_USERNAME)
    password = args.password if args.password is not None else environ.get(ENV_PASSWORD)
    if password is not None and username is None:
        raise ValueError(
            f"a password is set but no user name; pass --username or set {ENV_USERNAME}"
        )
    mode_options: dict[str, object] = {}
    if args.mode == "replay":
        mode_options = {"csv_path": args.csv, "rows": args.rows}
    else:
        mode_options = {
            "seed": args.seed,
            "profile": args.profile,
            "ground_truth_path": args.ground_truth,
        }
    return SimulatorSettings(
        mode=args.mode,
        host=args.host,
        port=args.port,
        protocol=args.protocol,
        username=username,
        password=password,
        site=args.site,
        machines=args.machines,
        rate_per_s=args.rate,
        count=args.count,
        duration_s=args.duration_s,
        drain_timeout_s=args.drain_timeout_s,
        **mode_options,  # type: ignore[arg-type]
    )


def _replay_messages(settings: SimulatorSettings) -> Iterator[tuple[str, bytes]]:
    rows = load_ai4i_rows(settings.csv_path, limit=settings.rows)
    logger.info("replaying %d AI4I rows from %s", len(rows), settings.csv_path)
    for topic, reading in plan_replay(
        rows, machines=settings.machines, site=settings.site
    ):
        yield topic, encode_reading(reading)


GroundTruthWriter = Callable[[str, str, int, str, tuple[str, ...]], None]


def _ground_truth_writer(handle: TextIO) -> GroundTruthWriter:
    writer = csv.writer(handle)
    writer.writerow(["site", "machine_id", "seq", "ts", "failure_modes"])

    def write(
        site: str, machine: str, seq: int, ts: str, modes: tuple[str, ...]
    ) -> None:
        writer.writerow([site, machine, seq, ts, ";".join(modes)])

    return write


def _synthetic_messages(
    fleet: SyntheticFleet, ground_truth: GroundTruthWriter | None
) -> Iterator[tuple[str, bytes]]:
    # The publisher draws a process only when it is about to publish it, so every
    # process written to the ground truth is also on the wire.
    for process in fleet.processes():
        reading = process.reading
        if process.failures and ground_truth is not None:
            ground_truth(
                reading.site,
                reading.machine_id,
                reading.machine_seq,
                reading.ts,
                process.failures,
            )
        yield telemetry_topic(reading.site, reading.machine_id), encode_reading(reading)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    # Python delivers signals to the main thread only; elsewhere (e.g. a test
    # runner's worker thread) the command runs without handlers.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        logger.info(
            "received %s; stopping after the in-flight messages are acknowledged",
            signal.Signals(signum).name,
        )
        stop.set()

    previous = {
        sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _summarize(mode: str, report: PublishReport) -> str:
    return (
        f"{mode}: published {report.published}, acknowledged {report.acknowledged}, "
        f"rejected {report.rejected}, unacknowledged {report.unacknowledged}, "
        f"reconnects {report.reconnects}, {report.elapsed_s:.2f} s "
        f"({report.rate_per_s:.0f} messages/s)"
    )


def _describe_rate(rate_per_s: float) -> str:
    return (
        f"{rate_per_s:g} messages/s" if rate_per_s else "as fast as the window allows"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1 to 65535)")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate; expected messages per second, 0 or more"
        )
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive number of seconds"
        )
    return value


def _identifier(text: str) -> str:
    if not IDENTIFIER_PATTERN.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid id; expected 1 to 64 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit"
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
