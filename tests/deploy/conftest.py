"""Fixtures of the deployment tests: a kubectl and the rendered kustomizations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    KubectlNotFoundError,
    RenderError,
    Rendering,
    find_kubectl,
    prepare_copy,
    render,
)


@pytest.fixture(scope="session")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubectl binary, which renders kustomizations with its built-in kustomize."""
    try:
        return find_kubectl(tmp_path_factory.mktemp("kubectl"))
    except KubectlNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def rendered(
    kubectl: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Rendering]:
    """A function that returns the rendering of a kustomization, rendered once."""
    copy_root = prepare_copy(tmp_path_factory.mktemp("k3s-copy"))
    results: dict[str, Rendering | RenderError] = {}

    def get(name: str) -> Rendering:
        if name not in results:
            try:
                results[name] = render(kubectl, copy_root, name)
            except RenderError as exc:
                results[name] = exc
        result = results[name]
        if isinstance(result, RenderError):
            pytest.fail(str(result), pytrace=False)
        return result

    return get
