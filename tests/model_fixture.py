"""Session fixtures for a trained model: quick-trained once on the AI4I file.

Registered from tests/conftest.py, so every test directory can ask for ``model_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sklearn.pipeline import Pipeline

from control_plane.data import Dataset, load_training_data
from control_plane.model_store import ModelStore
from control_plane.training.convert import convert_models
from control_plane.training.labels import LabelPolicy, type_labels
from control_plane.training.model import (
    TrainedModels,
    build_pipeline,
    openmp_threads,
    train_models,
)
from control_plane.training.pipeline import package_models

AI4I_CSV = Path(__file__).resolve().parent.parent / "data" / "ai4i2020.csv"


@dataclass(frozen=True)
class OtherModel:
    """A second, deliberately weak model: a valid graph that is not ``model_dir``'s."""

    onnx: bytes
    failure: Pipeline
    failure_type: Pipeline


@pytest.fixture(scope="session")
def ai4i_dataset() -> Dataset:
    """The shipped AI4I file, loaded and validated."""
    return load_training_data(AI4I_CSV)


@pytest.fixture(scope="session")
def trained_models(ai4i_dataset: Dataset) -> TrainedModels:
    """Both heads fitted with ``quick=True``, kept for tests that need scikit-learn."""
    return train_models(ai4i_dataset, quick=True)


@pytest.fixture(scope="session")
def model_store_root(
    tmp_path_factory: pytest.TempPathFactory,
    ai4i_dataset: Dataset,
    trained_models: TrainedModels,
) -> Path:
    """A model store holding version 1 of the quick model. Treat it as read-only."""
    root = tmp_path_factory.mktemp("model_store")
    package_models(trained_models, ai4i_dataset, ModelStore(root), version=1)
    return root


@pytest.fixture(scope="session")
def model_dir(model_store_root: Path) -> Path:
    """A version directory (manifest.json and model.onnx) loadable by OnnxScorer.

    Shared by the whole session: copy it before changing anything in it.
    """
    return model_store_root / "v1"


@pytest.fixture(scope="session")
def other_model(ai4i_dataset: Dataset) -> OtherModel:
    """Both heads with five trees each, converted like a real version.

    The type head trains on the same labels as ``model_dir``'s, so both graphs have
    the same outputs and differ only in their values.
    """
    params = {"max_iter": 5, "max_leaf_nodes": 7, "class_weight": None}
    x = ai4i_dataset.features
    labels = type_labels(ai4i_dataset, LabelPolicy())
    with openmp_threads(1):
        failure = build_pipeline(params, seed=1).fit(x, ai4i_dataset.target)
        failure_type = build_pipeline(params, seed=1).fit(
            x[labels.mask], labels.labels[labels.mask]
        )
    onnx = convert_models(failure, failure_type, version=1)
    return OtherModel(onnx, failure, failure_type)
