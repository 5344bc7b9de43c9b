"""The model registry: published versions and rejected candidates in the database.

The model store contains the files, and this module records each version in
``model_versions`` so the API can list, serve and deploy it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from control_plane.model_store import ModelStore, StoredVersion
from control_plane.storage import Storage, utc_now
from control_plane.storage.records import ModelVersion

logger = logging.getLogger(__name__)


def register_version(storage: Storage, stored: StoredVersion) -> ModelVersion:
    """Record a version published in the model store as accepted.

    Registering the same version twice is a no-op.

    Raises:
        InvalidRequestError: the version number is recorded for another artifact or
            as a rejected candidate.
    """
    document = stored.document
    model = ModelVersion(
        version=stored.version,
        created_at=_created_at(document),
        status="accepted",
        sha256=stored.manifest.sha256,
        manifest=document,
        metrics=dict(document.get("metrics", {})),
        path=str(stored.directory.resolve()),
    )
    if storage.record_model_version(model):
        logger.info("model v%d registered from %s", model.version, model.path)
    return model


def record_rejection(
    storage: Storage,
    version: int,
    reason: str,
    *,
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """Record a candidate that failed a check, so its number is not reused.

    Args:
        storage: the database.
        version: the number the candidate would have been published as.
        reason: why it was rejected, e.g. the parity error.
        metrics: whatever figures the candidate reached, if any.
    """
    model = ModelVersion(
        version=version,
        created_at=utc_now(),
        status="rejected",
        sha256=None,
        manifest=None,
        metrics=metrics or {},
        path=None,
        rejection_reason=reason,
    )
    storage.record_model_version(model)
    logger.warning("model v%d rejected: %s", version, reason)
    return model


def register_store(storage: Storage, store: ModelStore) -> list[int]:
    """Record every published version of the store that the database lacks.

    Returns:
        The versions that were newly recorded.
    """
    recorded = {model.version for model in storage.list_model_versions()}
    added = []
    for version in store.versions():
        if version not in recorded:
            register_version(storage, store.get(version))
            added.append(version)
    return added


def next_version(storage: Storage, store: ModelStore) -> int:
    """Return the next free version number in both the store and the database.

    Rejected candidates have a number in the database but no directory, so the
    store alone would hand their number out again.
    """
    recorded = [model.version for model in storage.list_model_versions()]
    return max([store.next_version(), *(number + 1 for number in recorded)])


def has_accepted_version(storage: Storage) -> bool:
    """Tell whether any version is recorded as accepted."""
    return any(model.status == "accepted" for model in storage.list_model_versions())


def _created_at(document: dict[str, Any]) -> dt.datetime:
    value = document.get("created_at")
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.utcoffset() is not None:
            return parsed.astimezone(dt.UTC)
    return utc_now()
