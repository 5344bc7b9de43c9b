"""Benchmark of ingest through the HTTP API on SQLite and PostgreSQL.

Run: ``.venv/bin/python bench/ingest.py [--batches 20] [--batch-size 1000]
[--postgres postgresql://postgres@127.0.0.1:5432/postgres]``. Each batch contains
``batch-size`` readings and as many predictions; every batch is posted once fresh
and once replayed. Prints rows per second (readings plus predictions) for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from aiohttp import web
from psycopg.conninfo import conninfo_to_dict

from control_plane.api import create_app
from control_plane.config import Settings

REPEATS = 3


def make_batch(first_seq: int, size: int) -> dict[str, Any]:
    """Build one ingest body with ``size`` readings and their predictions."""
    readings = []
    predictions = []
    for seq in range(first_seq, first_seq + size):
        readings.append(
            {
                "seq": seq,
                "received_at": "2026-12-04T15:00:00.100+00:00",
                "machine_id": f"m-{seq % 20:03d}",
                "machine_seq": seq,
                "ts": f"2026-12-04T15:{seq // 60 % 60:02d}:{seq % 60:02d}.000+00:00",
                "product_type": "M",
                "air_temperature_k": 298.1,
                "process_temperature_k": 308.6,
                "rotational_speed_rpm": 1551.0,
                "torque_nm": 42.8,
                "tool_wear_min": float(seq % 240),
            }
        )
        predictions.append(
            {
                "reading_seq": seq,
                "model_version": 1,
                "failure_probability": 0.02,
                "failure_label": 0,
                "risk_band": "low",
                "failure_type": "No Failure",
                "failure_type_probability": 0.97,
            }
        )
    return {
        "agent_id": "bench-agent",
        "site": "bench",
        "store_id": "00000000-0000-4000-8000-00000000be9c",
        "readings": readings,
        "predictions": predictions,
    }


async def post_all(database_url: str, bodies: list[bytes]) -> tuple[float, float]:
    """Post every body fresh, then again as a replay; return rows/s for each."""
    app = create_app(Settings(database_url=database_url))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}/api/v1/ingest"
    rows = sum(len(json.loads(body)["readings"]) * 2 for body in bodies)
    rates = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in ("fresh", "replay"):
                started = time.perf_counter()
                for body in bodies:
                    async with session.post(
                        url, data=body, headers={"Content-Type": "application/json"}
                    ) as response:
                        assert response.status == 200, await response.text()
                rates.append(rows / (time.perf_counter() - started))
    finally:
        await runner.cleanup()
    return rates[0], rates[1]


def postgres_database(server_url: str) -> tuple[str, str]:
    """Create a scratch database; return its URL and name."""
    name = f"edgepm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(server_url)
    user = params.get("user", "postgres")
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    return f"postgresql://{user}@{host}:{port}/{name}", name


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    bodies = [
        json.dumps(make_batch(1 + index * args.batch_size, args.batch_size)).encode()
        for index in range(args.batches)
    ]

    results: dict[str, dict[str, float]] = {}
    for backend in ("sqlite", "postgresql"):
        fresh, replay = [], []
        for _ in range(REPEATS):
            with tempfile.TemporaryDirectory() as directory:
                if backend == "sqlite":
                    url, name = f"sqlite:///{Path(directory) / 'bench.sqlite3'}", ""
                else:
                    url, name = postgres_database(args.postgres)
                try:
                    rates = asyncio.run(post_all(url, bodies))
                finally:
                    if name:
                        drop_database(args.postgres, name)
            fresh.append(rates[0])
            replay.append(rates[1])
        results[backend] = {
            "fresh_rows_per_s": round(statistics.median(fresh)),
            "replayed_rows_per_s": round(statistics.median(replay)),
        }
    print(
        json.dumps({"batches": args.batches, "batch_size": args.batch_size, **results})
    )


if __name__ == "__main__":
    main()
