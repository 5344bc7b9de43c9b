"""The edgepm-control-plane command line, run in-process on real files."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from control_plane.cli import main
from control_plane.storage import open_storage
from tests.conftest import free_port, wait_for_port


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """EDGEPM_* variables pointing at an empty SQLite file and model store."""
    for name in ("EDGEPM_API_TOKEN", "EDGEPM_HTTP_PORT", "EDGEPM_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EDGEPM_DATABASE_URL", f"sqlite:///{tmp_path / 'cp.sqlite3'}")
    monkeypatch.setenv("EDGEPM_MODEL_STORE", str(tmp_path / "models"))
    return tmp_path


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _store_with_v1(model_store_root: Path, directory: Path) -> Path:
    store = directory / "models"
    shutil.copytree(model_store_root / "v1", store / "v1")
    return store


def test_cli_init_db_creates_schema(
    environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init-db"]) == 0

    output = _last_json(capsys)
    assert output["schema_version"] == 1
    assert output["registered_versions"] == []
    assert (environment / "cp.sqlite3").is_file()


def test_cli_init_db_registers_store_versions(
    environment: Path, model_store_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_with_v1(model_store_root, environment)

    assert main(["init-db"]) == 0
    assert _last_json(capsys)["registered_versions"] == [1]
    assert main(["init-db"]) == 0
    assert _last_json(capsys)["registered_versions"] == []


def test_cli_invalid_setting_exits_2(
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EDGEPM_HTTP_PORT", "eighty")

    assert main(["init-db"]) == 2
    assert "error: EDGEPM_HTTP_PORT='eighty'" in capsys.readouterr().err


def test_cli_train_if_missing_skips_existing(
    environment: Path, model_store_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_with_v1(model_store_root, environment)

    assert main(["train", "--if-missing"]) == 0
    assert _last_json(capsys) == {"trained": False, "current_version": 1}


def test_cli_train_missing_data_exits_1(
    environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(environment / "none.csv")]) == 1
    assert "pass --data" in capsys.readouterr().err


def test_cli_train_data_directory_exits_1(
    environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--data", str(environment)]) == 1
    assert (
        f"training data {environment} is a directory, expected a CSV file"
        in capsys.readouterr().err
    )


def test_cli_train_publishes_and_records(
    environment: Path, ai4i_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every failure row and 1,200 healthy ones: enough for each class, and quick.
    frame = pd.read_csv(ai4i_csv, encoding="utf-8-sig")
    failed = (frame["Target"] == 1) | (frame["Failure Type"] != "No Failure")
    small = pd.concat([frame[failed], frame[~failed].iloc[:1200]]).sort_values("UDI")
    data = environment / "small.csv"
    small.to_csv(data, index=False)

    assert main(["train", "--data", str(data), "--quick", "--if-missing"]) == 0

    output = _last_json(capsys)
    assert output["trained"] is True
    assert output["version"] == 1
    assert (environment / "models" / "v1" / "model.onnx").is_file()
    storage = open_storage(f"sqlite:///{environment / 'cp.sqlite3'}")
    try:
        (model,) = storage.list_model_versions()
    finally:
        storage.close()
    assert model.status == "accepted"
    assert model.path == str((environment / "models" / "v1").resolve())
    assert "failure" in model.metrics


def test_cli_score_batch_uses_current_version(
    environment: Path, model_store_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store_with_v1(model_store_root, environment)
    source = environment / "in.csv"
    source.write_text(
        "Type,Air temperature [K],Process temperature [K],Rotational speed [rpm],"
        "Torque [Nm],Tool wear [min]\nM,298.1,308.6,1551,42.8,0\nL,298.2,308.7,1408,"
        "46.3,3\n"
    )
    output = environment / "out.csv"

    assert main(["init-db"]) == 0
    capsys.readouterr()
    assert main(["score-batch", "--input", str(source), "--output", str(output)]) == 0

    assert _last_json(capsys)["model_version"] == 1
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert {"failure_probability", "risk_band", "failure_type"} <= set(rows[0])


def test_cli_score_batch_without_model_exits_1(
    environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = environment / "in.csv"
    source.write_text("Type\nM\n")

    code = main(["score-batch", "--input", str(source), "--output", "out.csv"])

    assert code == 1
    assert "no model version is accepted yet" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["train", "--version", "-3"], "'-3' is not a positive whole number"),
        (["train", "--version", "two"], "'two' is not a positive whole number"),
        (["score-batch", "--version", "-3"], "'-3' is not a positive whole number"),
        (["score-batch", "--chunk-rows", "0"], "'0' is not a positive whole number"),
        (["score-batch", "--parts", "-2"], "'-2' is not a positive whole number"),
        (["score-batch", "--part", "-1"], "'-1' is not a whole number of 0 or more"),
    ],
)
def test_cli_bad_number_exits_2(
    environment: Path,
    arguments: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if arguments[0] == "score-batch":
        arguments = [*arguments, "--input", "in.csv", "--output", "out.csv"]

    with pytest.raises(SystemExit) as stopped:
        main(arguments)

    assert stopped.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (environment / "models").exists()


def test_cli_score_batch_missing_output_dir_exits_1(
    environment: Path, model_store_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = environment / "in.csv"
    source.write_text("Type\nM\n")
    output = environment / "missing" / "out.csv"
    model = str(model_store_root / "v1")

    code = main(
        [
            "score-batch",
            "--model",
            model,
            "--input",
            str(source),
            "--output",
            str(output),
        ]
    )

    assert code == 1
    assert f"error: cannot write the scores to {output}" in capsys.readouterr().err
    assert not output.parent.exists()


@pytest.mark.parametrize(
    ("command", "prefix"),
    [("serve", "EDGEPM_HTTP"), ("dashboard", "EDGEPM_DASHBOARD")],
)
def test_cli_server_port_in_use_exits_1(
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    command: str,
    prefix: str,
) -> None:
    caplog.set_level(logging.INFO)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        monkeypatch.setenv(f"{prefix}_PORT", str(port))

        code = main([command])

    assert code == 1
    assert capsys.readouterr().err == (
        f"error: cannot listen on 127.0.0.1:{port}: address already in use; set "
        f"{prefix}_PORT to a free port\n"
    )
    assert "serving the" not in caplog.text


def test_cli_serve_foreign_address_exits_1(
    environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 192.0.2.0/24 is reserved for documentation, so no interface of this machine
    # has it, and binding it sends nothing on the network.
    monkeypatch.setenv("EDGEPM_HTTP_HOST", "192.0.2.1")

    assert main(["serve"]) == 1
    assert "192.0.2.1 is not an address of this machine" in capsys.readouterr().err


def _run_until_ready(
    command: str, environment: Path, port_variable: str, path: str
) -> tuple[int, str, bytes]:
    """Start a subcommand as a process, fetch one page, stop it with SIGTERM."""
    port = free_port()
    env = {**os.environ, port_variable: str(port), "EDGEPM_LOG_LEVEL": "INFO"}
    process = subprocess.Popen(
        [sys.executable, "-m", "control_plane", command],
        env=env,
        cwd=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout_s=30)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{path}", timeout=10
        ) as reply:
            body = reply.read()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return process.returncode, output.decode(), body


def test_cli_serve_answers_then_stops(environment: Path) -> None:
    code, log, body = _run_until_ready(
        "serve", environment, "EDGEPM_HTTP_PORT", "/readyz"
    )

    assert json.loads(body) == {"status": "ready"}
    assert code == 0
    assert "EDGEPM_API_TOKEN is not set" in log
    assert "API stopped" in log


def test_cli_dashboard_serves_fleet_page(environment: Path) -> None:
    assert main(["init-db"]) == 0

    code, log, body = _run_until_ready(
        "dashboard", environment, "EDGEPM_DASHBOARD_PORT", "/"
    )

    assert b"edgepm fleet" in body
    assert code == 0
    assert "serving the dashboard" in log
    assert "dashboard stopped" in log
