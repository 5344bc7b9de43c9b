"""Benchmark: does calibrating the failure head help? Raw, sigmoid and isotonic.

Run: ``.venv/bin/python bench/calibration.py [--folds 5]``. Each method is scored on
the same stratified outer folds. The calibrators are fitted on inner out-of-fold
predictions of the outer training part only (``CalibratedClassifierCV`` with
``ensemble=False``). Prints the Brier score, PR-AUC and the reliability bins.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold

from control_plane.data import load_training_data
from control_plane.training.metrics import failure_metrics, reliability_curve
from control_plane.training.model import (
    FULL_CANDIDATES,
    SEED,
    build_pipeline,
    openmp_threads,
)

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "ai4i2020.csv"
# The candidate the full plan chose in every fold of the 5 x 3 cross-validation.
PARAMS = FULL_CANDIDATES[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="AI4I CSV")
    parser.add_argument("--folds", type=int, default=5, help="outer folds")
    args = parser.parse_args()

    dataset = load_training_data(args.data)
    x, y = dataset.features, dataset.target
    outer = StratifiedKFold(args.folds, shuffle=True, random_state=SEED)
    splits = list(outer.split(x, dataset.failure_type))
    for method in ("none", "sigmoid", "isotonic"):
        started = time.perf_counter()
        probability = np.zeros(len(y))
        with openmp_threads(1):
            for train, test in splits:
                model = build_pipeline(PARAMS, seed=SEED)
                if method != "none":
                    model = CalibratedClassifierCV(
                        model, method=method, cv=5, ensemble=False
                    )
                model.fit(x.iloc[train], y[train])
                probability[test] = model.predict_proba(x.iloc[test])[:, 1]
        figures = failure_metrics(y, probability, 0.5)
        print(
            f"{method:9} Brier {figures['brier']:.5f}  PR-AUC {figures['pr_auc']:.3f}"
            f"  recall at precision 0.9 {figures['recall_at_precision_90']:.3f}"
            f"  ({time.perf_counter() - started:.0f} s)"
        )
        for cell in reliability_curve(y, probability):
            if cell["rows"]:
                print(
                    f"    P {cell['low']:.2f}-{cell['high']:.2f}: {cell['rows']:5} "
                    f"rows, mean P {cell['mean_probability']:.3f}, failure rate "
                    f"{cell['failure_rate']:.3f}"
                )


if __name__ == "__main__":
    main()
