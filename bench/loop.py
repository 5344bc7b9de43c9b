"""Figures of the whole loop, measured side by side in one run.

Run: ``.venv/bin/python bench/loop.py [--count 20000] [--runs 3]``. One run trains
the full model on the shipped AI4I file (training, conversion and parity). It then
alternates the broker's raw QoS 1 rate and the agent's sustained rate on one private
Mosquitto, so that both see the same machine load, and times batch scoring of the
10,000-row file. It prints each figure, the median of the runs and the ratio of the
agent's rate to the broker's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from control_plane.batch import score_csv
from control_plane.training.pipeline import train_and_package
from edge_agent.scorer import OnnxScorer

from agent_throughput import measure_agent_rate
from broker import private_mosquitto
from mqtt_raw import measure_raw_rate

DATA = Path(__file__).resolve().parent.parent / "data" / "ai4i2020.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="readings per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-loop-") as directory:
        work = Path(directory)
        started = time.perf_counter()
        model_dir = train_and_package(DATA, work / "models", version=1)
        training_s = time.perf_counter() - started
        metrics = json.loads((model_dir / "manifest.json").read_text())["metrics"]
        print(f"training + conversion + parity: {training_s:.1f} s")
        print(f"test-set failure F1: {metrics['failure']['f1']:.3f}")
        print(
            f"test-set failure-type macro-F1: {metrics['failure_type']['macro_f1']:.3f}"
        )

        raw_rates: list[float] = []
        agent_rates: list[float] = []
        with private_mosquitto() as port:
            for run in range(1, args.runs + 1):
                raw_rates.append(measure_raw_rate("127.0.0.1", port, args.count))
                agent_rates.append(
                    measure_agent_rate("127.0.0.1", port, model_dir, args.count)
                )
                print(
                    f"run {run}: broker raw {raw_rates[-1]:,.0f} messages/s, "
                    f"agent {agent_rates[-1]:,.0f} readings/s"
                )

        scorer = OnnxScorer(model_dir)
        batch_rates = []
        for _ in range(args.runs):
            summary = score_csv(DATA, work / "scored.csv", scorer)
            batch_rates.append(summary.rows / summary.seconds)

    raw = statistics.median(raw_rates)
    agent = statistics.median(agent_rates)
    print(f"\nmedians of {args.runs} runs, {args.count} readings each:")
    print(f"  broker raw QoS 1 rate     {raw:,.0f} messages/s")
    print(
        f"  agent sustained rate      {agent:,.0f} readings/s "
        f"({agent / raw:.2f} of raw)"
    )
    print(f"  batch scoring, 10k file   {statistics.median(batch_rates):,.0f} rows/s")


if __name__ == "__main__":
    main()
