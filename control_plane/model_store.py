"""The model store: one immutable directory per accepted model version.

Versions live in ``root/v<N>/`` with ``manifest.json``, ``model.onnx`` and the
documents the manifest lists (the model card). A version appears only by an atomic
rename of a fully written and verified directory, so a reader never sees a
half-written or mismatched set.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.manifest import (
    ARTIFACT_FILE,
    MANIFEST_FILE,
    ManifestError,
    ModelManifest,
    sha256_file,
)
from edge_agent.scorer import OnnxScorer

logger = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^v(\d+)$")
_STAGING_PREFIX = ".staging-"


class ModelStoreError(RuntimeError):
    """A version that cannot be published or opened."""


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A published version: what the storage layer records about it."""

    version: int
    directory: Path
    manifest: ModelManifest

    @property
    def artifact_path(self) -> Path:
        return self.directory / ARTIFACT_FILE

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_FILE

    @property
    def document(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, e.g. for the database or the API."""
        return self.manifest.document


class ModelStore:
    """Version directories under one root.

    Args:
        root: the store's directory; created if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[int]:
        """Return the published version numbers, ascending."""
        numbers = []
        for entry in self.root.iterdir():
            match = _VERSION_DIR.match(entry.name)
            if match and entry.is_dir():
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def latest_version(self) -> int | None:
        """Return the highest published version, or None in an empty store."""
        versions = self.versions()
        return versions[-1] if versions else None

    def next_version(self) -> int:
        """Return the number the next published version should carry."""
        return (self.latest_version() or 0) + 1

    def version_dir(self, version: int) -> Path:
        """Return the directory a version is (or would be) published in."""
        return self.root / f"v{version}"

    def get(self, version: int) -> StoredVersion:
        """Read a published version's manifest.

        Raises:
            ModelStoreError: the version is not in the store or its manifest is invalid.
        """
        directory = self.version_dir(version)
        if not directory.is_dir():
            raise ModelStoreError(
                f"model v{version} not found in {self.root} (versions: "
                f"{self.versions() or 'none'}); train one or pick a listed version"
            )
        try:
            manifest = ModelManifest.from_directory(directory)
        except ManifestError as exc:
            raise ModelStoreError(f"model v{version} in {self.root}: {exc}") from exc
        return StoredVersion(version, directory, manifest)

    def open(self, version: int | None = None, *, threads: int = 1) -> OnnxScorer:
        """Open a version (default: the latest) for scoring; the scorer verifies it.

        Raises:
            ModelStoreError: the store is empty or the version is missing.
            ManifestError: the artifact does not match its manifest.
        """
        if version is None:
            version = self.latest_version()
            if version is None:
                raise ModelStoreError(
                    f"model store {self.root} is empty; train a model first"
                )
        return OnnxScorer(self.get(version).directory, threads=threads)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """Yield an empty directory inside the store to write a candidate into.

        The directory is on the same file system as the versions, so ``publish`` can
        rename it into place. Whatever is left of it is removed on exit.
        """
        directory = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.root))
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def publish(self, candidate: Path) -> StoredVersion:
        """Verify a candidate directory and publish it as its manifest's version.

        The candidate is copied into a staging directory (unless it is one already),
        loaded there with ``OnnxScorer`` so that the bytes about to be published pass
        the sha256 and golden-vector checks, synced to disk and renamed to ``v<N>``.
        Published versions are never replaced.

        Raises:
            ManifestError: the candidate's manifest or artifact is invalid.
            ModelStoreError: the version already exists.
        """
        if self._is_staging(candidate):
            return self._verify_and_rename(candidate)
        with self.staging() as staging:
            for name in (MANIFEST_FILE, ARTIFACT_FILE):
                source = candidate / name
                if not source.is_file():
                    raise ManifestError(
                        f"{source} not found; a candidate directory needs "
                        f"{MANIFEST_FILE} and {ARTIFACT_FILE}"
                    )
                shutil.copyfile(source, staging / name)
            for name in _document_files(ModelManifest.from_directory(staging)):
                source = candidate / name
                if not source.is_file():
                    raise ManifestError(
                        f"{source} not found; the manifest lists it in documents"
                    )
                shutil.copyfile(source, staging / name)
            return self._verify_and_rename(staging)

    def _is_staging(self, directory: Path) -> bool:
        return (
            directory.parent.resolve() == self.root.resolve()
            and directory.name.startswith(_STAGING_PREFIX)
        )

    def _verify_and_rename(self, staging: Path) -> StoredVersion:
        manifest = OnnxScorer(staging).manifest
        _verify_documents(staging, manifest)
        target = self.version_dir(manifest.version)
        if target.exists():
            raise ModelStoreError(
                f"model v{manifest.version} already exists in {self.root}; versions "
                f"are immutable, publish as v{self.next_version()} instead"
            )
        self._rename_into_place(staging, target, manifest.version)
        logger.info("model v%d published in %s", manifest.version, target)
        return StoredVersion(manifest.version, target, manifest)

    def _rename_into_place(self, staging: Path, target: Path, version: int) -> None:
        for path in staging.iterdir():
            if path.is_file():
                _fsync(path)
        _fsync(staging)
        try:
            # rename() of a directory is atomic; it fails if another publisher has
            # created the version meanwhile (the target is then non-empty).
            os.rename(staging, target)
        except OSError as exc:
            raise ModelStoreError(
                f"cannot publish model v{version} as {target}: {exc}; "
                f"publish as v{self.next_version()} instead"
            ) from exc
        _fsync(self.root)


def _document_files(manifest: ModelManifest) -> list[str]:
    """Return the file names in the manifest's ``documents`` (e.g. the model card)."""
    names = []
    for entry in manifest.document.get("documents", []):
        name = str(entry["file"])
        # A name with a directory part could write outside the version directory.
        if Path(name).name != name or name in (MANIFEST_FILE, ARTIFACT_FILE):
            raise ManifestError(
                f"manifest v{manifest.version} lists document {name!r}; expected a "
                "plain file name other than the manifest and the artifact"
            )
        names.append(name)
    return names


def _verify_documents(directory: Path, manifest: ModelManifest) -> None:
    for entry, name in zip(
        manifest.document.get("documents", []), _document_files(manifest), strict=True
    ):
        path = directory / name
        if not path.is_file():
            raise ManifestError(f"{path} not found; the manifest lists it in documents")
        actual = sha256_file(path)
        if actual != entry.get("sha256"):
            raise ManifestError(
                f"{path} has sha256 {actual} but manifest v{manifest.version} expects "
                f"{entry.get('sha256')}; the document does not belong to this version"
            )


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
