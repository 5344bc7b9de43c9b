"""The local model directory and the model download from the control plane.

The directory contains one subdirectory per version,
``v<N>/{manifest.json,model.onnx}``, and a file ``active`` that names the version to
load. A download is verified (sha256 and golden vectors, through OnnxScorer) in a
temporary directory and only then renamed into place, so a bad download never
replaces a good model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from edge_agent.errors import ModelUnavailableError
from edge_agent.manifest import (
    ARTIFACT_FILE,
    MANIFEST_FILE,
    ManifestError,
    ModelManifest,
)
from edge_agent.retry import describe_error
from edge_agent.scorer import OnnxScorer

logger = logging.getLogger(__name__)

ACTIVE_FILE = "active"


class ModelDirectory:
    """The agent's local model versions.

    Args:
        path: the model directory (EDGEPM_MODEL_DIR); created when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def version_path(self, version: int) -> Path:
        return self.path / f"v{version}"

    def active_version(self) -> int | None:
        """Return the version named by the ``active`` file, None when there is none.

        Raises:
            ModelUnavailableError: the file names no version.
        """
        try:
            text = (self.path / ACTIVE_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        digits = text.removeprefix("v")
        if not digits.isdigit():
            raise ModelUnavailableError(
                f"{self.path / ACTIVE_FILE} contains {text!r}, expected a version like "
                "v3; write the name of a version directory into it or delete it"
            )
        return int(digits)

    def load_active(self) -> OnnxScorer | None:
        """Load the active version; None when no version is active or it is invalid.

        Blocking: hashing the artifact and creating the session take milliseconds.
        """
        try:
            version = self.active_version()
        except ModelUnavailableError as exc:
            logger.error("%s", exc)
            return None
        if version is None:
            return None
        try:
            return OnnxScorer(self.version_path(version))
        except ManifestError as exc:
            logger.error(
                "active model v%d in %s is invalid and not loaded: %s",
                version,
                self.path,
                exc,
            )
            return None

    def install(self, manifest_json: bytes, artifact: bytes) -> OnnxScorer:
        """Verify a downloaded version, move it into place, make it active and load it.

        Blocking: writes files and runs the golden vectors.

        Raises:
            ManifestError: the manifest and the artifact do not verify; nothing in the
                model directory changed.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=self.path))
        try:
            (staging / MANIFEST_FILE).write_bytes(manifest_json)
            (staging / ARTIFACT_FILE).write_bytes(artifact)
            version = OnnxScorer(staging).version
            _fsync_tree(staging)
            target = self.version_path(version)
            if target.exists():
                self._set_aside_if_invalid(target)
            if not target.exists():
                staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        self.activate(version)
        return OnnxScorer(target)

    def install_directory(self, source: Path) -> OnnxScorer:
        """Install a version directory copied from the local file system."""
        return self.install(
            (source / MANIFEST_FILE).read_bytes(), (source / ARTIFACT_FILE).read_bytes()
        )

    def _set_aside_if_invalid(self, directory: Path) -> None:
        try:
            OnnxScorer(directory)
        except ManifestError as exc:
            # Keep the broken copy for inspection instead of deleting it.
            aside = self.path / f".{directory.name}.invalid-{uuid.uuid4().hex[:8]}"
            logger.warning("moving invalid %s to %s: %s", directory, aside, exc)
            directory.rename(aside)

    def activate(self, version: int) -> None:
        """Point ``active`` at a version atomically, so a crash leaves old or new."""
        temporary = self.path / f".{ACTIVE_FILE}.{uuid.uuid4().hex[:8]}"
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(f"v{version}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path / ACTIVE_FILE)
        logger.info("model v%d active in %s", version, self.path)


async def fetch_current_model(
    *,
    session: aiohttp.ClientSession,
    control_plane_url: str,
    headers: dict[str, str],
    site: str | None = None,
    timeout_s: float = 30.0,
) -> tuple[bytes, bytes]:
    """Download the current version's manifest and artifact from the control plane.

    Args:
        session: the HTTP client session.
        control_plane_url: base URL without a trailing slash.
        headers: request headers (the bearer token).
        site: when given, requests the version deployed to this site.
        timeout_s: seconds allowed for each of the two requests.

    Returns:
        The manifest JSON and the ONNX bytes, not yet verified.

    Raises:
        ModelUnavailableError: the control plane is unreachable, returned an error or
            served a manifest that does not parse.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    manifest_url = f"{control_plane_url}/api/v1/models/current"
    if site is not None:
        manifest_url += f"?site={site}"
    manifest_json = await _get(session, manifest_url, headers, timeout)
    try:
        document: Any = json.loads(manifest_json)
        version = ModelManifest.from_document(document).version
    except (json.JSONDecodeError, ManifestError) as exc:
        raise ModelUnavailableError(
            f"GET {manifest_url} returned no valid manifest: {exc}"
        ) from exc
    artifact_url = f"{control_plane_url}/api/v1/models/{version}/artifact"
    artifact = await _get(session, artifact_url, headers, timeout)
    logger.info(
        "downloaded model v%d (%d bytes) from %s",
        version,
        len(artifact),
        control_plane_url,
    )
    return manifest_json, artifact


async def _get(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
) -> bytes:
    try:
        async with session.get(url, headers=headers, timeout=timeout) as response:
            body = await response.read()
            if response.status != 200:
                raise ModelUnavailableError(
                    f"GET {url} returned {response.status}: "
                    f"{body[:200].decode('utf-8', 'replace')}"
                )
            return body
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ModelUnavailableError(
            f"GET {url} failed: {describe_error(exc)}; check EDGEPM_CONTROL_PLANE_URL"
        ) from exc


def _fsync_tree(directory: Path) -> None:
    for child in directory.iterdir():
        with child.open("rb") as handle:
            os.fsync(handle.fileno())
