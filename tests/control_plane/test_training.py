"""Tests for training: data loading, the leakage guard and the packaged version."""

from __future__ import annotations

from pathlib import Path

from edge_agent.scorer import OnnxScorer


def test_model_dir_loads_in_scorer(model_dir: Path) -> None:
    scorer = OnnxScorer(model_dir)
    assert scorer.version == 1
