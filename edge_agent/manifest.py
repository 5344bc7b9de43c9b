"""The model manifest: the JSON document that travels beside every ONNX artifact.

The control plane writes it when it accepts a version; the edge agent and the batch
scorer read it to learn the graph's inputs and outputs, the decision threshold and the
risk bands, and to verify that the artifact is the one the manifest describes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_FORMAT = "edgepm-model/1"
MANIFEST_FILE = "manifest.json"
ARTIFACT_FILE = "model.onnx"


class ManifestError(ValueError):
    """A manifest that is missing, malformed or does not match its artifact."""


@dataclass(frozen=True, slots=True)
class RiskBand:
    """A named probability band; a probability is in the highest band it reaches."""

    name: str
    min_probability: float


@dataclass(frozen=True, slots=True)
class ModelManifest:
    """The parsed manifest of one model version."""

    version: int
    sha256: str
    failure_output: str
    failure_type_output: str
    failure_type_classes: tuple[str, ...]
    decision_threshold: float
    risk_bands: tuple[RiskBand, ...]
    golden: tuple[dict[str, Any], ...]
    document: dict[str, Any]

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> ModelManifest:
        """Parse a manifest document.

        Raises:
            ManifestError: a required key is missing or has the wrong shape.
        """
        if document.get("format") != MANIFEST_FORMAT:
            raise ManifestError(
                f"manifest format is {document.get('format')!r}, expected "
                f"{MANIFEST_FORMAT!r}; retrain or convert the model with this release"
            )
        try:
            outputs = document["outputs"]
            bands = tuple(
                RiskBand(str(band["name"]), float(band["min_probability"]))
                for band in document["risk_bands"]
            )
            manifest = cls(
                version=int(document["version"]),
                sha256=str(document["artifact"]["sha256"]),
                failure_output=str(outputs["failure_probability"]["name"]),
                failure_type_output=str(outputs["failure_type_probability"]["name"]),
                failure_type_classes=tuple(
                    str(label)
                    for label in outputs["failure_type_probability"]["classes"]
                ),
                decision_threshold=float(document["decision_threshold"]),
                risk_bands=tuple(sorted(bands, key=lambda band: band.min_probability)),
                golden=tuple(document.get("golden", ())),
                document=document,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"manifest is malformed: {exc!r} is missing or invalid"
            ) from exc
        if not manifest.risk_bands or manifest.risk_bands[0].min_probability != 0.0:
            raise ManifestError("manifest risk_bands must start with a band at 0.0")
        return manifest

    @classmethod
    def from_directory(cls, directory: Path) -> ModelManifest:
        """Read ``manifest.json`` from a model version directory."""
        path = directory / MANIFEST_FILE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ManifestError(
                f"{path} not found; a model directory contains {MANIFEST_FILE} and "
                f"{ARTIFACT_FILE}"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_document(document)

    def risk_band(self, probability: float) -> str:
        """Return the name of the highest band whose lower bound is <= probability."""
        return str(self.risk_band_array(np.array([probability]))[0])

    def risk_band_array(self, probabilities: np.ndarray) -> np.ndarray:
        """Return the band name of each probability, as an object array.

        Bounds are compared in float32, as the decision rule compares the threshold,
        so a probability that ties with the threshold is in the top band and has the
        failure label.
        """
        bounds = np.array(
            [band.min_probability for band in self.risk_bands], dtype=np.float32
        )
        names = np.array([band.name for band in self.risk_bands], dtype=object)
        values = np.asarray(probabilities).astype(np.float32)
        index = np.searchsorted(bounds, values, side="right")
        return names[np.maximum(index - 1, 0)]


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_artifact(directory: Path, manifest: ModelManifest) -> Path:
    """Check that the artifact in a version directory has the manifest's sha256.

    Returns:
        The artifact's path.

    Raises:
        ManifestError: the artifact is missing or its digest differs.
    """
    artifact = directory / ARTIFACT_FILE
    if not artifact.is_file():
        raise ManifestError(f"{artifact} not found beside its manifest")
    actual = sha256_file(artifact)
    if actual != manifest.sha256:
        raise ManifestError(
            f"{artifact} has sha256 {actual} but manifest v{manifest.version} expects "
            f"{manifest.sha256}; the artifact does not belong to this manifest, "
            "download the version again"
        )
    return artifact
