"""The edgepm-simulate command line: both modes, credentials, signals and errors."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.reading import parse_reading, telemetry_subscription
from simulators.cli import build_parser, main, settings_from_args
from simulators.synthetic import simulate_processes
from tests.conftest import PROJECT_ROOT, Broker, free_port
from tests.simulators.brokers import PASSWORD, USERNAME, mosquitto_with_password
from tests.simulators.subscriber import subscribe

SUMMARY = re.compile(
    r"published (\d+), acknowledged (\d+), rejected 0, unacknowledged 0"
)


@pytest.mark.mqtt
def test_cli_replay_publishes_rows(
    mosquitto: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "replay",
        "--port",
        str(mosquitto.port),
        "--rows",
        "500",
        "--rate",
        "0",
        "--machines",
        "5",
        "--site",
        "plant-b",
    ]

    with subscribe(
        mosquitto.host, mosquitto.port, telemetry_subscription("plant-b")
    ) as sub:
        exit_code = main(argv)
        received = sub.wait_for(500)

    assert exit_code == 0
    assert "replay: published 500, acknowledged 500" in capsys.readouterr().out
    readings = [parse_reading(payload, topic) for topic, payload in received]
    assert len(readings) == 500
    assert {reading.machine_id for reading in readings} == {
        f"m-00{i}" for i in range(1, 6)
    }


@pytest.mark.mqtt
def test_cli_synthetic_writes_ground_truth(
    mosquitto: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truth_path = tmp_path / "truth.csv"
    argv = [
        "synthetic",
        "--port",
        str(mosquitto.port),
        "--count",
        "3000",
        "--rate",
        "0",
        "--seed",
        "7",
        "--machines",
        "20",
        "--ground-truth",
        str(truth_path),
    ]

    with subscribe(
        mosquitto.host, mosquitto.port, telemetry_subscription("plant-a")
    ) as sub:
        exit_code = main(argv)
        received = sub.wait_for(3_000)

    assert exit_code == 0
    out = capsys.readouterr().out
    assert "synthetic: published 3000, acknowledged 3000" in out
    assert len(received) == 3_000
    expected = {
        (p.reading.machine_id, p.reading.machine_seq): ";".join(p.failures)
        for p in simulate_processes(3_000, machines=20, seed=7)
        if p.failures
    }
    with truth_path.open(newline="", encoding="utf-8") as handle:
        written = {
            (row["machine_id"], int(row["seq"])): row["failure_modes"]
            for row in csv.DictReader(handle)
        }
    assert written == expected
    assert "ground truth: 3000 processes; failures: Tool Wear Failure" in out


def test_cli_unreachable_broker_prints_hint(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()

    exit_code = main(["replay", "--port", str(port), "--rows", "5"])

    assert exit_code == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"cannot connect to MQTT broker at 127.0.0.1:{port}: connection refused; "
            "start Mosquitto or pass --host/--port"
        )
    )


@pytest.mark.mqtt
def test_cli_wrong_password_prints_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with mosquitto_with_password(tmp_path / "broker") as port:
        exit_code = main(
            [
                "synthetic",
                "--port",
                str(port),
                "--count",
                "5",
                "--username",
                USERNAME,
                "--password",
                "wrong",
            ]
        )

    assert exit_code == 1
    err = capsys.readouterr().err
    assert "refused the connection: Not authorized" in err
    assert "pass --username/--password (or set EDGEPM_MQTT_USERNAME" in err


@pytest.mark.mqtt
def test_cli_reads_password_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGEPM_MQTT_USERNAME", USERNAME)
    monkeypatch.setenv("EDGEPM_MQTT_PASSWORD", PASSWORD)

    with mosquitto_with_password(tmp_path / "broker") as port:
        exit_code = main(
            ["synthetic", "--port", str(port), "--count", "50", "--rate", "0"]
        )

    assert exit_code == 0
    assert "published 50, acknowledged 50" in capsys.readouterr().out


def test_cli_settings_prefer_flags_over_environment() -> None:
    args = build_parser().parse_args(["replay", "--username", "flag-user"])
    environ = {"EDGEPM_MQTT_USERNAME": "env-user", "EDGEPM_MQTT_PASSWORD": "env-secret"}

    settings = settings_from_args(args, environ)

    assert settings.username == "flag-user"
    assert settings.password == "env-secret"
    assert "env-secret" not in repr(settings)


def test_cli_synthetic_rate_is_per_machine() -> None:
    args = build_parser().parse_args(["synthetic", "--machines", "8", "--rate", "2.5"])

    settings = settings_from_args(args, {})

    assert settings.total_rate_per_s == 20.0
    assert (settings.host, settings.port, settings.site) == (
        "127.0.0.1",
        1883,
        "plant-a",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "--port", "70000"], "70000 is not a TCP port"),
        (["replay", "--rate", "-1"], "'-1' is not a rate"),
        (["replay", "--rows", "0"], "0 is not 1 or more"),
        (["replay", "--duration-s", "0"], "'0' is not a positive number of seconds"),
        (["synthetic", "--site", "plant a"], "'plant a' is not a valid id"),
        (["synthetic", "--protocol", "3"], "invalid choice: '3'"),
        (["synthetic", "--password", "x"], "a password is set but no user name"),
    ],
)
def test_cli_rejects_invalid_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.mqtt
def test_cli_stops_cleanly_on_sigterm(mosquitto: Broker) -> None:
    argv = [
        sys.executable,
        "-m",
        "simulators.cli",
        "synthetic",
        "--port",
        str(mosquitto.port),
        "--machines",
        "4",
        "--rate",
        "50",
    ]

    with subscribe(
        mosquitto.host, mosquitto.port, telemetry_subscription("plant-a")
    ) as sub:
        process = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert len(sub.wait_for(100)) >= 100, "the simulator published nothing"
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)
        summary = SUMMARY.search(out)
        assert summary is not None, (out, err)
        published = int(summary.group(1))
        received = sub.wait_for(published)

    assert process.returncode == 0, err
    assert "received SIGTERM" in err
    assert int(summary.group(2)) == published
    assert len(received) == published


def test_cli_runs_as_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulators", "synthetic", "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "--ground-truth" in result.stdout
