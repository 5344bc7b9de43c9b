"""Loaded model versions for the scoring endpoints, one OnnxScorer per version."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from concurrent.futures import Executor
from pathlib import Path

from control_plane.storage import InvalidRequestError, Storage
from edge_agent.scorer import OnnxScorer

logger = logging.getLogger(__name__)

# Versions kept loaded at once; a version falls out when it is the least recently
# used. A loaded version keeps its ONNX session, a few MB for boosted trees.
DEFAULT_CAPACITY = 4


class ScorerCache:
    """Load each accepted version once and keep the recently used ones.

    Args:
        storage: where the versions' artifact paths are recorded.
        executor: runs the blocking loads (sha256, ONNX session, golden vectors).
        capacity: the maximum number of versions kept loaded.
    """

    def __init__(
        self, *, storage: Storage, executor: Executor, capacity: int = DEFAULT_CAPACITY
    ) -> None:
        self._storage = storage
        self._executor = executor
        self._capacity = capacity
        self._scorers: OrderedDict[int, OnnxScorer] = OrderedDict()
        self._loading: dict[int, asyncio.Lock] = {}

    async def get(self, version: int) -> OnnxScorer:
        """Return the scorer of a version, loading it on first use.

        Raises:
            NotFoundError: the version is not recorded.
            InvalidRequestError: the version was rejected.
            ManifestError: the artifact is missing or does not match its manifest.
        """
        scorer = self._scorers.get(version)
        if scorer is not None:
            self._scorers.move_to_end(version)
            return scorer
        # One load per version even when many requests ask for it at once.
        lock = self._loading.setdefault(version, asyncio.Lock())
        async with lock:
            scorer = self._scorers.get(version)
            if scorer is None:
                loop = asyncio.get_running_loop()
                scorer = await loop.run_in_executor(self._executor, self._load, version)
                self._scorers[version] = scorer
                while len(self._scorers) > self._capacity:
                    evicted, _ = self._scorers.popitem(last=False)
                    logger.info("model v%d unloaded from the scoring cache", evicted)
        self._loading.pop(version, None)
        return scorer

    def _load(self, version: int) -> OnnxScorer:
        model = self._storage.get_model_version(version)
        if model.status != "accepted" or model.path is None:
            raise InvalidRequestError(
                f"model v{version} is {model.status}; score with an accepted version"
            )
        return OnnxScorer(Path(model.path))
